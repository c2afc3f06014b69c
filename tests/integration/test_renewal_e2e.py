"""Certificate renewal over MQTT, end to end (issue 17): the real Mosquitto with the
two-tier site's generated config and ACL, the real registrar process (``clinicam relay
registrar``), the real relay and a real station process on simulated hardware.

The station's certificate is signed for 30 days, inside the default 60-day margin, so
the renewal is due at once: the clock is made short by configuration, not by sleeping.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from clinicam.protocol import renewal as rn
from clinicam.provisioning import identity, pki
from clinicam.provisioning.operators import issue_operator
from clinicam.provisioning.site import Site
from clinicam.provisioning.tlsctx import client_context
from clinicam.tools.demo_setup import CLI, to_toml
from cryptography.hazmat.primitives import serialization
from paho.mqtt.enums import CallbackAPIVersion

from tests.integration.station_kit import FAST_UPLINK, PREFIX, WAIT_S, Setup, Watcher, ids, opening, press

DEVICE, OTHER, GONE = "renew-cart1", "renew-cart2", "renew-cart9"


class RenewalSetup(Setup):
    """A two-tier site; stations signed for 30 days; the registrar running beside the relay."""

    registrar: subprocess.Popen[bytes] | None = None

    def provision(self) -> None:
        self.site = Site.create(self.site_dir, "Demo Hospital", ["127.0.0.1", "localhost"], port=self.port,
                                relays=2, tiers=2)
        for device in self.devices:
            self.identity_dir(device)

    def identity_dir(self, device: str) -> Path:
        d = self.stations_dir / device / "identity"
        if not (d / identity.CERT).exists():
            csr = identity.create_device_key(d, device)
            self.site.sign(csr.read_bytes(), days=30)
            identity.install(identity.InstallFiles.from_bundle(
                self.site.bundle(device, self.workdir / "bundles" / device)), d)
            if self.broker is not None and self.broker.running:
                self.broker.reload()
        return d

    def start_relay(self) -> None:
        super().start_relay()
        if self.registrar is None or self.registrar.poll() is not None:
            self.start_registrar()  # once: a relay restart must not leave a second registrar running

    def start_registrar(self) -> None:
        reg = self.site.registrar_dir
        text = to_toml({
            "broker": {"host": "127.0.0.1", "port": self.port},
            "identity": {"cert": str(reg / "registrar.pem"), "key": str(reg / "registrar.key"),
                         "ca": str(self.site_dir / "ca.pem"), "crl": str(self.site_dir / "crl.pem")},
            "issuing": {"cert": str(reg / "issuing.pem"), "key": str(reg / "issuing.key"),
                        "journal": str(self.workdir / "registrar" / "journal.jsonl")},
        })
        config = self.workdir / "registrar.toml"
        config.write_text(text)
        log = (self.workdir / "registrar.log").open("ab")
        self.registrar = subprocess.Popen([*CLI, "relay", "registrar", "--config", str(config)],
                                          stdout=log, stderr=log)
        log.close()

    def close(self) -> None:
        if self.registrar is not None and self.registrar.poll() is None:
            self.registrar.send_signal(signal.SIGTERM)
            try:
                self.registrar.wait(10)
            except subprocess.TimeoutExpired:
                self.registrar.kill()
        super().close()

    def journal(self) -> list[dict[str, Any]]:
        path = self.workdir / "registrar" / "journal.jsonl"
        return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RenewalSetup]:
    with RenewalSetup(tmp_path_factory.mktemp("renewal"), DEVICE, devices=[OTHER, GONE]) as s:
        yield s


class Client:
    """A bare MQTT 5 client with some identity's files, reading its subscriptions."""

    def __init__(self, setup: RenewalSetup, name: str, cert: Path, key: Path) -> None:
        self.messages: list[tuple[str, bytes]] = []
        self.cond = threading.Condition()
        self.acks: dict[int, int] = {}
        ready = threading.Event()
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=name, protocol=mqtt.MQTTv5)
        c.tls_set_context(client_context(setup.site_dir / "ca.pem", cert, key))
        c.on_connect = lambda *_a: ready.set()
        c.on_message = self._message
        c.on_publish = self._puback
        c.on_subscribe = self._suback
        self.subacks: set[int] = set()
        c.connect("127.0.0.1", setup.port, keepalive=30)
        c.loop_start()
        assert ready.wait(WAIT_S)
        self.c = c

    def _message(self, _c: Any, _u: Any, msg: mqtt.MQTTMessage) -> None:
        with self.cond:
            self.messages.append((msg.topic, bytes(msg.payload)))
            self.cond.notify_all()

    def _puback(self, _c: Any, _u: Any, mid: int, rc: Any, _p: Any) -> None:
        with self.cond:
            self.acks[mid] = int(rc.value)
            self.cond.notify_all()

    def _suback(self, _c: Any, _u: Any, mid: int, codes: list[Any], _p: Any) -> None:
        assert all(not code.is_failure for code in codes)
        with self.cond:
            self.subacks.add(mid)
            self.cond.notify_all()

    def subscribe(self, topic: str) -> None:
        _, mid = self.c.subscribe(topic, qos=1)
        with self.cond:
            assert self.cond.wait_for(lambda: mid in self.subacks, WAIT_S)

    def publish(self, topic: str, payload: bytes) -> int:
        """Publish at QoS 1 and return the PUBACK reason code (>= 0x80: refused)."""
        mid = self.c.publish(topic, payload, qos=1).mid
        with self.cond:
            assert self.cond.wait_for(lambda: mid in self.acks, WAIT_S)
            return self.acks[mid]

    def answer(self, topic: str, req_id: str) -> rn.RenewalAnswer:
        def found() -> list[rn.RenewalAnswer]:
            got = [rn.parse_answer(p) for t, p in self.messages if t == topic]
            return [a for a in got if a.req_id == req_id]
        with self.cond:
            assert self.cond.wait_for(found, WAIT_S), f"no answer on {topic}"
            return found()[0]

    def close(self) -> None:
        self.c.disconnect()
        self.c.loop_stop()


