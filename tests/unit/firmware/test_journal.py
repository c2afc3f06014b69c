"""The station's journal lines and its certificate check (no threads, no clock reads)."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

import pytest
from clinicam.firmware.journal import Journal, certificate_notice

NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)


def test_records_become_lines_with_ids_only_and_still_reach_the_observer(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="clinicam.station.journal")
    seen: list[dict] = []
    j = Journal(seen.append)
    cid = "ab" * 16
    records = [
        {"kind": "capture", "status": "sealed", "capture_id": cid, "bytes": 10, "pending": 1},
        {"kind": "capture", "status": "retry", "capture_id": cid, "why": "ack-timeout", "attempt": 2},
        {"kind": "capture", "status": "stored", "capture_id": cid, "ref": {"pacs": "1.2.3"}, "pending": 0},
        {"kind": "capture", "status": "rejected", "capture_id": cid, "reason": "signature"},
        {"kind": "capture", "status": "refused", "reason": "vault-full"},
        {"kind": "expired", "capture_ids": [cid]},
        {"kind": "command", "cmd": "wipe", "id": "c1"},
        {"kind": "wipe", "trigger": "remote", "count": 1, "capture_ids": [cid]},
        {"kind": "signal", "pattern": "ready"},  # not a lifecycle event: no line
    ]
    for r in records:
        j(r)
    j.audit({"event": "session-closed", "session": "cd" * 16, "reason": "end", "count": 3})
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [
        f"captured {cid} (10 bytes sealed; 1 pending)",
        f"re-sending {cid} later (ack-timeout, attempt 2)",
        f"delivered {cid} (0 pending)",
        f"capture {cid} rejected by the relay: signature",
        "vault full: capture refused",
        f"expired undelivered captures: {cid}",
        "remote command wipe (c1)",
        f"wiped (remote): 1 undelivered capture(s): {cid}",
        "session closed (reason end, count 3)",
    ]
    assert "cd" * 16 not in " ".join(lines) and "1.2.3" not in " ".join(lines)  # no session id, no sink ref
    assert seen == records


def test_certificate_notice_from_30_days() -> None:
    assert certificate_notice(NOW + timedelta(days=31), NOW) is None
    level, text = certificate_notice(NOW + timedelta(days=29), NOW) or (0, "")
    assert level == logging.WARNING and "expires on 2027-01-05 (in 29 days)" in text and "renew" in text
    level, text = certificate_notice(NOW - timedelta(days=1), NOW) or (0, "")
    assert level == logging.ERROR and "expired on 2026-12-06" in text
    assert certificate_notice(None, NOW) is None
