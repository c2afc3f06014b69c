"""RelayCore under a flood: one answer per refused capture, evictions answered, one log
line per sweep (issue 13 §2). No broker, no threads, an injected clock."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
from clinicam.protocol.topics import Topics
from clinicam.relay.audit import AuditLog
from clinicam.relay.core import Ack, RelayCore
from clinicam.relay.reassembly import CAPTURE_OVERHEAD, PART_OVERHEAD, Reassembler
from clinicam.relay.sinks.directory import DirectorySink

T = Topics()


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def _core(unit_site: Any, tmp_path: Path, reassembler: Reassembler) -> RelayCore:
    return RelayCore(ca_cert=unit_site.ca_cert, recipients=[unit_site.recipient],
                     sinks=[DirectorySink(tmp_path / "out")], reassembler=reassembler,
                     audit=AuditLog(tmp_path / "a.jsonl"))


def test_a_refused_capture_is_answered_once_by_its_manifest(unit_site: Any, tmp_path: Path) -> None:
    core = _core(unit_site, tmp_path, Reassembler(max_bytes=10**7, max_station_bytes=CAPTURE_OVERHEAD
                                                  + 2 * PART_OVERHEAD + 2000))
    cap = unit_site.seal("station-a", b"\xff\xd8" + bytes(5000))  # too big for the budget
    acks = [a for i, p in enumerate(cap.parts) for a in core.handle(T.part("station-a", cap.capture_id, i), bytes(p))]
    assert acks == []  # no ack (and no log line) per refused part
    assert core.handle(T.manifest("station-a", cap.capture_id), cap.manifest) == [
        Ack("station-a", cap.capture_id, "retry", "too-large")]
    assert 1 <= core.board.counters["refused-buffer-full"] < len(cap.parts)  # the rest, counted


def test_evicted_and_timed_out_captures_answer_retry_in_one_log_line(
        unit_site: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    core = _core(unit_site, tmp_path, Reassembler(max_bytes=50 * (CAPTURE_OVERHEAD + PART_OVERHEAD),
                                                  max_age_s=60, clock=clock))
    for i in range(50):  # the flooder fills the whole buffer with manifest-less parts
        core.handle(T.part("station-b", f"{i:032x}", 0), b"")
    cap = unit_site.seal("station-a", b"\xff\xd8" + bytes(100))
    assert core.handle(T.part("station-a", cap.capture_id, 0), bytes(cap.parts[0])) == []  # room made by eviction
    caplog.set_level(logging.WARNING, logger="clinicam.relay")
    clock.t += 61
    acks = core.sweep()
    assert acks == []  # nothing evicted or timed out had a manifest: nobody to answer
    lines = [r for r in caplog.records if "reassembly" in r.getMessage()]
    assert len(lines) == 1 and "station-b" in lines[0].getMessage()
    evicted = core.board.counters["dropped-evicted"]
    assert evicted >= 1  # the flooder's oldest, as many as the control's part needed
    assert core.board.counters["dropped-incomplete"] == 50 - evicted + 1  # the rest + control


def test_events_with_an_id_are_acknowledged_and_logged_once(unit_site: Any, tmp_path: Path) -> None:
    import json

    from clinicam.protocol.event_acks import parse_event_ack
    from clinicam.relay.core import EventAck

    core = _core(unit_site, tmp_path, Reassembler())
    event = {"event": "wiped", "at": "2026-01-01T00:00:00.000Z", "count": 0, "event_id": "0123456789abcdef"}
    topic = T.event("station-a")
    for _ in range(3):  # the broker's queued copy and the station's re-sends
        (ack,) = core.handle(topic, json.dumps(event).encode())
        assert ack == EventAck("station-a", "0123456789abcdef")
        assert parse_event_ack(ack.payload()) == "0123456789abcdef"
    assert [x.get("event_id") for x in core.audit.lines] == ["0123456789abcdef"]
    assert core.board.counters["events-repeated"] == 2
    legacy = {k: v for k, v in event.items() if k != "event_id"}  # a station without ids
    assert core.handle(topic, json.dumps(legacy).encode()) == []
    assert len(core.audit.lines) == 2
