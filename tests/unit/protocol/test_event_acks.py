"""The audit-event acknowledgement on the wire: built and parsed in one module."""

from __future__ import annotations

import random

import pytest
from clinicam.protocol.event_acks import event_ack_payload, new_event_id, parse_event_ack


def test_event_ack_round_trip_and_capture_acks_are_not_event_acks() -> None:
    eid = new_event_id(random.Random(1))
    assert parse_event_ack(event_ack_payload(eid)) == eid
    capture_ack = b'{"capture_id":"' + b"ab" * 16 + b'","status":"stored","reason":null,"ref":{}}'
    for other in (capture_ack, b"", b"[]", b'{"event_id":"XYZ","status":"logged"}',
                  b'{"event_id":"' + eid.encode() + b'","status":"stored"}'):
        assert parse_event_ack(other) is None
    with pytest.raises(ValueError, match="16 lowercase hex"):
        event_ack_payload("not-an-id")
