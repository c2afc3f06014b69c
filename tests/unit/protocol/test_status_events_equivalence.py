"""Transitional: the value types write the same bytes as the dict builders they replace."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import pytest
from clinicam.protocol.events import AuditEvent
from clinicam.protocol.status import StationStatus, event_payload, read_event, read_status, status_payload, utc_stamp

NOW = 1_800_000_000.123
CID, CID2, BOOT, SESSION = "ab" * 16, "cd" * 16, "0f" * 16, "12" * 16


def wire(body: dict[str, Any]) -> bytes:  # what the uplink's _publish_json writes
    return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()


STATUS_CASES: list[dict[str, Any]] = [
    dict(state="online", pending=1, pending_bytes=2048, boot=BOOT, fw="0.1.0", uptime_s=12.7,
         cert_not_after=utc_stamp(NOW + 86400), clock_synced=False),
    dict(state="misconfigured", pending=0, pending_bytes=0, boot=BOOT, fw="2.0.0+deb12", uptime_s=0,
         cert_not_after=utc_stamp(NOW), clock_synced=True, relay="offline",
         renewal={"state": "failed", "at": utc_stamp(NOW), "reason": "revoked"}),
    dict(state="offline", pending=7, pending_bytes=10**9, boot=BOOT, fw="0", uptime_s=86400.9,
         cert_not_after=utc_stamp(0), clock_synced=True, relay="online",
         renewal={"state": "idle", "at": None, "reason": None}),
]


@pytest.mark.parametrize("kw", STATUS_CASES)
def test_status_bytes_unchanged(kw: dict[str, Any]) -> None:
    old = status_payload(**kw)
    new = StationStatus(**{**kw, "uptime_s": int(kw["uptime_s"])})
    assert new.payload() == wire(old)
    assert replace(new, state="offline").payload() == wire({**old, "state": "offline"})
    assert StationStatus.from_dict(old).as_dict() == read_status(old)
    assert StationStatus.parse(wire(old)) == new


EVENT_CASES: list[tuple[str, dict[str, Any]]] = [
    ("ping", dict(cmd_id="c1", event_id="0123456789abcdef")),
    ("wipe", dict(cmd_id="op-7.x", capture_ids=[CID, CID2], count=2, event_id="00000000000000ff")),
    ("wiped", dict(capture_ids=[CID], count=1, reason="remote", event_id="fedcba9876543210")),
    ("wiped", dict(capture_ids=[], count=0, reason=None, event_id="fedcba9876543211")),
    ("expired", dict(capture_ids=[CID], count=1, event_id="fedcba9876543212")),
    ("rejected", dict(capture_id=CID, reason="signature", event_id="fedcba9876543213")),
    ("cert-renewed", dict(event_id="fedcba9876543214")),
    ("update-failed", dict(fw="3.0.0")),
    ("session-closed", dict(session=SESSION, reason="end", count=3)),
    ("voided", dict(capture_id=CID, reason="pending-wiped", event_id="fedcba9876543215")),
]


@pytest.mark.parametrize("name,kw", EVENT_CASES)
def test_event_bytes_unchanged(name: str, kw: dict[str, Any]) -> None:
    old = event_payload(name, NOW, **kw)
    new = AuditEvent(name, utc_stamp(NOW), **kw)
    assert new.payload() == wire(old)
    assert new.as_dict() == old
    assert AuditEvent.from_dict(old).as_dict() == read_event(old)
    assert AuditEvent.parse(wire(old)) == new


def test_readers_agree_on_free_text() -> None:
    status = {"state": "online x", "pending": -1, "fw": "0.1.0", "note": "x", "boot": "PATIENT",
              "clock_synced": 1, "renewal": {"state": "ok"}, "relay": "maybe", "uptime_s": True}
    assert StationStatus.from_dict(status).as_dict() == read_status(status) == {"fw": "0.1.0"}
    event = {"event": "rejected", "reason": "free text", "capture_ids": [CID, "x"], "count": 1,
             "sig": "AAAA", "at": "yesterday"}
    assert AuditEvent.from_dict(event).as_dict() == read_event(event) == {"event": "rejected", "count": 1}
