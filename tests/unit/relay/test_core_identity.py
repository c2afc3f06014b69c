"""Only station certificates put photos into the record (DESIGN §3.5, §4, §7).

These tests bypass the broker's ACL: the relay core is handed what a site-signed
operator or relay identity could publish if the ACL let it through (captures sealed
with their own, validly issued certificates; voids signed with their keys; statuses).
None may be filed, acked ``stored``, audited or listed as a station.
"""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from clinicam.protocol.acks import Ack
from clinicam.protocol.manifest import sign_event
from clinicam.protocol.sealing import SealedCapture
from clinicam.protocol.topics import Topics
from clinicam.provisioning import pki
from clinicam.relay.audit import AuditLog
from clinicam.relay.core import RelayCore
from clinicam.relay.sinks.directory import DirectorySink

T = Topics()
SERVICES = ("operator-x", "relay-9")


def messages(device: str, cap: SealedCapture) -> list[tuple[str, bytes]]:
    return [*((T.part(device, cap.capture_id, i), bytes(p)) for i, p in enumerate(cap.parts)),
            (T.manifest(device, cap.capture_id), cap.manifest)]


def feed(core: RelayCore, msgs: list[tuple[str, bytes]]) -> list[Ack]:
    return [ack for topic, payload in msgs for ack in core.handle(topic, payload)]


@pytest.fixture
def core(unit_site: Any, tmp_path: Path) -> RelayCore:
    return RelayCore(ca_cert=unit_site.ca_cert, recipients=[unit_site.recipient],
                     sinks=[DirectorySink(tmp_path / "out")], audit=AuditLog(tmp_path / "a.jsonl"))


def filed(tmp_path: Path) -> list[str]:
    out = tmp_path / "out"
    return sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()) if out.exists() else []


@pytest.mark.parametrize("who", SERVICES)
def test_service_identity_capture_is_identity_and_not_filed(
        core: RelayCore, unit_site: Any, tmp_path: Path, who: str) -> None:
    control = unit_site.seal("station-a", b"x" * 1500)
    assert [a.status for a in feed(core, messages("station-a", control))] == ["stored"]  # positive control
    cap = unit_site.seal(who, b"y" * 1500)
    acks = feed(core, messages(who, cap))
    assert [(a.device, a.status, a.reason) for a in acks] == [(who, "rejected", "identity")]
    assert filed(tmp_path) == [f"station-a/{control.capture_id}.{ext}" for ext in ("jpg", "json")]
    assert core.ledger.get(who, cap.capture_id) is None
    assert core.reassembler.sweep() == []  # its parts were never buffered


@pytest.mark.parametrize("who", SERVICES)
def test_service_identity_status_is_never_listed_as_a_station(
        core: RelayCore, who: str) -> None:
    status = json.dumps({"state": "idle", "pending": 0}).encode()
    core.handle(T.status("station-a"), status)  # positive control
    core.handle(T.status(who), status)
    assert sorted(core.board.stations) == ["station-a"]
    assert core.board.counters["refused-non-station"] == 1


@pytest.mark.parametrize("who", SERVICES)
def test_service_identity_void_and_events_are_refused(
        core: RelayCore, unit_site: Any, tmp_path: Path, who: str) -> None:
    cap = unit_site.seal("station-a", b"x" * 1500)
    feed(core, messages("station-a", cap))
    event = {"event": "void", "at": "2026-11-26T12:00:00.000Z", "capture_id": cap.capture_id}
    core.handle(T.event(who), json.dumps(sign_event(event, unit_site.keys[who])).encode())
    core.handle(T.event(who), json.dumps({"event": "wiped", "at": event["at"]}).encode())
    assert not (tmp_path / "out" / "station-a" / f"{cap.capture_id}.void").exists()
    assert [line["device"] for line in core.audit.lines if line["source"] == "station"] == []
    assert core.board.counters["refused-non-station"] == 2
    good = sign_event(event, unit_site.keys["station-a"])  # positive control
    core.handle(T.event("station-a"), json.dumps(good).encode())
    assert (tmp_path / "out" / "station-a" / f"{cap.capture_id}.void").exists()


def test_pre_policy_certificate_is_retry_identity_never_filed(
        core: RelayCore, unit_site: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    cap = unit_site.seal("station-old", b"z" * 1500)
    for _ in range(3):  # the station re-sends with back-off
        acks = feed(core, messages("station-old", cap))
        assert [(a.status, a.reason) for a in acks] == [("retry", "identity")]  # kept by the station
    assert filed(tmp_path) == []
    assert core.board.counters["refused-pre-policy-certificate"] == 3
    said = [r.getMessage() for r in caplog.records if "predates the station profile" in r.getMessage()]
    assert len(said) == 1 and "station-old" in said[0] and "renew" in said[0]  # once per station


def test_pre_policy_certificate_accepted_only_during_the_grace_period(
        unit_site: Any, tmp_path: Path) -> None:
    now = pki.utcnow()
    cap = unit_site.seal("station-old", b"z" * 1500)

    def relay(until: Any) -> RelayCore:
        return RelayCore(ca_cert=unit_site.ca_cert, recipients=[unit_site.recipient],
                         sinks=[DirectorySink(tmp_path / str(until))], legacy_until=until,
                         utc=lambda: now)

    over = feed(relay(now - timedelta(seconds=1)), messages("station-old", cap))
    assert [(a.status, a.reason) for a in over] == [("retry", "identity")]
    during = feed(relay(now + timedelta(days=30)), messages("station-old", cap))
    assert [a.status for a in during] == ["stored"]
    # the grace period never turns a service identity into a station
    op = unit_site.seal("operator-x", b"y" * 1500)
    assert [(a.status, a.reason) for a in feed(relay(now + timedelta(days=30)),
                                               messages("operator-x", op))] == [("rejected", "identity")]


def test_deeply_nested_metadata_gets_an_ack_rejected_image(core: RelayCore, unit_site: Any,
                                                           tmp_path: Path) -> None:
    """A RecursionError inside opening must not leave the station without an answer."""
    deep = 100_000

    def part0(size: int, sha: str) -> bytes:
        return (b'{"image":{"size":%d,"sha256":"%s"},"x":' % (size, sha.encode())) + b"[" * deep + b"]" * deep + b"}"

    cap = unit_site.sealers["station-a"]._seal_raw(memoryview(bytearray(b"x" * 1500)), part0)
    acks = feed(core, messages("station-a", cap))
    assert [(a.status, a.reason) for a in acks] == [("rejected", "image")]
    assert filed(tmp_path) == []
    good = unit_site.seal("station-a", b"y" * 1500)  # the relay goes on
    assert [a.status for a in feed(core, messages("station-a", good))] == ["stored"]


def test_deeply_nested_status_or_event_is_malformed_not_a_crash(core: RelayCore) -> None:
    deep = b"[" * 100_000 + b"]" * 100_000
    for leaf in ("status", "event"):
        topic = T.status("station-a") if leaf == "status" else T.event("station-a")
        assert core.handle(topic, b'{"state":' + deep + b"}") == []
    assert core.board.counters["malformed-station-message"] == 2
