"""The station's audit events on ``P/D/event`` (DESIGN §5): built and read in one place.

The station builds an :class:`AuditEvent` (``payload()``, or ``as_dict()`` for the
outbox that keeps it until the relay acknowledges it, ``protocol.event_acks``); the
relay reads it with ``AuditEvent.parse`` or ``from_dict``, which keep only the keys
DESIGN §5 defines, each checked for the shape it must have
(``protocol.fields.ShapedMessage``): ids, counts, reason codes and stamps, never free text, so an
event cannot carry PHI into the relay's audit log. The builder cannot say a key the
reader would drop: the dataclass has exactly the reader's keys (an unknown keyword is a
``TypeError``). A signed ``void`` is this event's dictionary plus ``sig``
(``protocol.manifest.sign_event``); the reader drops ``sig`` after the relay checked it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from clinicam.protocol.event_acks import EVENT_ID
from clinicam.protocol.fields import (
    CMD_ID,
    FW,
    WORD,
    Shape,
    ShapedMessage,
    is_count,
    is_stamp,
    list_of,
    matches,
    shaped,
)
from clinicam.protocol.ids import HEX32


@dataclass(frozen=True)
class AuditEvent(ShapedMessage):
    """One audit event; ``None`` is "not said" (left out of the payload).

    A station always sets ``event`` (lowercase with hyphens: ``wiped``, ``session-opened``),
    ``at`` (``fields.utc_stamp``) and ``event_id`` (``event_acks.new_event_id``); an
    event the relay parses has only its well-formed fields set.
    """

    event: str | None = shaped(matches(WORD))
    at: str | None = shaped(is_stamp)
    capture_id: str | None = shaped(matches(HEX32))
    capture_ids: Sequence[str] | None = shaped(list_of(matches(HEX32)))  # kept as a tuple
    session: str | None = shaped(matches(HEX32))
    reason: str | None = shaped(matches(WORD))
    count: int | None = shaped(is_count)
    cmd_id: str | None = shaped(matches(CMD_ID))
    fw: str | None = shaped(matches(FW))  # updated / update-failed: the version concerned
    event_id: str | None = shaped(matches(EVENT_ID))  # the relay acknowledges it (protocol.event_acks)

    def __post_init__(self) -> None:
        if self.capture_ids is not None and not isinstance(self.capture_ids, tuple):
            object.__setattr__(self, "capture_ids", tuple(self.capture_ids))


# key -> the shape its value must have
EVENT_FIELDS: dict[str, Shape] = AuditEvent.shapes()
