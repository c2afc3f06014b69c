from __future__ import annotations

import json
from pathlib import Path

from clinicam.protocol.events import AuditEvent
from clinicam.protocol.status import StationStatus
from clinicam.relay.audit import AuditLog
from clinicam.relay.ledger import Filed, Ledger
from clinicam.relay.records import StatusBoard

CANARY = "PATIENT-CANARY-7731"


def read(payload: bytes | str) -> StationStatus:
    """What the relay makes of a status message (``RelayCore`` decodes it the same way)."""
    status = StationStatus.parse(payload.encode() if isinstance(payload, str) else payload)
    assert status is not None
    return status


def test_status_board_keeps_only_design_keys(tmp_path: Path) -> None:
    board = StatusBoard(tmp_path / "status.json", wall=lambda: 0.0)
    sent = StationStatus(state="online", pending=2, pending_bytes=10, boot="0" * 32, fw="0.1.0",
                         uptime_s=5, cert_not_after="2027-01-01T00:00:00.000Z", clock_synced=True)
    board.station("station-b", read(sent.payload()))  # what a station sends is kept whole
    board.station("station-a", read(json.dumps({"state": "online", "pending": 2, "fw": "0.1.0",
                                                "note": CANARY, "boot": CANARY, "clock_synced": True})))
    board.flush()
    text = (tmp_path / "status.json").read_text()
    data = json.loads(text)
    assert data["stations"]["station-a"] == {
        "state": "online", "pending": 2, "fw": "0.1.0", "clock_synced": True,
        "seen": "1970-01-01T00:00:00.000Z",
    }
    assert data["stations"]["station-b"] == {**json.loads(sent.payload()), "seen": "1970-01-01T00:00:00.000Z"}
    assert CANARY not in text


def test_audit_log_drops_free_text(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "audit.jsonl")
    offered = {"event": "rejected", "reason": f"x {CANARY}", "capture_id": "ab" * 16, "count": 1}
    assert CANARY in json.dumps(offered)  # positive control: the canary is offered to the log
    log.station_event("station-a", AuditEvent.from_dict(offered))
    sent = AuditEvent("rejected", "1970-01-01T00:00:00.000Z", capture_id="cd" * 16, reason="signature")
    log.station_event("station-a", AuditEvent.parse(sent.payload()) or AuditEvent())  # kept whole
    log.decision("station-a", "ab" * 16, "stored", None)
    text = (tmp_path / "audit.jsonl").read_text()
    lines = [json.loads(x) for x in text.splitlines()]
    assert lines[0]["event"] == "rejected" and "reason" not in lines[0]
    assert lines[1] == {"source": "station", "device": "station-a", "logged": lines[1]["logged"],
                        **json.loads(sent.payload())}
    assert lines[2]["decision"] == "stored"
    assert CANARY not in text


def test_ledger_survives_restart_and_torn_line(tmp_path: Path) -> None:
    path = tmp_path / "ledger.jsonl"
    led = Ledger(path)
    led.record(Filed("station-a", "ab" * 16, "00" * 32, {"dir": "ref"}, "PEM"))
    with path.open("a") as f:
        f.write('{"device": "station-b"')  # torn by a crash
    again = Ledger(path)
    assert again.get("station-a", "ab" * 16) == led.get("station-a", "ab" * 16)
    assert len(again) == 1
