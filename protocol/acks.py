"""The relay's acknowledgement on ``P/<device>/ack`` (DESIGN §5), built and parsed here.

``{"capture_id", "status", "reason", "ref"}``, all four keys always present:
``stored`` (every sink has the capture; ``ref`` names it per sink), ``rejected``
(it can never be opened; ``reason`` says why) or ``retry`` (send it again later).
The relay builds it with :meth:`Ack.payload`, the station reads it with
:meth:`Ack.parse`; a station drops an undelivered photo only on an ack that parses.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import StrEnum

from clinicam.protocol.ids import is_capture_id
from clinicam.protocol.reasons import is_reason

_KEYS = frozenset({"capture_id", "status", "reason", "ref"})


class AckStatus(StrEnum):
    STORED = "stored"
    REJECTED = "rejected"
    RETRY = "retry"


@dataclass(frozen=True)
class Ack:
    """One acknowledgement; ``device`` is the station it goes to (its topic, not its payload)."""

    device: str
    capture_id: str
    status: str  # an AckStatus
    reason: str | None = None
    ref: dict[str, str] | None = None

    def payload(self) -> bytes:
        body = {"capture_id": self.capture_id, "status": self.status, "reason": self.reason,
                "ref": self.ref}
        return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()

    @classmethod
    def parse(cls, payload: bytes, device: str) -> Ack | None:
        """The ack in ``payload`` (received on ``device``'s ack topic), or None if malformed."""
        try:
            obj = json.loads(payload)
        except (ValueError, UnicodeDecodeError):
            return None
        if not isinstance(obj, dict) or set(obj) != _KEYS:
            return None
        cid, status, reason, ref = obj["capture_id"], obj["status"], obj["reason"], obj["ref"]
        ok = (
            is_capture_id(cid)
            and status in set(AckStatus)
            and (reason is None or is_reason(reason))
            and (ref is None or (isinstance(ref, dict)
                                 and all(isinstance(v, str) for v in ref.values())))
        )
        return cls(device, cid, status, reason, ref) if ok else None
