"""The station's retained status on ``P/D/status`` (DESIGN §5): built and read in one place.

The station builds a :class:`StationStatus` and publishes :meth:`StationStatus.payload`;
the relay reads it with :meth:`StationStatus.parse` (or :meth:`StationStatus.from_dict`
for an object it has decoded already), which keeps only the keys DESIGN §5 defines, each
checked for the shape it must have (``protocol.fields``). A station bug that put free
text into its status could otherwise carry PHI into the relay's files; such values are
dropped, never written. The builder cannot say a key the reader would drop: the
dataclass has exactly the reader's keys.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from clinicam.protocol.fields import (
    FW,
    WORD,
    Shape,
    is_amount,
    is_count,
    is_flag,
    is_stamp,
    keep,
    matches,
    utc_stamp,
)
from clinicam.protocol.ids import HEX32

__all__ = ["STATUS_FIELDS", "WILL", "StationStatus", "utc_stamp"]  # utc_stamp: its old home


def _is_renewal(v: object) -> bool:
    """The station's certificate renewal state (issue 17): ``{"state", "at", "reason"}``."""
    if not isinstance(v, dict) or set(v) != {"state", "at", "reason"}:
        return False
    return (matches(WORD)(v["state"]) and (v["at"] is None or is_stamp(v["at"]))
            and (v["reason"] is None or matches(WORD)(v["reason"])))


# key -> the shape its value must have
STATUS_FIELDS: dict[str, Shape] = {
    "state": matches(WORD),
    "pending": is_count,
    "pending_bytes": is_count,
    "boot": matches(HEX32),
    "fw": matches(FW),
    "uptime_s": is_amount,
    "cert_not_after": is_stamp,
    "clock_synced": is_flag,
    "renewal": _is_renewal,
    "relay": lambda v: v in ("online", "offline"),  # whether the station sees a relay serving it
}

# The MQTT will: the broker publishes it (retained) when the station goes away unannounced.
WILL = json.dumps({"state": "offline"}).encode()


@dataclass(frozen=True)
class StationStatus:
    """What a station says about itself; ``None`` is "not said" (left out of the payload).

    A station sets every field but ``renewal`` (only a station that renews over MQTT)
    and ``relay`` (``online``/``offline``: whether it sees a relay serving it; unset
    until it knows). A status the relay parses has only its well-formed fields set; a
    will has only ``state``. ``uptime_s`` is whole seconds when a station sends it.
    """

    state: str | None = None
    pending: int | None = None
    pending_bytes: int | None = None
    boot: str | None = None
    fw: str | None = None
    uptime_s: float | None = None
    cert_not_after: str | None = None  # RFC 3339 (``fields.utc_stamp``)
    clock_synced: bool | None = None
    renewal: Mapping[str, Any] | None = None  # {"state", "at", "reason"}
    relay: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """The status as a JSON object: the fields that are set."""
        out = {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None}
        if self.renewal is not None:
            out["renewal"] = dict(self.renewal)
        return out

    def payload(self) -> bytes:
        """The retained message a station publishes (sorted keys, no spaces)."""
        return json.dumps(self.as_dict(), sort_keys=True, separators=(",", ":")).encode()

    @classmethod
    def from_dict(cls, obj: object) -> StationStatus:
        """What the relay keeps of a decoded status: the DESIGN §5 keys, well-formed."""
        return cls(**keep(obj, STATUS_FIELDS))  # type: ignore[arg-type]

    @classmethod
    def parse(cls, payload: bytes | bytearray) -> StationStatus | None:
        """The well-formed part of a status message; None if it is not a JSON object."""
        try:
            obj = json.loads(payload)
        except (ValueError, UnicodeDecodeError, RecursionError):
            return None
        return cls.from_dict(obj) if isinstance(obj, dict) else None

