"""The station's retained status and audit events (DESIGN §5): built and read in one place.

The station builds them with :func:`status_payload` and :func:`event_payload`; the relay
reads them with :func:`read_status` and :func:`read_event`, which keep only the keys
DESIGN §5 defines, each checked for the shape it must have. A station bug that put free
text into a status or event could otherwise carry PHI into the relay's files; such
values are dropped, never written. The builder refuses a key the reader would drop.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from clinicam.protocol.event_acks import EVENT_ID
from clinicam.protocol.ids import HEX32

_WORD = re.compile(r"[a-z0-9-]{1,32}")
_CMD_ID = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_STAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,6})?(Z|[+-]\d\d:\d\d)")
_FW = re.compile(r"[A-Za-z0-9_.+-]{1,40}")
_SHA256 = re.compile(r"[0-9a-f]{64}")


def _is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def _is_number(v: object) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and v >= 0


def _match(pattern: re.Pattern[str]) -> Callable[[object], bool]:
    return lambda v: isinstance(v, str) and pattern.fullmatch(v) is not None


def _is_renewal(v: object) -> bool:
    """The station's certificate renewal state (issue 17): ``{"state", "at", "reason"}``."""
    if not isinstance(v, dict) or set(v) != {"state", "at", "reason"}:
        return False
    return (_match(_WORD)(v["state"]) and (v["at"] is None or _match(_STAMP)(v["at"]))
            and (v["reason"] is None or _match(_WORD)(v["reason"])))


def _is_trust(v: object) -> bool:
    """Which root the station is on (issue 17, CA rotation): ``{"number", "root"}`` —
    the trust update number it holds (or null) and the SHA-256 of the root its
    certificate chains to (64 hex, or null)."""
    if not isinstance(v, dict) or set(v) != {"number", "root"}:
        return False
    return (v["number"] is None or _is_int(v["number"])) and (v["root"] is None or _match(_SHA256)(v["root"]))


# key -> the shape its value must have
STATUS_FIELDS: Mapping[str, Callable[[object], bool]] = {
    "state": _match(_WORD),
    "pending": _is_int,
    "pending_bytes": _is_int,
    "boot": _match(HEX32),
    "fw": _match(_FW),
    "uptime_s": _is_number,
    "cert_not_after": _match(_STAMP),
    "clock_synced": lambda v: isinstance(v, bool),
    "renewal": lambda v: _is_renewal(v),
    "relay": lambda v: v in ("online", "offline"),  # whether the station sees a relay serving it
    "trust": lambda v: _is_trust(v),
}
EVENT_FIELDS: Mapping[str, Callable[[object], bool]] = {
    "event": _match(_WORD),
    "at": _match(_STAMP),
    "capture_id": _match(HEX32),
    "capture_ids": lambda v: isinstance(v, list) and all(_match(HEX32)(x) for x in v),
    "session": _match(HEX32),
    "reason": _match(_WORD),
    "count": _is_int,
    "cmd_id": _match(_CMD_ID),
    "fw": _match(_FW),  # updated / update-failed: the version concerned
    "event_id": _match(EVENT_ID),  # the relay acknowledges it (protocol.event_acks)
}
STATUS_KEYS = tuple(STATUS_FIELDS)
# the keys an event may carry besides "event" and "at"
EVENT_KEYS = frozenset(EVENT_FIELDS) - {"event", "at"}


def utc_stamp(at: float) -> str:
    """RFC 3339 UTC with milliseconds and ``Z``, the format of every clinicam time."""
    dt = datetime.fromtimestamp(at, UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


def status_payload(*, state: str, pending: int, pending_bytes: int, boot: str, fw: str,
                   uptime_s: float, cert_not_after: str | None, clock_synced: bool,
                   renewal: Mapping[str, Any] | None = None, relay: str | None = None,
                   trust: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The retained ``P/D/status`` object (the will is ``{"state": "offline"}``).

    ``renewal`` (a station that renews its certificate over MQTT) is its state;
    ``relay`` is ``online`` or ``offline``: whether the station sees a relay serving it
    (relay presence), absent until the station knows. ``trust`` says which root the
    station is on (CA rotation).
    """
    body: dict[str, Any] = {
        "state": state,
        "pending": pending,
        "pending_bytes": pending_bytes,
        "boot": boot,
        "fw": fw,
        "uptime_s": int(uptime_s),
        "cert_not_after": cert_not_after,
        "clock_synced": clock_synced,
    }
    if renewal is not None:
        body["renewal"] = dict(renewal)
    if relay is not None:
        body["relay"] = relay
    if trust is not None:
        body["trust"] = dict(trust)
    return body


def event_payload(event: str, at: float, **fields: Any) -> dict[str, Any]:
    """An audit event for ``P/D/event``; refuses keys DESIGN §5 does not define."""
    unknown = set(fields) - EVENT_KEYS
    if unknown:
        raise ValueError(f"event keys must be among {sorted(EVENT_KEYS)}, got {sorted(unknown)}")
    return {"event": event, "at": utc_stamp(at), **{k: v for k, v in fields.items() if v is not None}}


def _allowed(obj: Mapping[str, Any], fields: Mapping[str, Callable[[object], bool]]) -> dict[str, Any]:
    return {k: v for k, v in obj.items() if k in fields and fields[k](v)}


def read_status(obj: Mapping[str, Any]) -> dict[str, Any]:
    """What the relay keeps of a station's status: the DESIGN §5 keys, well-formed."""
    return _allowed(obj, STATUS_FIELDS)


def read_event(obj: Mapping[str, Any]) -> dict[str, Any]:
    """What the relay keeps of a station's event: the DESIGN §5 keys, well-formed."""
    return _allowed(obj, EVENT_FIELDS)
