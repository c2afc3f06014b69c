"""Audit events kept in the station's RAM until the relay logs them."""

from __future__ import annotations

import random

from clinicam.firmware.uplink.outbox import EventOutbox
from clinicam.protocol.events import AuditEvent

EPOCH = "1970-01-01T00:00:00.000Z"


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_outbox_keeps_until_acked_and_resends_when_due() -> None:
    clock = Clock()
    box = EventOutbox(resend_s=30, clock=clock, rng=random.Random(2))
    body = box.keep(AuditEvent("wiped", EPOCH, count=0, event_id=box.new_id()).as_dict())
    assert len(box) == 1 and box.due() == [] and box.next_due_in() == 30
    clock.t += 30
    assert box.due() == [body]  # and now marked sent again
    assert box.due() == []
    assert box.due(everything=True) == [body]  # a reconnect sends everything kept
    assert box.acked(body["event_id"]) and not box.acked(body["event_id"])
    assert len(box) == 0 and box.next_due_in() is None


def test_outbox_is_bounded_and_gives_up_the_oldest() -> None:
    box = EventOutbox(max_events=3, clock=Clock(), rng=random.Random(3))
    ids = [box.keep(AuditEvent("ping", EPOCH, event_id=box.new_id()).as_dict())["event_id"] for _ in range(5)]
    assert len(box) == 3 and box.dropped == 2
    assert [b["event_id"] for b in box.due(everything=True)] == ids[2:]
