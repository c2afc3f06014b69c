"""Station status and audit events (DESIGN §5): the bytes a station writes, what a relay keeps.

The expected bytes were written by the dict builders these value types replaced
(``status_payload``/``event_payload``, JSON with sorted keys and no spaces as the uplink
sent them; checked equal at commit 5f7605b; the ``trust`` case from main's builder at
0814bb2), so the wire did not change.
"""

from __future__ import annotations

import json
from dataclasses import fields, replace
from typing import Any

import pytest
from clinicam.protocol.events import EVENT_FIELDS, AuditEvent
from clinicam.protocol.fields import utc_stamp
from clinicam.protocol.status import STATUS_FIELDS, WILL, StationStatus

NOW = 1_800_000_000.123
CID, CID2, BOOT, SESSION = "ab" * 16, "cd" * 16, "0f" * 16, "12" * 16
STAMP = utc_stamp(NOW)

STATUS_CASES: list[tuple[StationStatus, bytes]] = [
    (StationStatus(state="online", pending=1, pending_bytes=2048, boot=BOOT, fw="0.1.0", uptime_s=12,
                   cert_not_after=utc_stamp(NOW + 86400), clock_synced=False),
     b'{"boot":"0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f","cert_not_after":"2027-01-16T08:00:00.123Z",'
     b'"clock_synced":false,"fw":"0.1.0","pending":1,"pending_bytes":2048,"state":"online","uptime_s":12}'),
    (StationStatus(state="misconfigured", pending=0, pending_bytes=0, boot=BOOT, fw="2.0.0+deb12", uptime_s=0,
                   cert_not_after=STAMP, clock_synced=True, relay="offline",
                   renewal={"state": "failed", "at": STAMP, "reason": "revoked"}),
     b'{"boot":"0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f","cert_not_after":"2027-01-15T08:00:00.123Z",'
     b'"clock_synced":true,"fw":"2.0.0+deb12","pending":0,"pending_bytes":0,"relay":"offline",'
     b'"renewal":{"at":"2027-01-15T08:00:00.123Z","reason":"revoked","state":"failed"},'
     b'"state":"misconfigured","uptime_s":0}'),
    (StationStatus(state="offline", pending=7, pending_bytes=10**9, boot=BOOT, fw="0", uptime_s=86400,
                   cert_not_after=utc_stamp(0), clock_synced=True, relay="online",
                   renewal={"state": "idle", "at": None, "reason": None}),
     b'{"boot":"0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f","cert_not_after":"1970-01-01T00:00:00.000Z",'
     b'"clock_synced":true,"fw":"0","pending":7,"pending_bytes":1000000000,"relay":"online",'
     b'"renewal":{"at":null,"reason":null,"state":"idle"},"state":"offline","uptime_s":86400}'),
    (StationStatus(state="online", pending=0, pending_bytes=0, boot=BOOT, fw="1.0.0", uptime_s=3,
                   cert_not_after=STAMP, clock_synced=True, trust={"number": 2, "root": "ab" * 32}),
     b'{"boot":"0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f","cert_not_after":"2027-01-15T08:00:00.123Z",'
     b'"clock_synced":true,"fw":"1.0.0","pending":0,"pending_bytes":0,"state":"online",'
     b'"trust":{"number":2,"root":"abababababababababababababababababababababababababababababababab"},'
     b'"uptime_s":3}'),
]


@pytest.mark.parametrize("status,wire", STATUS_CASES)
def test_status_bytes_and_round_trip(status: StationStatus, wire: bytes) -> None:
    assert status.payload() == wire
    assert StationStatus.parse(wire) == status  # the relay keeps every key a station sends
    assert StationStatus.from_dict(json.loads(wire)).as_dict() == json.loads(wire)


def test_will_and_stop_status() -> None:
    assert WILL == b'{"state": "offline"}'  # as the uplink always set it
    assert StationStatus.parse(WILL) == StationStatus(state="offline")
    status, _ = STATUS_CASES[0]
    stopping = json.loads(replace(status, state="offline").payload())
    assert stopping == {**json.loads(status.payload()), "state": "offline"}


