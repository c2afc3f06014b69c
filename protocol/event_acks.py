"""Audit-event acknowledgements on the wire, both directions side by side (DESIGN §5).

A station gives each audit event an ``event_id`` (16 lowercase hex digits, random, no
PHI) and keeps it until the relay answers on the station's ack topic ``P/D/ack`` with
``{"event_id": <id>, "status": "logged"}`` — the same topic as capture acks (the ACL
already lets relays write it and the station read it), told apart by ``event_id``.
Build and parse live together here so they cannot drift.
"""

from __future__ import annotations

import json
import random
import re
from dataclasses import dataclass

EVENT_ID = re.compile(r"[0-9a-f]{16}")
LOGGED = "logged"


def new_event_id(rng: random.Random | None = None) -> str:
    """A fresh event id; ``rng`` for tests (default: the OS's randomness)."""
    return f"{(rng or random.SystemRandom()).getrandbits(64):016x}"


def event_ack_payload(event_id: str) -> bytes:
    """What the relay publishes on ``P/D/ack`` once it has logged the event."""
    if not EVENT_ID.fullmatch(event_id):
        raise ValueError("event_id must be 16 lowercase hex digits")
    return json.dumps({"event_id": event_id, "status": LOGGED}, sort_keys=True,
                      separators=(",", ":")).encode()


def parse_event_ack(payload: bytes) -> str | None:
    """The event id an ack message confirms, or None (a capture ack, or malformed)."""
    try:
        obj = json.loads(payload)
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(obj, dict) or obj.get("status") != LOGGED:
        return None
    event_id = obj.get("event_id")
    return event_id if isinstance(event_id, str) and EVENT_ID.fullmatch(event_id) else None


@dataclass(frozen=True)
class EventAck:
    """The relay logged ``device``'s event ``event_id``: published on ``P/<device>/ack``."""

    device: str
    event_id: str

    def payload(self) -> bytes:
        return event_ack_payload(self.event_id)
