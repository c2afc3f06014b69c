"""Revocation that reaches the broker and the relays over MQTT (issue 17), end to end:
the real Mosquitto with the two-tier site's generated config and ACL, the real broker
agent (``clinicam broker agent``), registrar (``clinicam relay registrar``), relay and
station processes. No file is copied by hand: the revocation is one command on the
registrar host (``clinicam relay revoke``) and everything else travels on ``P/_site/crl``.
"""

from __future__ import annotations

import re
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
from clinicam.provisioning.tlsctx import client_context
from clinicam.tools.demo_setup import CLI, to_toml
from paho.mqtt.enums import CallbackAPIVersion

from tests.integration.station_kit import FAST_UPLINK, WAIT_S, ids, opening, press, wait_until
from tests.integration.test_renewal_e2e import RenewalSetup

GONE, KEEP = "revoke-cart1", "revoke-cart2"


class RevocationSetup(RenewalSetup):
    """The renewal site, with the registrar's own copy of ``crl.pem`` (as installed on the
    relay host) and a broker agent started on demand."""

    agent: subprocess.Popen[bytes] | None = None
    registrar_issuing: dict[str, Any] | None = None  # more [issuing] keys (the rotation test's recipient)

    @property
    def registrar_crl(self) -> Path:
        return self.workdir / "registrar" / "crl.pem"

    def start_registrar(self) -> None:
        reg = self.site.registrar_dir
        if not self.registrar_crl.exists():
            self.registrar_crl.parent.mkdir(parents=True, exist_ok=True)
            self.registrar_crl.write_bytes((self.site_dir / "crl.pem").read_bytes())  # installation
        text = to_toml({
            "broker": {"host": "127.0.0.1", "port": self.port},
            "identity": {"cert": str(reg / "registrar.pem"), "key": str(reg / "registrar.key"),
                         "ca": str(self.site_dir / "ca.pem"), "crl": str(self.registrar_crl)},
            "issuing": {"cert": str(reg / "issuing.pem"), "key": str(reg / "issuing.key"),
                        "journal": str(self.workdir / "registrar" / "journal.jsonl"),
                        "revocations": str(self.workdir / "registrar" / "revocations.jsonl"),
                        **(self.registrar_issuing or {})},
        })
        self.registrar_config = self.workdir / "registrar.toml"
        self.registrar_config.write_text(text)
        log = (self.workdir / "registrar.log").open("ab")
        self.registrar = subprocess.Popen([*CLI, "relay", "registrar", "--config", str(self.registrar_config)],
                                          stdout=log, stderr=log)
        log.close()

    def start_agent(self) -> None:
        assert self.broker is not None and self.broker.pid is not None
        pid_file = self.broker.pid_path  # written by Mosquitto itself: mosquitto.conf's pid_file
        b = self.site.broker_dir
        config = self.workdir / "broker-agent.toml"
        config.write_text(to_toml({
            "broker": {"host": "127.0.0.1", "port": self.port},
            "identity": {"cert": str(b / "agent.pem"), "key": str(b / "agent.key"), "ca": str(b / "ca.pem")},
            "mosquitto": {"crlfile": str(b / "crl.pem"), "acl_file": str(b / "acl"), "pid_file": str(pid_file)},
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
        path = {"agent": self.workdir / "agent.log", "registrar": self.workdir / "registrar.log",
                "relay": self.relay_dir / "relay.log"}[name]
        return path.read_text(errors="replace") if path.exists() else ""


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RevocationSetup]:
    with RevocationSetup(tmp_path_factory.mktemp("revocation"), GONE, devices=[KEEP]) as s:
        yield s


def _connects(setup: RevocationSetup, device: str) -> bool:
    """Whether a fresh MQTT connection with ``device``'s own files gets CONNACK success."""
    d = setup.identity_dir(device)
    done, result = threading.Event(), {"ok": False}

    def on_connect(_c: Any, _u: Any, _f: Any, rc: Any, _p: Any) -> None:
        result["ok"] = not rc.is_failure
        done.set()

    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"{device}", protocol=mqtt.MQTTv5)
    c.tls_set_context(client_context(setup.site_dir / "ca.pem", d / identity.CERT, d / identity.KEY))
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


def test_a_revocation_on_the_registrar_host_reaches_the_relay_and_the_broker_and_cuts_the_station(
        setup: RevocationSetup):
    setup.ensure_running()
    off = {"enabled": False}
    # Positive control: both stations file a photo before the revocation.
    for device, seed in ((GONE, 61), (KEEP, 62)):
        first = setup.station(device, [*opening(ids(seed)), *press()], uplink=FAST_UPLINK, renewal=off)
        assert first.wait_captures("stored", 1)
        setup.stop_station(first.proc)
    broker_crl_before = (setup.site.broker_dir / "crl.pem").read_bytes()
    relay_crl_before = (setup.site_dir / "crl.pem").read_bytes()
    serial = pki.serial_hex(identity.load_identity(setup.identity_dir(GONE)).cert.serial_number)

    # One command on the registrar host. The broker agent is not running yet, so the
    # broker still lets the station in: what refuses its capture is the relay, which
    # took the CRL from P/_site/crl (its own crl.pem is untouched).
    out = subprocess.run([*CLI, "relay", "revoke", "--config", str(setup.registrar_config), "--serial", serial, GONE],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    number = int(re.search(r"revoked in CRL (\d+)", out.stdout).group(1))  # type: ignore[union-attr]
    wait_until(lambda: f"CRL {number} in force (revoked: {GONE})" in setup.log("relay"), what="relay took the CRL")
    station = setup.station(GONE, [*opening(ids(63)), *press()], uplink=FAST_UPLINK, renewal=off)
    station.wait_captures("rejected", 1)
    rejected = [e for e in station.events if e.get("kind") == "capture" and e.get("status") == "rejected"]
    assert rejected[0]["reason"] == "certificate"
    assert station.proc.poll() is None  # still connected, on the broker's old CRL
    assert (setup.site_dir / "crl.pem").read_bytes() == relay_crl_before

    # The broker agent starts, finds the retained bulletin, installs it and reloads
    # Mosquitto; the registrar then takes the revoked station's session over.
    broker = setup.broker
    assert broker is not None
    setup.start_agent()
    wait_until(lambda: f"installed CRL {number}" in setup.log("agent"), what="the agent installed the CRL")
    wait_until(lambda: "already connected, closing old connection" in broker.log_text()
               and f"cut the session of {GONE}" in setup.log("registrar"), what="the session was cut")
    installed = (setup.site.broker_dir / "crl.pem").read_bytes()
    assert installed != broker_crl_before
    issuing = setup.site.issuing
    assert issuing is not None
    crls = trust.load_crls(installed, "broker crl")
    own = [c for c in crls if c.issuer == issuing.subject]
    assert own[0].get_revoked_certificate_by_serial_number(int(serial, 16)) is not None
    acl = (setup.site.broker_dir / "acl").read_text()
    assert f"user {GONE}\n" not in acl and f"user {KEEP}\n" in acl
    # The revoked station cannot come back: the handshake fails on the CRL.
    assert not _connects(setup, GONE)
    setup.stop_station(station.proc)

    # Control: the other station was never cut and keeps filing photos.
    assert "closing old connection" not in "\n".join(
        line for line in broker.log_text().splitlines() if KEEP in line)
    keep = setup.station(KEEP, [*opening(ids(64)), *press()], uplink=FAST_UPLINK, renewal=off)
    stored = keep.wait_captures("stored", 1)
    assert stored[0] in setup.stored_ids(KEEP)
    setup.stop_station(keep.proc)


def test_an_older_or_forged_bulletin_changes_nothing(setup: RevocationSetup):
    """The agent refuses a replayed CRL number; the relay keeps the newer CRL."""
    from clinicam.protocol import revocation as rv
    from clinicam.relay.brokeragent import AgentCore, load_agent_config

    config = load_agent_config(setup.workdir / "broker-agent.toml")
    reloads: list[int] = []
    core = AgentCore(config, lambda: reloads.append(1))
    issuing, key = setup.site.issuing, setup.site.issuing_key()
    assert issuing is not None
    old = trust.load_crls((setup.site_dir / "crl.pem").read_bytes(), "site crl")  # CRL number 1
    stale = rv.build_bulletin(crls=old, revoked=[], at=pki.utcnow(), signer_key=key,  # type: ignore[arg-type]
                              signer_cert=issuing)
    before = (setup.site.broker_dir / "crl.pem").read_bytes()
    with pytest.raises(rv.RevocationError, match="older"):
        core.install(stale)
    assert (setup.site.broker_dir / "crl.pem").read_bytes() == before and not reloads
    assert core.installed_number() == 1 + max(rv.crl_number(c) for c in old if c.issuer == issuing.subject)


def test_the_admin_brings_the_register_in_step_over_the_channel(setup: RevocationSetup):
    """``provision import-revocations`` reads the registrar's retained bulletin as the
    ``admin`` identity: the register marks the station revoked and no later ACL
    regeneration re-admits it (runs after the revocation above)."""
    setup.ensure_running()
    assert setup.registrar is not None and setup.registrar.poll() is None
    assert any(r.revoked_at is None for r in setup.site.records() if r.id == GONE)  # the admin does not know yet
    out = subprocess.run([*CLI, "provision", "import-revocations", str(setup.site_dir), "--broker-port",
                          str(setup.port)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert f"recorded revoked {GONE}" in out.stdout
    assert all(r.revoked_at for r in setup.site.records() if r.id == GONE)
    assert all(r.revoked_at is None for r in setup.site.records() if r.id == KEEP)
    setup.site.write_acl()  # e.g. the next 'sign': the revoked station stays out
    acl = (setup.site.broker_dir / "acl").read_text()
    assert f"user {GONE}\n" not in acl and f"user {KEEP}\n" in acl