def _request(d: Path, device: str) -> tuple[bytes, str]:
    """A well-formed renewal request made with the identity in ``d`` (for ``device``)."""
    ident = identity.load_identity(d)
    req_id = os.urandom(16).hex()
    csr = pki.make_csr(pki.new_key(), device).public_bytes(serialization.Encoding.PEM).decode()
    payload = rn.build_request(device=device, req_id=req_id, at=datetime.now(UTC), csr_pem=csr,
                               cert_pem=ident.cert_pem.decode(), current_key=ident.key)
    return payload, req_id


def test_a_station_renews_by_itself_and_its_status_shows_the_new_expiry(setup: RenewalSetup):
    d = setup.identity_dir(DEVICE)
    before = identity.load_identity(d)
    watcher = Watcher(setup)
    try:
        station = setup.station(DEVICE, [], uplink=FAST_UPLINK, renewal={"retry_min_s": 1.0,
                                                                         "answer_timeout_s": 10.0})
        try:
            renewed = watcher.wait(lambda: [s for s in watcher.statuses(DEVICE)
                                            if (s.get("renewal") or {}).get("state") == "installed"])
        except TimeoutError as exc:
            raise AssertionError("\n".join(station.stderr()[-30:])) from exc
        status = renewed[0]
        after = identity.load_identity(d)
        assert after.cert.serial_number != before.cert.serial_number
        assert after.not_after > before.not_after
        assert status["cert_not_after"] == f"{after.not_after:%Y-%m-%dT%H:%M:%S}.000Z"
        assert after.cert.issuer == setup.site.issuing.subject  # type: ignore[union-attr]
        assert watcher.events(DEVICE, "cert-renewed")
        assert not (d / "next.key").exists() and not (d / "next.pem").exists()
        assert [e["outcome"] for e in setup.journal() if e["device"] == DEVICE] == ["issued"]
        assert station.proc.poll() is None  # never went down for it
        # The renewed station files a photo: the relay verifies the chain through the issuing CA.
        setup.stop_station(station.proc)
        again = setup.station(DEVICE, [*opening(ids(41)), *press()], uplink=FAST_UPLINK)
        stored = again.wait_captures("stored", 1)
        assert stored[0] in setup.stored_ids(DEVICE)
        setup.stop_station(again.proc)
    finally:
        watcher.close()