EVENT_CASES: list[tuple[AuditEvent, bytes]] = [
    (AuditEvent("ping", STAMP, cmd_id="c1", event_id="0123456789abcdef"),
     b'{"at":"2027-01-15T08:00:00.123Z","cmd_id":"c1","event":"ping","event_id":"0123456789abcdef"}'),
    (AuditEvent("wipe", STAMP, cmd_id="op-7.x", capture_ids=[CID, CID2], count=2, event_id="00000000000000ff"),
     b'{"at":"2027-01-15T08:00:00.123Z","capture_ids":["abababababababababababababababab",'
     b'"cdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcd"],"cmd_id":"op-7.x","count":2,"event":"wipe","event_id":"00000000000000ff"}'),
    (AuditEvent("wiped", STAMP, capture_ids=[CID], count=1, reason="remote", event_id="fedcba9876543210"),
     b'{"at":"2027-01-15T08:00:00.123Z","capture_ids":["abababababababababababababababab"],"count":1,'
     b'"event":"wiped","event_id":"fedcba9876543210","reason":"remote"}'),
    (AuditEvent("wiped", STAMP, capture_ids=[], count=0, reason=None, event_id="fedcba9876543211"),
     b'{"at":"2027-01-15T08:00:00.123Z","capture_ids":[],"count":0,"event":"wiped","event_id":"fedcba9876543211"}'),
    (AuditEvent("expired", STAMP, capture_ids=(CID,), count=1, event_id="fedcba9876543212"),
     b'{"at":"2027-01-15T08:00:00.123Z","capture_ids":["abababababababababababababababab"],"count":1,'
     b'"event":"expired","event_id":"fedcba9876543212"}'),
    (AuditEvent("rejected", STAMP, capture_id=CID, reason="signature", event_id="fedcba9876543213"),
     b'{"at":"2027-01-15T08:00:00.123Z","capture_id":"abababababababababababababababab","event":"rejected",'
     b'"event_id":"fedcba9876543213","reason":"signature"}'),
    (AuditEvent("cert-renewed", STAMP, event_id="fedcba9876543214"),
     b'{"at":"2027-01-15T08:00:00.123Z","event":"cert-renewed","event_id":"fedcba9876543214"}'),
    (AuditEvent("update-failed", STAMP, fw="3.0.0"),
     b'{"at":"2027-01-15T08:00:00.123Z","event":"update-failed","fw":"3.0.0"}'),
    (AuditEvent("session-closed", STAMP, session=SESSION, reason="end", count=3),
     b'{"at":"2027-01-15T08:00:00.123Z","count":3,"event":"session-closed","reason":"end",'
     b'"session":"12121212121212121212121212121212"}'),
    (AuditEvent("voided", STAMP, capture_id=CID, reason="pending-wiped", event_id="fedcba9876543215"),
     b'{"at":"2027-01-15T08:00:00.123Z","capture_id":"abababababababababababababababab","event":"voided",'
     b'"event_id":"fedcba9876543215","reason":"pending-wiped"}'),
]


@pytest.mark.parametrize("event,wire", EVENT_CASES)
def test_event_bytes_and_round_trip(event: AuditEvent, wire: bytes) -> None:
    assert event.payload() == wire
    assert event.as_dict() == json.loads(wire)  # what the station's outbox keeps
    assert AuditEvent.parse(wire) == event  # the relay keeps every key a station sends


def test_the_builder_has_exactly_the_readers_keys() -> None:
    assert list(STATUS_FIELDS) == [f.name for f in fields(StationStatus)] == [  # DESIGN §5, plus issue 17's
        "state", "pending", "pending_bytes", "boot", "fw", "uptime_s", "cert_not_after", "clock_synced",
        "renewal", "relay", "trust"]
    assert list(EVENT_FIELDS) == [f.name for f in fields(AuditEvent)] == [
        "event", "at", "capture_id", "capture_ids", "session", "reason", "count", "cmd_id", "fw", "event_id"]
    with pytest.raises(TypeError):
        AuditEvent("x", STAMP, patient="p")  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        StationStatus(state="online", note="p")  # type: ignore[call-arg]


def test_readers_drop_free_text_and_bad_shapes() -> None:
    status: dict[str, Any] = {"state": "online x", "pending": -1, "fw": "0.1.0", "note": "PATIENT",
                              "boot": "PATIENT", "clock_synced": 1, "renewal": {"state": "ok"},
                              "relay": "maybe", "uptime_s": True, "cert_not_after": None}
    assert StationStatus.from_dict(status) == StationStatus(fw="0.1.0")
    assert StationStatus.from_dict(status).as_dict() == {"fw": "0.1.0"}
    event: dict[str, Any] = {"event": "rejected", "reason": "free text", "capture_ids": [CID, "x"],
                             "count": 1, "sig": "AAAA", "at": "yesterday", "event_id": "XYZ"}
    assert AuditEvent.from_dict(event).as_dict() == {"event": "rejected", "count": 1}
    # positive control: the same keys, well-formed, are kept
    assert AuditEvent.from_dict({**event, "reason": "signature"}).reason == "signature"


@pytest.mark.parametrize("payload", [b"", b"\xff", b"[1]", b'"x"', b"{", b"[" * 100000])
def test_not_an_object_is_none(payload: bytes) -> None:
    assert StationStatus.parse(payload) is None and AuditEvent.parse(payload) is None
