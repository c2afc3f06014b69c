"""CA rotation without visiting a station (issue 17), end to end: the real Mosquitto (run
from its own copy of ``broker/``, as on the broker host, which only the broker agent
changes), the real broker agent, registrar, relay and two station processes on
simulated hardware.

``clinicam provision rotate-ca`` makes the new root and issuing CA and a trust update
signed by the old root; the relay host gets the new files; the registrar publishes the
update. The broker agent installs it into Mosquitto's cafile (SIGHUP), each running
station installs it into its ``ca.pem`` and — its certificate not being from the new
issuing CA — renews at once, long before its renewal margin: no clock is moved and
nobody waits for days. Then ``rotate-ca --finish`` retires the old root: the services
get certificates under the new root, a last update (signed by the new root) makes the
broker refuse the old one, and the stations, booted again, still file photos.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from clinicam.protocol import chain as trust
from clinicam.provisioning import identity, pki
from clinicam.tools.brokerproc import Mosquitto
from clinicam.tools.demo_setup import CLI, to_toml
from cryptography import x509
from cryptography.hazmat.primitives import hashes

from tests.integration.station_kit import FAST_UPLINK, WAIT_S, Station, Watcher, ids, opening, press, wait_until
from tests.integration.test_revocation_e2e import RevocationSetup

CARTS = ("rot-cart1", "rot-cart2")
RENEWAL = {"retry_min_s": 1.0, "retry_max_s": 5.0, "answer_timeout_s": 10.0}


class RotationSetup(RevocationSetup):
    """The revocation site; stations signed for a year (their renewal margin is far off);
    the broker runs from ``broker-host/``, a copy of the site's ``broker/``."""

    @property
    def broker_host(self) -> Path:
        return self.workdir / "broker-host"

    @property
    def trust_file(self) -> Path:
        return self.workdir / "registrar" / "trust.json"

    def identity_dir(self, device: str) -> Path:
        d = self.stations_dir / device / "identity"
        if not (d / identity.CERT).exists():
            csr = identity.create_device_key(d, device)
            self.site.sign(csr.read_bytes())
            identity.install(identity.InstallFiles.from_bundle(
                self.site.bundle(device, self.workdir / "bundles" / device)), d)
        return d

    def start_broker(self) -> None:
        if not self.broker_host.exists():
            shutil.copytree(self.site.broker_dir, self.broker_host)  # installed on the broker host
        self.broker = Mosquitto(self.broker_host, self.workdir / "broker", port=self.port).start()

    def start_registrar(self) -> None:
        self.registrar_issuing = {"trust": str(self.trust_file)} if self.trust_file.exists() else None
        super().start_registrar()

    def restart_registrar(self) -> None:
        if self.registrar is not None:
            self.registrar.terminate()
            self.registrar.wait(10)
        self.start_registrar()

    def start_agent(self) -> None:
        assert self.broker is not None and self.broker.pid is not None
        pid_file = self.workdir / "mosquitto.pid"
        pid_file.write_text(f"{self.broker.pid}\n")
        b = self.broker_host
        config = self.workdir / "broker-agent.toml"
        config.write_text(to_toml({
            "broker": {"host": "127.0.0.1", "port": self.port},
            "identity": {"cert": str(b / "agent.pem"), "key": str(b / "agent.key"), "ca": str(b / "ca.pem")},
            "mosquitto": {"crlfile": str(b / "crl.pem"), "acl_file": str(b / "acl"), "pid_file": str(pid_file),
                          "cafile": str(b / "ca.pem")},
        }))
        log = (self.workdir / "agent.log").open("ab")
        self.agent = subprocess.Popen([*CLI, "broker", "agent", "--config", str(config)], stdout=log, stderr=log)
        log.close()

    def restart_agent(self) -> None:
        if self.agent is not None:
            self.agent.terminate()
            self.agent.wait(10)
        self.start_agent()

    def relay_host_takes_the_site_files(self) -> None:
        """What the administrator copies to the relay host: the relays read the site's
        ca.pem, chain.pem and crl.pem directly; the registrar has its own crl.pem."""
        shutil.copy(self.site_dir / "crl.pem", self.registrar_crl)
        self.stop_relay()
        self.start_relay()
        self.restart_registrar()

    def announce(self) -> None:
        """The administrator copies SITE/trust.json over the registrar's [issuing] trust."""
        self.trust_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.trust_file.with_suffix(".tmp")
        shutil.copy(self.site_dir / "trust.json", tmp)
        tmp.replace(self.trust_file)


