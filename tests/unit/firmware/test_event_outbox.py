"""Audit events kept until the relay logs them: the outbox and the event-ack wire format."""

from __future__ import annotations

import random

import pytest
from clinicam.firmware.event_acks import event_ack_payload, new_event_id, parse_event_ack
from clinicam.firmware.event_outbox import EventOutbox
from clinicam.firmware.status import event_payload


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_event_ack_round_trip_and_capture_acks_are_not_event_acks() -> None:
    eid = new_event_id(random.Random(1))
    assert parse_event_ack(event_ack_payload(eid)) == eid
    capture_ack = b'{"capture_id":"' + b"ab" * 16 + b'","status":"stored","reason":null,"ref":{}}'
    for other in (capture_ack, b"", b"[]", b'{"event_id":"XYZ","status":"logged"}',
                  b'{"event_id":"' + eid.encode() + b'","status":"stored"}'):
        assert parse_event_ack(other) is None
    with pytest.raises(ValueError, match="16 lowercase hex"):
        event_ack_payload("not-an-id")


def test_outbox_keeps_until_acked_and_resends_when_due() -> None:
    clock = Clock()
    box = EventOutbox(resend_s=30, clock=clock, rng=random.Random(2))
    body = box.keep(event_payload("wiped", 0.0, count=0, event_id=box.new_id()))
    assert len(box) == 1 and box.due() == [] and box.next_due_in() == 30
    clock.t += 30
    assert box.due() == [body]  # and now marked sent again
    assert box.due() == []
    assert box.due(everything=True) == [body]  # a reconnect sends everything kept
    assert box.acked(body["event_id"]) and not box.acked(body["event_id"])
    assert len(box) == 0 and box.next_due_in() is None


def test_outbox_is_bounded_and_gives_up_the_oldest() -> None:
    box = EventOutbox(max_events=3, clock=Clock(), rng=random.Random(3))
    ids = [box.keep(event_payload("ping", 0.0, event_id=box.new_id()))["event_id"] for _ in range(5)]
    assert len(box) == 3 and box.dropped == 2
    assert [b["event_id"] for b in box.due(everything=True)] == ids[2:]
