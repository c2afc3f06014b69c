"""The station's retained status on ``P/D/status`` (DESIGN §5): built and read in one place.

The station builds a :class:`StationStatus` and publishes ``payload()``; the relay reads
it with ``StationStatus.parse`` (or ``from_dict`` for an object it has decoded already),
which keeps only the keys DESIGN §5 defines, each checked for the shape it must have
(``protocol.fields.ShapedMessage``). A station bug that put free
text into its status could otherwise carry PHI into the relay's files; such values are
dropped, never written. The builder cannot say a key the reader would drop: the
dataclass has exactly the reader's keys.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from clinicam.protocol.fields import (
    FW,
    WORD,
    Shape,
    ShapedMessage,
    is_amount,
    is_count,
    is_flag,
    is_stamp,
    matches,
    shaped,
    utc_stamp,
)
from clinicam.protocol.ids import HEX32, is_hex

__all__ = ["STATUS_FIELDS", "WILL", "StationStatus", "utc_stamp"]  # utc_stamp: its old home


_SHA256 = is_hex(64)


def _is_renewal(v: object) -> bool:
    """The station's certificate renewal state (issue 17): ``{"state", "at", "reason"}``."""
    if not isinstance(v, dict) or set(v) != {"state", "at", "reason"}:
        return False
    return (matches(WORD)(v["state"]) and (v["at"] is None or is_stamp(v["at"]))
            and (v["reason"] is None or matches(WORD)(v["reason"])))


def _is_trust(v: object) -> bool:
    """Which root the station is on (issue 17, CA rotation): ``{"number", "root"}`` —
    the trust update number it holds (or null) and the SHA-256 of the root its
    certificate chains to (64 hex, or null)."""
    if not isinstance(v, dict) or set(v) != {"number", "root"}:
        return False
    return (v["number"] is None or is_count(v["number"])) and (v["root"] is None or _SHA256(v["root"]))


# The MQTT will: the broker publishes it (retained) when the station goes away unannounced.
WILL = json.dumps({"state": "offline"}).encode()


@dataclass(frozen=True)
class StationStatus(ShapedMessage):
    """What a station says about itself; ``None`` is "not said" (left out of the payload).

    A station sets every field but ``renewal`` (only a station that renews over MQTT),
    ``relay`` (``online``/``offline``: whether it sees a relay serving it; unset until
    it knows) and ``trust`` (which root it is on: a station that follows CA rotations).
    A status the relay parses has only its well-formed fields set; a will has only
    ``state``. ``uptime_s`` is whole seconds when a station sends it.
    """

    state: str | None = shaped(matches(WORD))
    pending: int | None = shaped(is_count)
    pending_bytes: int | None = shaped(is_count)
    boot: str | None = shaped(matches(HEX32))
    fw: str | None = shaped(matches(FW))
    uptime_s: float | None = shaped(is_amount)
    cert_not_after: str | None = shaped(is_stamp)  # RFC 3339 (``fields.utc_stamp``)
    clock_synced: bool | None = shaped(is_flag)
    renewal: Mapping[str, Any] | None = shaped(_is_renewal)  # {"state", "at", "reason"}
    relay: str | None = shaped(lambda v: v in ("online", "offline"))
    trust: Mapping[str, Any] | None = shaped(_is_trust)  # {"number", "root"}: CA rotation


# key -> the shape its value must have
STATUS_FIELDS: dict[str, Shape] = StationStatus.shapes()
