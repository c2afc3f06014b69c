"""Revocations by the root reach the broker and the relays over MQTT too (issue 17): a
single-tier site revoking a station, and a two-tier site revoking an operator identity.

Real Mosquitto (run from its own copy of ``SITE/broker/``, as on a broker host, with the
generated ``pid_file``), the real broker agent, relay and station processes. The admin
runs one command, ``clinicam provision revoke SITE ID --publish``: it signs the root's
CRL, publishes the bulletin on ``P/_site/crl-root`` as the ``admin`` identity, waits for
the agent's receipt and takes the revoked identity's session over. Nobody copies a
file: the broker host and the relay host read only their own copies, untouched.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from clinicam.protocol import chain as trust
from clinicam.provisioning import identity, pki
from clinicam.provisioning.operators import issue_operator
from clinicam.provisioning.site import Site
from clinicam.provisioning.tlsctx import client_context
from clinicam.tools.brokerproc import Mosquitto
from clinicam.tools.demo_setup import CLI, to_toml
from paho.mqtt.enums import CallbackAPIVersion

from tests.integration.station_kit import FAST_UPLINK, PREFIX, WAIT_S, Setup, ids, opening, press, wait_until

GONE, KEEP = "root-cart1", "root-cart2"
OPERATOR = "operator-jane"


class HostsSetup(Setup):
    """A site whose broker and relay hosts hold their own copies of the site's files."""

    tiers = 1
    agent: subprocess.Popen[bytes] | None = None

    def provision(self) -> None:
        self.site = Site.create(self.site_dir, "Root Clinic", ["127.0.0.1", "localhost"], port=self.port,
                                relays=2, kem="x25519", tiers=self.tiers)
        for device in self.devices:
            self.identity_dir(device)
        if self.tiers == 2:
            issue_operator(self.site, "jane", self.workdir / "operator")

    @property
    def broker_host(self) -> Path:
        return self.workdir / "broker-host"

    def start_broker(self) -> None:
        shutil.copytree(self.site.broker_dir, self.broker_host)  # installation on the broker host
        self.broker = Mosquitto(self.broker_host, self.workdir / "broker", port=self.port).start()

    def relay_config(self) -> Path:
        path = super().relay_config()
        own = self.relay_dir / "crl.pem"
        if not own.exists():
            own.write_bytes((self.site_dir / "crl.pem").read_bytes())  # installation on the relay host
        path.write_text(path.read_text().replace(str(self.site_dir / "crl.pem"), str(own)))
        return path

    def start_agent(self) -> None:
        assert self.broker is not None
        host = self.broker_host
        config = self.workdir / "broker-agent.toml"
        config.write_text(to_toml({
            "broker": {"host": "127.0.0.1", "port": self.port},
            "identity": {"cert": str(host / "agent.pem"), "key": str(host / "agent.key"), "ca": str(host / "ca.pem")},
            # the files Mosquitto reads; the pid file is the one mosquitto.conf's pid_file names
            "mosquitto": {"crlfile": str(host / "crl.pem"), "acl_file": str(self.broker.workdir / "acl"),
                          "pid_file": str(self.broker.pid_path)},
        }))
        log = (self.workdir / "agent.log").open("ab")
        self.agent = subprocess.Popen([*CLI, "broker", "agent", "--config", str(config)], stdout=log, stderr=log)
        log.close()

    def close(self) -> None:
        if self.agent is not None and self.agent.poll() is None:
            self.agent.send_signal(signal.SIGTERM)
            try:
                self.agent.wait(10)
            except subprocess.TimeoutExpired:
                self.agent.kill()
        super().close()

    def log(self, name: str) -> str:
        path = {"agent": self.workdir / "agent.log", "relay": self.relay_dir / "relay.log"}[name]
        return path.read_text(errors="replace") if path.exists() else ""

    def revoke(self, target: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*CLI, "provision", "revoke", str(self.site_dir), target, "--publish",
                               "--timeout", "60"], capture_output=True, text=True, timeout=120)


class TwoTierHosts(HostsSetup):
    tiers = 2


def _client(setup: HostsSetup, name: str, cert: Path, key: Path, on_gone: threading.Event | None = None) -> bool:
    """Whether ``name`` gets CONNACK success; with ``on_gone``, stays connected and sets it
    when the broker closes the connection."""
    done, result = threading.Event(), {"ok": False}

    def on_connect(_c: Any, _u: Any, _f: Any, rc: Any, _p: Any) -> None:
        result["ok"] = not rc.is_failure
        done.set()

    def on_disconnect(*_a: Any) -> None:
        done.set()
        if on_gone is not None and result["ok"]:
            on_gone.set()

    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=name, protocol=mqtt.MQTTv5)
    c.tls_set_context(client_context(setup.site_dir / "ca.pem", cert, key))
    c.on_connect, c.on_disconnect = on_connect, on_disconnect
    try:
        c.connect("127.0.0.1", setup.port, keepalive=10)
    except OSError:
        return False
    c.loop_start()
    done.wait(WAIT_S)
    if on_gone is None or not result["ok"]:
        c.disconnect()
        c.loop_stop()
    else:
        c.subscribe(f"{PREFIX}/+/status", qos=1)
        c.reconnect_delay_set(60, 60)  # no quick comeback: the test checks a fresh connection itself
    return result["ok"]