def _cli(*args: str) -> str:
    out = subprocess.run([*CLI, "provision", *args], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout


def _fp(cert: x509.Certificate) -> str:
    return cert.fingerprint(hashes.SHA256()).hex()


def _on(watcher: Watcher, device: str, root: x509.Certificate) -> list[dict[str, Any]]:
    """Statuses of ``device`` that say it is on ``root`` with a certificate renewed over MQTT."""
    return [s for s in watcher.statuses(device)
            if (s.get("trust") or {}).get("root") == _fp(root) and (s.get("renewal") or {}).get("state") == "installed"]


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RotationSetup]:
    with RotationSetup(tmp_path_factory.mktemp("ca-rotation"), CARTS[0], devices=[CARTS[1]]) as s:
        yield s


def _file_one(setup: RotationSetup, device: str, seed: int) -> str:
    station = setup.station(device, [*opening(ids(seed)), *press()], uplink=FAST_UPLINK, renewal=RENEWAL)
    stored = station.wait_captures("stored", 1)
    assert stored[0] in setup.stored_ids(device)
    setup.stop_station(station.proc)
    return stored[0]


def test_a_ca_rotation_ends_with_every_station_on_the_new_chain(setup: RotationSetup):
    r1, i1 = setup.site.ca, setup.site.issuing
    assert i1 is not None
    setup.start_agent()
    watcher = Watcher(setup)
    stations: list[Station] = []
    try:
        for device in CARTS:
            stations.append(setup.station(device, [], uplink=FAST_UPLINK, renewal=RENEWAL))
        for device in CARTS:  # control: both online on the old root, no renewal due
            first = watcher.wait(lambda d=device: [s for s in watcher.statuses(d) if s.get("state") == "online"])
            assert first[-1]["trust"] == {"number": None, "root": _fp(r1)}
            assert first[-1]["renewal"]["state"] == "idle"

        # 1. On the admin machine: the new generation and the first trust update (signed by R1).
        out = _cli("rotate-ca", str(setup.site_dir))
        assert "CA rotation started" in out
        setup.site = type(setup.site)(setup.site_dir)
        r2, i2 = setup.site.ca, setup.site.issuing
        assert i2 is not None and r2.subject != r1.subject
        # 2. The relay host takes the new files (relays, registrar on I2, the update).
        setup.announce()
        setup.relay_host_takes_the_site_files()

        # 3. Nobody visits a station: the agent installs the roots into Mosquitto, every
        # station installs them, renews under I2 at once and reconnects with it.
        wait_until(lambda: "installed trust update 1" in setup.log("agent"), what="the agent installed the update")
        cafile = trust.load_certs((setup.broker_host / "ca.pem").read_bytes(), "broker cafile")
        assert {c.subject for c in cafile} == {r1.subject, r2.subject, i1.subject, i2.subject}
        for device, station in zip(CARTS, stations, strict=True):
            try:
                watcher.wait(lambda d=device: _on(watcher, d, r2))
            except TimeoutError as exc:
                raise AssertionError(station.transcript() + setup.log("registrar")[-3000:]) from exc
            assert watcher.events(device, "trust-changed") and watcher.events(device, "cert-renewed")
            assert station.proc.poll() is None  # never went down for it
            ident = identity.load_identity(setup.identity_dir(device))
            assert ident.cert.issuer == i2.subject
            assert [c.subject for c in ident.anchors] == [r2.subject, r1.subject]
            assert trust.TrustStore(ident.anchors, ident.chain).path(ident.cert)[-1] == r2
            # far from its margin: the renewal was the rotation's, not the calendar's
            assert (ident.not_after - pki.utcnow()).days > 300
        for station in stations:
            setup.stop_station(station.proc)
        stations.clear()
        # Booted again on the new files, each station files a photo the relay verifies via I2 → R2.
        for n, device in enumerate(CARTS):
            _file_one(setup, device, 81 + n)
    finally:
        for station in stations:
            setup.stop_station(station.proc)
        watcher.close()

    # 4. Finish: every station is on I2 (the register learns the renewals from the journal).
    _cli("import-renewals", str(setup.site_dir), str(setup.workdir / "registrar" / "journal.jsonl"))
    old_relay = setup.workdir / "old-relay-2"
    old_relay.mkdir()
    for f in setup.site.relay_files(2):
        shutil.copy(f, old_relay / f.name)
    out = _cli("rotate-ca", str(setup.site_dir), "--finish")
    assert "CA rotation finished" in out
    setup.site = type(setup.site)(setup.site_dir)
    assert trust.load_certs(setup.site.ca_pem.read_bytes(), "ca.pem") == [r2]
    # The services' new certificates first (broker host: server and agent; relay host: the rest)…
    for name in ("broker.pem", "broker.key", "agent.pem", "agent.key"):
        shutil.copy(setup.site.broker_dir / name, setup.broker_host / name)
    assert setup.broker is not None
    setup.broker.reload()
    setup.restart_agent()
    setup.relay_host_takes_the_site_files()
    # …then the last update, signed by R2: the broker drops R1, the stations too.
    setup.announce()
    wait_until(lambda: "installed trust update 2" in setup.log("agent"), what="the agent retired the old root")
    cafile = trust.load_certs((setup.broker_host / "ca.pem").read_bytes(), "broker cafile")
    assert {c.subject for c in cafile} == {r2.subject, i2.subject}
    watcher = Watcher(setup)  # relay-2's new certificate, under R2
    try:
        for device in CARTS:
            station = setup.station(device, [], uplink=FAST_UPLINK, renewal=RENEWAL)
            d = setup.identity_dir(device)
            wait_until(lambda d=d: trust.load_certs((d / "ca.pem").read_bytes(), "ca.pem") == [r2],
                       what=f"{device} dropped the old root")
            setup.stop_station(station.proc)
            _file_one(setup, device, 91 + CARTS.index(device))
        # The old root is retired at the broker: a certificate it signed no longer connects
        # (the same check passes with the new relay-2 certificate: the watcher is in).
        ok = _connect_with(setup, old_relay / "relay-2.pem", old_relay / "relay-2.key", "relay-2")
        assert not ok
    finally:
        watcher.close()


def _connect_with(setup: RotationSetup, cert: Path, key: Path, client_id: str) -> bool:
    """Whether a fresh MQTT connection with these files gets CONNACK success."""
    import threading

    import paho.mqtt.client as mqtt
    from clinicam.provisioning.tlsctx import client_context
    from paho.mqtt.enums import CallbackAPIVersion

    done, result = threading.Event(), {"ok": False}

    def on_connect(_c: Any, _u: Any, _f: Any, rc: Any, _p: Any) -> None:
        result["ok"] = not rc.is_failure
        done.set()

    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
    c.tls_set_context(client_context(setup.site_dir / "ca.pem", cert, key))
    c.on_connect = on_connect
    c.on_disconnect = lambda *_a: done.set()
    try:
        c.connect("127.0.0.1", setup.port, keepalive=10)
    except OSError:
        return False
    c.loop_start()
    done.wait(WAIT_S)
    c.disconnect()
    c.loop_stop()
    return result["ok"]

