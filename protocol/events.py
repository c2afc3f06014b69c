"""The station's audit events on ``P/D/event`` (DESIGN §5): built and read in one place.

The station builds an :class:`AuditEvent` (``payload()``, or ``as_dict()`` for the
outbox that keeps it until the relay acknowledges it, ``protocol.event_acks``); the
relay reads it with :meth:`AuditEvent.parse` or :meth:`AuditEvent.from_dict`, which keep
only the keys DESIGN §5 defines, each checked for the shape it must have
(``protocol.fields``): ids, counts, reason codes and stamps, never free text, so an
event cannot carry PHI into the relay's audit log. The builder cannot say a key the
reader would drop: the dataclass has exactly the reader's keys (an unknown keyword is a
``TypeError``). A signed ``void`` is this event's dictionary plus ``sig``
(``protocol.manifest.sign_event``); the reader drops ``sig`` after the relay checked it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any

from clinicam.protocol.event_acks import EVENT_ID
from clinicam.protocol.fields import CMD_ID, FW, WORD, Shape, is_count, is_stamp, keep, list_of, matches
from clinicam.protocol.ids import HEX32

# key -> the shape its value must have
EVENT_FIELDS: dict[str, Shape] = {
    "event": matches(WORD),
    "at": is_stamp,
    "capture_id": matches(HEX32),
    "capture_ids": list_of(matches(HEX32)),
    "session": matches(HEX32),
    "reason": matches(WORD),
    "count": is_count,
    "cmd_id": matches(CMD_ID),
    "fw": matches(FW),  # updated / update-failed: the version concerned
    "event_id": matches(EVENT_ID),  # the relay acknowledges it (protocol.event_acks)
}


@dataclass(frozen=True)
class AuditEvent:
    """One audit event; ``None`` is "not said" (left out of the payload).

    A station always sets ``event`` (lowercase with hyphens: ``wiped``, ``session-opened``),
    ``at`` (``fields.utc_stamp``) and ``event_id`` (``event_acks.new_event_id``); an
    event the relay parses has only its well-formed fields set.
    """

    event: str | None = None
    at: str | None = None
    capture_id: str | None = None
    capture_ids: Sequence[str] | None = None  # kept as a tuple
    session: str | None = None
    reason: str | None = None
    count: int | None = None
    cmd_id: str | None = None
    fw: str | None = None
    event_id: str | None = None

    def __post_init__(self) -> None:
        if self.capture_ids is not None and not isinstance(self.capture_ids, tuple):
            object.__setattr__(self, "capture_ids", tuple(self.capture_ids))

    def as_dict(self) -> dict[str, Any]:
        """The event as a JSON object: the fields that are set."""
        out = {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None}
        if self.capture_ids is not None:
            out["capture_ids"] = list(self.capture_ids)
        return out

    def payload(self) -> bytes:
        """The message a station publishes (sorted keys, no spaces)."""
        return json.dumps(self.as_dict(), sort_keys=True, separators=(",", ":")).encode()

    @classmethod
    def from_dict(cls, obj: object) -> AuditEvent:
        """What the relay keeps of a decoded event: the DESIGN §5 keys, well-formed."""
        return cls(**keep(obj, EVENT_FIELDS))  # type: ignore[arg-type]

    @classmethod
    def parse(cls, payload: bytes | bytearray) -> AuditEvent | None:
        """The well-formed part of an event message; None if it is not a JSON object."""
        try:
            obj = json.loads(payload)
        except (ValueError, UnicodeDecodeError, RecursionError):
            return None
        return cls.from_dict(obj) if isinstance(obj, dict) else None
