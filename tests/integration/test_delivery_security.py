"""Delivery under attack and abuse (issue 5 "Must show", part 2), on the real broker.

Raw clients (the ``mqtt_client`` fixture) play a misbehaving or compromised station;
every "refused" shows the same client succeeding where it should.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from clinicam.firmware.workflow.events import (
    CommandIgnored,
    CommandReceived,
    FaultReported,
)
from clinicam.protocol.commands import Command
from clinicam.protocol.manifest import manifest_message
from clinicam.protocol.sealing import Sealer
from clinicam.protocol.topics import DEFAULT_PREFIX, Topics
from clinicam.provisioning.identity import load_identity
from clinicam.relay.reassembly import Reassembler
from test_delivery_support import (
    archived,
    jpeg_like,
    make_core,
    make_station,
    metadata,
    next_json,
    publish_capture,
    start_relay,
)

P = DEFAULT_PREFIX
T = Topics(P)


def sealer(site: Any, name: str, **kw: Any) -> Sealer:
    ident = load_identity(site.device(name).dir)
    return Sealer(ident.device_id, ident.key, ident.cert_pem, ident.recipient, **kw)


def seal(s: Sealer, size: int = 150_000, seed: int = 1) -> Any:
    return s.seal(bytearray(jpeg_like(size, seed)), metadata())


@pytest.fixture
def relay(site: Any, broker: Any, tmp_path: Path) -> Iterator[Any]:
    r = start_relay(site, broker.port, make_core(
        site, tmp_path, reassembler=Reassembler(max_part_bytes=50_000, max_age_s=1.0)))
    yield r
    r.stop()


def client_for(mqtt_client: Any, site: Any, name: str) -> Any:
    c = mqtt_client(site.device(name))
    assert c.probe.subscribe(T.ack(name)).value < 0x80
    return c


def test_a_cannot_publish_into_b_and_nothing_is_stored(
        site: Any, relay: Any, mqtt_client: Any, tmp_path: Path) -> None:
    a = client_for(mqtt_client, site, "station-a")
    cap = seal(sealer(site, "station-a"), 20_000)
    codes = publish_capture(a, P, "station-b", cap)
    assert codes and all(code == 135 for code in codes)  # not authorized
    # positive control: the same client, on its own topics, is accepted and filed
    assert all(code < 0x80 for code in publish_capture(a, P, "station-a", cap))
    assert next_json(a, T.ack("station-a"))["status"] == "stored"
    assert list(archived(tmp_path / "archive")) == [cap.capture_id]
    assert not (tmp_path / "archive" / "station-b").exists()


def test_manifest_signed_by_a_under_b_topic_is_identity(
        site: Any, relay: Any, mqtt_client: Any, tmp_path: Path) -> None:
    b = client_for(mqtt_client, site, "station-b")  # a compromised station B
    cap = seal(sealer(site, "station-a"), 20_000)
    publish_capture(b, P, "station-b", cap)
    ack = next_json(b, T.ack("station-b"))
    assert ack == {"capture_id": cap.capture_id, "status": "rejected", "reason": "identity",
                   "ref": None}
    assert archived(tmp_path / "archive") == {}


def test_a_reusing_b_capture_id_cannot_mark_b_stored(
        site: Any, relay: Any, mqtt_client: Any, tmp_path: Path) -> None:
    b = client_for(mqtt_client, site, "station-b")
    cap_b = seal(sealer(site, "station-b"), 20_000, seed=2)
    forced = bytes.fromhex(cap_b.capture_id)
    sneaky = sealer(site, "station-a", boot_id="1" * 32,
                    rng=lambda n: forced if n == 16 else os.urandom(n))
    cap_a = seal(sneaky, 20_000, seed=3)
    assert cap_a.capture_id == cap_b.capture_id
    a = client_for(mqtt_client, site, "station-a")
    publish_capture(a, P, "station-a", cap_a)
    assert next_json(a, T.ack("station-a"))["ref"] == {
        "directory": f"station-a/{cap_a.capture_id}"}
    assert relay.core.ledger.get("station-b", cap_b.capture_id) is None
    assert b.probe.messages.empty()  # B heard no ack for "its" capture
    publish_capture(b, P, "station-b", cap_b)
    assert next_json(b, T.ack("station-b"))["ref"] == {
        "directory": f"station-b/{cap_b.capture_id}"}
    root = tmp_path / "archive"
    assert (root / "station-a" / f"{cap_a.capture_id}.jpg").read_bytes() == jpeg_like(20_000, 3)
    assert (root / "station-b" / f"{cap_b.capture_id}.jpg").read_bytes() == jpeg_like(20_000, 2)


def test_identical_resend_reacked_changed_manifest_is_duplicate_conflict(
        site: Any, relay: Any, mqtt_client: Any) -> None:
    a = client_for(mqtt_client, site, "station-a")
    cap = seal(sealer(site, "station-a"), 20_000)
    publish_capture(a, P, "station-a", cap)
    first = next_json(a, T.ack("station-a"))
    publish_capture(a, P, "station-a", cap)
    assert next_json(a, T.ack("station-a")) == first
    m = json.loads(cap.manifest)["m"]
    m["seq"] += 1  # validly signed by A, but not the manifest that was filed
    changed = manifest_message(m, load_identity(site.device("station-a").dir).key)
    publish_capture(a, P, "station-a", cap, manifest=changed)
    assert next_json(a, T.ack("station-a")) == {
        "capture_id": cap.capture_id, "status": "rejected", "reason": "duplicate-conflict",
        "ref": None}


def test_bad_input_rejected_with_reasons_valid_captures_still_flow(
        site: Any, relay: Any, mqtt_client: Any, tmp_path: Path) -> None:
    a = client_for(mqtt_client, site, "station-a")
    s = sealer(site, "station-a", chunk_size=40_000)
    ack_topic = T.ack("station-a")

    def answer(cid: str) -> tuple[str, str | None]:
        ack = next_json(a, ack_topic)
        assert ack["capture_id"] == cid
        return ack["status"], ack["reason"]

    cid = "ab" * 16
    a.probe.publish(T.manifest("station-a", cid), b"\x00garbage\xff")
    assert answer(cid) == ("rejected", "malformed")
    a.probe.publish(T.manifest("station-a", cid), b'{"m": {}, "sig": "AA=="}')
    assert answer(cid) == ("rejected", "malformed")
    a.probe.publish(T.part("station-a", cid, 0), b"x" * 60_000)  # > 50 kB limit
    assert answer(cid) == ("rejected", "too-large")
    a.probe.publish(f"{P}/station-a/capture/not-a-capture", b"x")  # malformed on purpose: no answer, no crash
    a.probe.publish(T.status("station-a"), b"[not a status")
    missing = seal(s, 100_000, seed=4)
    publish_capture(a, P, "station-a", missing, skip=[2])
    assert answer(missing.capture_id) == ("retry", "incomplete-timeout")
    good = seal(s, 100_000, seed=5)
    publish_capture(a, P, "station-a", good)
    assert answer(good.capture_id) == ("stored", None)
    assert list(archived(tmp_path / "archive")) == [good.capture_id]
    reasons = [d["reason"] for d in relay.core.audit.lines if d.get("decision") == "rejected"]
    assert reasons == ["malformed", "malformed", "too-large"]


def cmd(name: str, cmd_id: str, issued: float, expires: float) -> bytes:
    return Command(name, cmd_id, issued, expires).payload()  # as the relay sends it


def test_retained_or_expired_wipe_does_nothing_live_wipe_does(
        site: Any, broker: Any, mqtt_client: Any) -> None:
    import time

    relay_client = mqtt_client(site.relay(2))  # relays may write P/+/cmd
    admin = mqtt_client(site.admin)
    admin.probe.subscribe(T.event("station-a"))
    now = time.time()
    topic = T.cmd("station-a")
    assert relay_client.probe.publish(topic, cmd("wipe", "stale-1", now, now + 600),
                                      retain=True).value < 0x80
    station = make_station(site, "station-a", broker.port)
    try:
        station.uplink.stop()  # no relay here anyway; keep the captures in the vault
        ids = [station.capture(jpeg_like(10_000, seed=i)) for i in range(2)]
        station.uplink.start()
        station.wait_for(lambda seen: CommandIgnored("retained") in seen)
        relay_client.probe.publish(topic, cmd("wipe", "old-2", now - 7200, now - 3600))
        station.wait_for(lambda seen: CommandIgnored("expired") in seen)
        assert sorted(station.vault.ids()) == sorted(ids)
        # positive control: a live command wipes, and is answered with its id
        relay_client.probe.publish(topic, cmd("wipe", "live-3", now, now + 60))
        station.wait_for(lambda seen: CommandReceived("wipe", "live-3") in seen)
        assert station.vault.pending_count == 0
        answer = next_json(admin, T.event("station-a"))
        while answer["event"] != "wipe":
            answer = next_json(admin, T.event("station-a"))
        assert answer["cmd_id"] == "live-3" and sorted(answer["capture_ids"]) == sorted(ids)
        assert answer["count"] == 2
    finally:
        station.uplink.stop()


def test_part_too_big_for_broker_is_configuration_error_not_a_loop(
        site: Any, broker: Any, relay: Any, mqtt_client: Any) -> None:
    admin = mqtt_client(site.admin)
    admin.probe.subscribe(f"{P}/station-a/#")
    station = make_station(site, "station-a", broker.port)
    station.sealer = sealer(site, "station-a", chunk_size=200_000)  # > 128 KiB broker limit
    try:
        cid = station.capture(jpeg_like(300_000, seed=8))
        station.wait_for(lambda seen: FaultReported("too-large", cid) in seen)
        event = next_json(admin, T.event("station-a"))
        assert event["event"] == "config-error" and event["reason"] == "too-large"
        status = next_json(admin, T.status("station-a"))
        while status["state"] != "misconfigured":
            status = next_json(admin, T.status("station-a"))
        assert station.vault.ids() == [cid]  # kept, never lost, never resent in a loop
        assert not any("/part/" in m.topic for m in list(admin.probe.messages.queue))
    finally:
        station.uplink.stop()


def test_undelivered_past_ttl_expires_with_audit_event(
        site: Any, broker: Any, mqtt_client: Any) -> None:
    from clinicam.common.clock import ManualClock
    from clinicam.firmware.capture.vault import Vault
    from clinicam.firmware.workflow.events import CapturesExpired

    clock = ManualClock(monotonic=1000.0)
    admin = mqtt_client(site.admin)
    admin.probe.subscribe(T.event("station-a"))
    station = make_station(site, "station-a", broker.port, vault=Vault(ttl_s=600, clock=clock.monotonic),
                           clock=clock)
    try:
        cid = station.capture(jpeg_like(10_000, seed=1))  # no relay: it stays pending
        clock.advance(601)
        station.uplink.wake()
        station.wait_for(lambda seen: CapturesExpired((cid,)) in seen)
        assert station.vault.pending_count == 0
        event = next_json(admin, T.event("station-a"))
        assert event["event"] == "expired" and event["capture_ids"] == [cid]
        assert event["count"] == 1
    finally:
        station.uplink.stop()