def test_renewal_requests_from_an_operator_another_station_or_a_revoked_station_are_refused(
        setup: RenewalSetup):
    setup.ensure_running()
    reg = setup.registrar
    assert reg is not None and reg.poll() is None
    other_dir, gone_dir = setup.identity_dir(OTHER), setup.identity_dir(GONE)
    other = Client(setup, OTHER, other_dir / identity.CERT, other_dir / identity.KEY)
    op = issue_operator(setup.site, "renewtest", setup.workdir / "operator")
    operator = Client(setup, op.cn, op.cert, op.key)
    gone = Client(setup, GONE, gone_dir / identity.CERT, gone_dir / identity.KEY)
    try:
        # ACL probes (who may ask for whom): topics spelled by hand on purpose
        for c, name in ((other, OTHER), (gone, GONE)):
            c.subscribe(f"{PREFIX}/{name}/cert")
        # Positive control: OTHER asks for itself, on its own topic, and is answered.
        payload, req = _request(other_dir, OTHER)
        assert other.publish(f"{PREFIX}/{OTHER}/renew", payload) < 0x80
        assert other.answer(f"{PREFIX}/{OTHER}/cert", req).status == "issued"
        # Another station's identity: the broker refuses OTHER on DEVICE's topic…
        forged, _ = _request(other_dir, OTHER)
        assert other.publish(f"{PREFIX}/{DEVICE}/renew", forged) >= 0x80
        # …and on its own topic, a request for DEVICE with OTHER's certificate is refused.
        payload, req = _request(other_dir, DEVICE)
        assert other.publish(f"{PREFIX}/{OTHER}/renew", payload) < 0x80
        ans = other.answer(f"{PREFIX}/{OTHER}/cert", req)
        assert (ans.status, ans.reason) == ("refused", "identity")
        # An operator identity may not even ask (no ACL right), for itself or for a station.
        assert operator.publish(f"{PREFIX}/{op.cn}/renew", _request(other_dir, OTHER)[0]) >= 0x80
        assert operator.publish(f"{PREFIX}/{DEVICE}/renew", _request(other_dir, DEVICE)[0]) >= 0x80
        # A revoked station, still connected (the broker has not reloaded yet): the
        # registrar re-reads the CRL and refuses.
        setup.site.revoke(GONE)
        payload, req = _request(gone_dir, GONE)
        assert gone.publish(f"{PREFIX}/{GONE}/renew", payload) < 0x80
        ans = gone.answer(f"{PREFIX}/{GONE}/cert", req)
        assert (ans.status, ans.reason) == ("refused", "revoked")
        outcomes = {(e["device"], e["outcome"], e["reason"]) for e in setup.journal()}
        assert (GONE, "refused", "revoked") in outcomes and (OTHER, "issued", None) in outcomes
        assert not [e for e in setup.journal() if e["device"] == GONE and e["outcome"] == "issued"]
    finally:
        for c in (other, operator, gone):
            c.close()


class SingleTierSetup(Setup):
    """A single-tier site (``--tiers 1``, no registrar): stations signed for 30 days."""

    tiers = 1

    def identity_dir(self, device: str) -> Path:
        d = self.stations_dir / device / "identity"
        if not (d / identity.CERT).exists():
            csr = identity.create_device_key(d, device)
            self.site.sign(csr.read_bytes(), days=30)
            identity.install(identity.InstallFiles.from_bundle(
                self.site.bundle(device, self.workdir / "bundles" / device)), d)
        return d


def test_on_a_single_tier_site_the_broker_refuses_the_request_and_the_station_stays_online(
        tmp_path_factory: pytest.TempPathFactory):
    with SingleTierSetup(tmp_path_factory.mktemp("renewal-1tier"), "onetier-cart1") as s:
        watcher = Watcher(s)
        try:
            station = s.station("onetier-cart1", [*opening(ids(42)), *press()], uplink=FAST_UPLINK)
            refused = watcher.wait(lambda: [st for st in watcher.statuses("onetier-cart1")
                                            if (st.get("renewal") or {}).get("reason") == "not-allowed"])
            assert refused[0]["state"] == "online"
            assert station.wait_captures("stored", 1)  # delivery goes on
            assert station.proc.poll() is None
        finally:
            watcher.close()


def test_the_running_relay_refuses_a_station_once_its_crl_names_it(setup: RenewalSetup):
    """The relay re-reads ``crl.pem`` when it changes: no restart between the revocation
    and the first refused capture. (The broker is deliberately not reloaded here, so the
    revoked station still gets through to the relay.)"""
    setup.ensure_running()
    device = "renew-cart7"
    setup.identity_dir(device)  # signed, the broker reloaded for its ACL block
    first = setup.station(device, [*opening(ids(43)), *press()], uplink=FAST_UPLINK,
                          renewal={"enabled": False})
    assert first.wait_captures("stored", 1)  # control: the same station, before revocation
    setup.stop_station(first.proc)
    relay = setup.relay
    assert relay is not None
    setup.site.revoke(device)  # rewrites crl.pem in place, as an admin's copy would
    second = setup.station(device, [*opening(ids(44)), *press()], uplink=FAST_UPLINK,
                           renewal={"enabled": False})
    second.wait_captures("rejected", 1)
    rejected = [e for e in second.events if e.get("kind") == "capture" and e.get("status") == "rejected"]
    assert rejected[0]["reason"] == "certificate"
    assert setup.relay is relay and relay.poll() is None  # the same relay process throughout
    setup.stop_station(second.proc)
