"""Audit events kept in the station's RAM until the relay logs them."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest
from clinicam.firmware.uplink.eventstore import EventStore
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


# -- written through to the persistent partition (firmware.uplink.eventstore) ------------

CID = "ab" * 16


def wiped(box: EventOutbox, n: int = 1) -> dict[str, Any]:
    return AuditEvent("wiped", EPOCH, capture_ids=[CID] * n, count=n, reason="sigterm", event_id=box.new_id()).as_dict()


def test_a_new_outbox_restores_what_the_last_run_left_and_sends_it_at_once(tmp_path: Path) -> None:
    store = EventStore(tmp_path)
    first = EventOutbox(clock=Clock(), rng=random.Random(4), store=store)
    kept = [first.keep(wiped(first)), first.keep(AuditEvent("mains-lost", EPOCH, event_id=first.new_id()).as_dict())]
    assert not (tmp_path / "events.json").exists()  # written by persist(), after the job
    first.persist()
    assert json.loads((tmp_path / "events.json").read_text())["events"] == kept
    # the process ends (SIGTERM, power cut); the next one starts
    second = EventOutbox(resend_s=30, clock=Clock(), rng=random.Random(5), store=store)
    assert second.next_due_in() == 0 and second.due() == kept  # due at once, not in 30 s
    assert second.acked(kept[0]["event_id"])
    second.persist()
    assert json.loads((tmp_path / "events.json").read_text())["events"] == kept[1:]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["events.json"]  # no temporary file left


def test_persist_writes_only_when_something_changed(tmp_path: Path) -> None:
    box = EventOutbox(clock=Clock(), rng=random.Random(6), store=EventStore(tmp_path))
    box.persist()
    assert not (tmp_path / "events.json").exists()
    box.keep(wiped(box))
    box.persist()
    (tmp_path / "events.json").write_text("changed behind its back")
    box.due(everything=True)  # a re-send changes nothing that is stored
    box.persist()
    assert (tmp_path / "events.json").read_text() == "changed behind its back"


def test_the_store_is_bounded_in_bytes_and_counts_what_it_gave_up(tmp_path: Path) -> None:
    store = EventStore(tmp_path)
    box = EventOutbox(max_bytes=4000, clock=Clock(), rng=random.Random(7), store=store)
    ids = [box.keep(wiped(box, 20))["event_id"] for _ in range(6)]  # ~850 bytes each
    box.persist()
    assert 0 < len(box) < 6 and box.dropped == 6 - len(box)
    assert len((tmp_path / "events.json").read_bytes()) < 4000 + 100
    again = EventOutbox(clock=Clock(), store=store)
    assert [b["event_id"] for b in again.due(everything=True)] == ids[6 - len(box):]  # the newest
    assert again.unreported == box.dropped  # carried over to be reported ...
    assert again.reported() == box.dropped and again.unreported == 0  # ... once
    again.persist()
    assert json.loads((tmp_path / "events.json").read_text())["dropped"] == 0


def test_nothing_free_form_reaches_the_disk(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Only values the relay's wire reader accepts are written: a bug that put a patient
    id into an event keeps that event in RAM only (positive control: a clean one is written)."""
    canary = "7999999000001"  # a synthetic patient id
    box = EventOutbox(clock=Clock(), rng=random.Random(8), store=EventStore(tmp_path))
    clean = box.keep(wiped(box))
    box.keep({**wiped(box), "reason": f"patient {canary}"})
    box.keep({**wiped(box), "note": canary})
    box.keep({"event": "void", "at": clean["at"], "capture_id": CID, "event_id": box.new_id(), "sig": canary + " x"})
    box.persist()
    text = (tmp_path / "events.json").read_text()
    assert canary not in text and json.loads(text)["events"] == [clean]
    assert len(box) == 4  # still sent from RAM
    assert canary not in caplog.text


def test_an_unreadable_or_foreign_file_starts_empty(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / "events.json").write_text("{not json")
    assert len(EventOutbox(clock=Clock(), store=EventStore(tmp_path))) == 0
    good = EventOutbox(clock=Clock(), rng=random.Random(9), store=EventStore(tmp_path))
    good.keep(wiped(good))
    good.persist()
    doc = json.loads((tmp_path / "events.json").read_text())
    doc["events"].append({"event": "wiped", "at": "yesterday", "event_id": "0" * 16})
    (tmp_path / "events.json").write_text(json.dumps(doc))
    again = EventOutbox(clock=Clock(), store=EventStore(tmp_path))
    assert len(again) == 1 and again.unreported == 1  # the bad entry is counted as given up
    assert "events.json" in caplog.text


def test_a_write_failure_keeps_events_in_ram_and_is_retried(tmp_path: Path,
                                                            caplog: pytest.LogCaptureFixture) -> None:
    box = EventOutbox(clock=Clock(), rng=random.Random(10), store=EventStore(tmp_path))
    (tmp_path / "events.json.tmp").mkdir()  # the temporary file cannot be made
    box.keep(wiped(box))
    box.persist()
    box.persist()
    assert len(box) == 1 and sum("cannot write" in r.getMessage() for r in caplog.records) == 1
    (tmp_path / "events.json.tmp").rmdir()
    box.persist()  # still dirty: written now
    assert len(json.loads((tmp_path / "events.json").read_text())["events"]) == 1


def test_open_refuses_a_missing_directory_without_creating_it(tmp_path: Path,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    assert EventStore.open(str(tmp_path / "absent" / "events")) is None
    assert not (tmp_path / "absent").exists() and "RAM only" in caplog.text
    assert EventStore.open("") is None
    assert EventStore.open(str(tmp_path)) is not None