def _station_connects(setup: HostsSetup, device: str) -> bool:
    d = setup.identity_dir(device)
    return _client(setup, device, d / identity.CERT, d / identity.KEY)


def _root_crl_lists(setup: HostsSetup, path: Path, serial: str) -> bool:
    crls = trust.load_crls(path.read_bytes(), str(path))
    root = [c for c in crls if c.issuer == setup.site.ca.subject]
    return root[0].get_revoked_certificate_by_serial_number(int(serial, 16)) is not None


@pytest.fixture(scope="module")
def single(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HostsSetup]:
    with HostsSetup(tmp_path_factory.mktemp("root-single"), GONE, devices=[KEEP]) as s:
        yield s


@pytest.fixture(scope="module")
def two(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TwoTierHosts]:
    with TwoTierHosts(tmp_path_factory.mktemp("root-two"), KEEP) as s:
        yield s


def test_a_single_tier_site_revokes_a_station_over_the_channel(single: HostsSetup):
    setup = single
    setup.ensure_running()
    setup.start_agent()
    off = {"enabled": False}
    for device, seed in ((GONE, 71), (KEEP, 72)):  # positive control: both file a photo
        first = setup.station(device, [*opening(ids(seed)), *press()], uplink=FAST_UPLINK, renewal=off)
        assert first.wait_captures("stored", 1)
        setup.stop_station(first.proc)
    broker_crl, relay_crl = setup.broker_host / "crl.pem", setup.relay_dir / "crl.pem"
    relay_before = relay_crl.read_bytes()
    serial = pki.serial_hex(identity.load_identity(setup.identity_dir(GONE)).cert.serial_number)
    assert not _root_crl_lists(setup, broker_crl, serial)
    # The revoked station is connected (its session is idle between photos) while the admin revokes.
    station = setup.station(GONE, [*opening(ids(73))], uplink=FAST_UPLINK, renewal=off)
    station.wait_script()

    out = setup.revoke(GONE)
    assert out.returncode == 0, out.stderr
    assert f"cut the session of {GONE}" in out.stdout
    broker = setup.broker
    assert broker is not None
    wait_until(lambda: "already connected, closing old connection" in broker.log_text(), what="session taken over")
    assert "installed CRL" in setup.log("agent")
    assert _root_crl_lists(setup, broker_crl, serial)  # the broker host's crlfile, written by the agent
    acl = (broker.workdir / "acl").read_text()  # what Mosquitto reads
    assert f"user {GONE}\n" not in acl and f"user {KEEP}\n" in acl
    wait_until(lambda: f"(revoked: {GONE})" in setup.log("relay"), what="the relay took the CRL")
    assert relay_crl.read_bytes() == relay_before  # nobody copied a file to the relay host
    assert not _station_connects(setup, GONE)  # the handshake fails on the CRL
    setup.stop_station(station.proc)

    # Control: the other station was never cut and still files.
    keep = setup.station(KEEP, [*opening(ids(74)), *press()], uplink=FAST_UPLINK, renewal=off)
    assert keep.wait_captures("stored", 1)
    setup.stop_station(keep.proc)


def test_a_root_level_revocation_cuts_an_operator_on_a_two_tier_site(two: TwoTierHosts):
    setup = two
    setup.ensure_running()
    setup.start_agent()
    op = setup.workdir / "operator"
    cert, key = op / f"{OPERATOR}.pem", op / f"{OPERATOR}.key"
    gone = threading.Event()
    assert _client(setup, OPERATOR, cert, key, on_gone=gone)  # connected, reading statuses
    serial = pki.serial_hex(pki.load_cert(cert).serial_number)

    out = setup.revoke(OPERATOR)
    assert out.returncode == 0, out.stderr
    assert f"cut the session of {OPERATOR}" in out.stdout
    assert gone.wait(WAIT_S), "the operator's open connection was not cut"
    assert _root_crl_lists(setup, setup.broker_host / "crl.pem", serial)
    issuing = setup.site.issuing
    assert issuing is not None  # the issuing CA's CRL is still in the broker's crlfile
    assert any(c.issuer == issuing.subject for c in trust.load_crls((setup.broker_host / "crl.pem").read_bytes(),
                                                                       "broker crl"))
    assert setup.broker is not None
    assert f"user {OPERATOR}\n" not in (setup.broker.workdir / "acl").read_text()
    wait_until(lambda: f"(revoked: {OPERATOR})" in setup.log("relay"), what="the relay took the CRL")
    assert not _client(setup, OPERATOR, cert, key)  # cannot reconnect

    # Control: a station of the same site files a photo afterwards.
    keep = setup.station(KEEP, [*opening(ids(75)), *press()], uplink=FAST_UPLINK, renewal={"enabled": False})
    assert keep.wait_captures("stored", 1)
    setup.stop_station(keep.proc)
