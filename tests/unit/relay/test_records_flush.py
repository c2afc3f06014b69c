"""The station-state store and the audit log under floods and faults (issue 13 §2–§4)."""

from __future__ import annotations

import json
from pathlib import Path

from clinicam.relay.audit import AuditLog
from clinicam.relay.records import StatusBoard

CID = "ab" * 16


class Clock:
    def __init__(self, t: float = 1000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def _read(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines()]


def test_status_flood_is_coalesced_into_few_writes(tmp_path: Path) -> None:
    clock = Clock()
    board = StatusBoard(tmp_path / "status.json", clock=clock, min_interval_s=1.0)
    for i in range(50_000):
        clock.t += 0.0001  # 50,000 statuses within 5 s
        board.station("flooder", {"state": "online", "pending": i})
        board.flush_due()
    assert 1 <= board.writes <= 6
    board.flush()
    data = json.loads((tmp_path / "status.json").read_text())
    assert data["stations"]["flooder"]["pending"] == 49_999
    assert data["counters"]["status-received"] == 50_000


def test_counters_are_written_without_any_station_status(tmp_path: Path) -> None:
    clock = Clock()
    board = StatusBoard(tmp_path / "status.json", clock=clock, refresh_s=5.0)
    board.flush_due()
    board.count("stored", 3)
    clock.t += 1.5
    assert board.flush_due()  # changed: written within min_interval_s
    assert json.loads((tmp_path / "status.json").read_text())["counters"] == {"stored": 3}
    clock.t += 1.0
    assert not board.flush_due()  # nothing changed, refresh not due
    clock.t += 5.0
    assert board.flush_due()  # refreshed anyway: "updated" stays current


def test_unwritable_audit_log_keeps_lines_reports_health_and_writes_later(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    path.mkdir()  # a directory where the file should be: IsADirectoryError
    clock = Clock()
    audit = AuditLog(path, clock=clock, retry_s=1.0)
    audit.decision("station-a", CID, "stored", None)  # never raises
    health = audit.health()
    assert not health["ok"] and health["fault"] == "IsADirectoryError"
    assert health["pending_lines"] == 1 and audit.faults == 1
    audit.decision("station-a", "cd" * 16, "stored", None)
    path.rmdir()
    clock.t += 2
    audit.retry()
    assert audit.health()["ok"] and audit.health()["pending_lines"] == 0
    assert [x["capture_id"] for x in _read(path)] == [CID, "cd" * 16]


def test_at_the_bound_the_noisiest_device_loses_its_oldest_lines(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    path.mkdir()
    clock = Clock()
    audit = AuditLog(path, clock=clock, max_pending=100, rate_per_s=1e9, burst=1e9)
    audit.station_event("quiet", {"event": "wiped", "capture_ids": [CID], "count": 1})
    for i in range(500):
        audit.station_event("noisy", {"event": "ping", "count": i})
    assert audit.health()["pending_lines"] == 100 and audit.dropped_total == 401
    path.rmdir()
    audit.retry()
    lines = _read(path)
    assert lines[0]["device"] == "quiet" and lines[0]["capture_ids"] == [CID]
    noisy = [x["count"] for x in lines if x.get("event") == "ping"]
    assert noisy == list(range(401, 500))  # the newest kept, in order
    dropped = [x for x in lines if x.get("decision") == "audit-lines-dropped"]
    assert [(x["device"], x["count"]) for x in dropped] == [("noisy", 401)]


def test_rate_limit_per_device_summarises_and_spares_others(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    clock = Clock()
    audit = AuditLog(path, clock=clock, rate_per_s=10, burst=20)
    for i in range(1000):
        audit.station_event("noisy", {"event": "ping", "count": i})
    audit.station_event("quiet", {"event": "wiped", "count": 0})
    clock.t += 10
    audit.retry()
    lines = _read(path)
    assert sum(x.get("event") == "ping" for x in lines) == 20
    assert any(x["device"] == "quiet" and x.get("event") == "wiped" for x in lines)
    summary = [x for x in lines if x.get("decision") == "audit-suppressed"]
    assert [(x["device"], x["count"]) for x in summary] == [("noisy", 980)]


def test_rotation_by_size_and_by_age_keeps_the_newest(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    wall, clock = Clock(1_800_000_000.0), Clock()
    audit = AuditLog(path, wall, clock=clock, rotate_bytes=2000, rotate_age_s=3600, keep=2,
                     rate_per_s=1e9, burst=1e9)
    for i in range(60):
        wall.t += 1
        audit.decision("station-a", f"{i:032x}", "stored", None)
    rotated = sorted(tmp_path.glob("audit.jsonl.*"))
    assert len(rotated) == 2 and path.stat().st_size < 2000 + 200
    every = [x for p in [*rotated, path] for x in _read(p)]
    assert [x["capture_id"] for x in every][-1] == f"{59:032x}"
    before = set(tmp_path.glob("audit.jsonl.*"))
    wall.t += 3601  # age: the current file is over an hour old
    audit.decision("station-a", CID, "stored", None)
    assert set(tmp_path.glob("audit.jsonl.*")) != before
    assert [x["capture_id"] for x in _read(path)] == [CID]


def test_first_stored_decisions_are_never_rate_limited(tmp_path: Path) -> None:
    audit = AuditLog(tmp_path / "audit.jsonl", clock=Clock(), rate_per_s=1, burst=5)
    for i in range(50):
        audit.decision("station-a", f"{i:032x}", "stored", None, limited=False)
        audit.decision("station-a", f"{i:032x}", "rejected", "parts")
    lines = _read(tmp_path / "audit.jsonl")
    assert sum(x["decision"] == "stored" for x in lines) == 50
    assert sum(x["decision"] == "rejected" for x in lines) == 5


def test_status_file_is_fsynced_at_most_every_sync_s_and_at_stop(tmp_path: Path) -> None:
    """It lives on disk now (kept across reboots): a status flood must not become an fsync storm."""
    clock = Clock()
    board = StatusBoard(tmp_path / "status.json", clock=clock, min_interval_s=1.0, sync_s=60.0)
    for i in range(100_000):
        clock.t += 0.001  # 100,000 statuses within 100 s
        board.station("flooder", {"state": "online", "pending": i})
        board.flush_due()
    assert 90 <= board.writes <= 101  # coalesced to about one write a second ...
    assert board.syncs == 2  # ... and of those, one fsync a minute (the first write, then at 60 s)
    board.flush(sync=True)  # the relay's last write at stop
    assert board.syncs == 3
    assert json.loads((tmp_path / "status.json").read_text())["stations"]["flooder"]["pending"] == 99_999
    assert not list(tmp_path.glob(".*.tmp"))  # replaced atomically, no temporary left
