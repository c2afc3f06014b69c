"""``clinicam relay cmd`` end to end: a real broker, real station processes, the real CLI.

``OperatorSetup`` is ``station_kit.Setup`` whose site also has an operator identity,
issued by the real ``clinicam provision operator`` before Mosquitto starts, so the broker
runs from the ACL provisioning regenerated (not a test copy). Commands are sent by the
CLI as a separate process, as an engineer would: the running relay's own relay.toml for
the broker, ``--cert``/``--key`` for the operator. The operator may send commands and
read answers, but not write acks nor read captures; the relay's own identity remains a
fallback (and takes over a running relay's session, which the operator does not). The
station's ``--events-json`` stream is the independent witness of what it received. Ids
are synthetic; no PHI exists here.
"""

from __future__ import annotations

import json
import re
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from clinicam.provisioning import identity
from clinicam.provisioning.tlsctx import client_context
from clinicam.relay.config import load_relay_config
from clinicam.relay.remote import Remote, StationSilent, send_command
from clinicam.tools.demo_setup import CLI
from paho.mqtt.enums import CallbackAPIVersion
from station_kit import FAST_UPLINK, PREFIX, WAIT_S, Setup, Station, ids, opening, press, wait_until

pytestmark = pytest.mark.slow
COMMAND_ID = re.compile(r"\(command ([0-9a-f]{16})\)")
OPERATOR = "operator-it-test"


class OperatorSetup(Setup):
    """``Setup`` plus ``operator-it-test``, issued by the CLI before the broker starts."""

    def provision(self) -> None:
        super().provision()
        self.operator_dir = self.workdir / "operator"
        done = subprocess.run([*CLI, "provision", "operator", str(self.site_dir), "--name", "it-test",
                               "--out", str(self.operator_dir)], capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        assert "reload" in done.stdout

    @property
    def operator(self) -> tuple[Path, Path]:
        return self.operator_dir / f"{OPERATOR}.pem", self.operator_dir / f"{OPERATOR}.key"


@pytest.fixture(scope="module")
def module_setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OperatorSetup]:
    with OperatorSetup(tmp_path_factory.mktemp("relay-cmd"), "cmd-ping") as s:
        yield s


@pytest.fixture
def setup(module_setup: OperatorSetup) -> OperatorSetup:
    module_setup.ensure_running()
    return module_setup


def config_as(setup: Setup, name: str, cert: Path, key: Path) -> Path:
    """The demo relay's own relay.toml with another TLS identity."""
    relay = setup.site.relay_dir
    text = setup.relay_config().read_text()
    text = text.replace(f'"{relay / "relay-1.pem"}"', f'"{cert}"').replace(f'"{relay / "relay-1.key"}"', f'"{key}"')
    path = setup.relay_dir / f"{name}.toml"
    path.write_text(text)
    return path


def spare_relay_config(setup: Setup) -> Path:
    return config_as(setup, "cmd-relay-2", *setup.site.relay_files(2))


def relay_cmd(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([*CLI, "relay", "cmd", "--config", str(config), *args],
                          capture_output=True, text=True, timeout=120)
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc


def operator_cmd(setup: OperatorSetup, *args: str) -> subprocess.CompletedProcess[str]:
    """``relay cmd`` as the operator: the running relay's relay.toml, the operator's identity."""
    cert, key = setup.operator
    return relay_cmd(setup.relay_config(), "--cert", str(cert), "--key", str(key), *args)


def relay_connects(setup: Setup) -> int:
    return (setup.relay_dir / "relay.log").read_text().count("relay: connected")


class Client:
    """A plain MQTT 5 client with one identity; records messages and PUBACK/SUBACK codes."""

    def __init__(self, setup: Setup, cert: Path, key: Path, client_id: str) -> None:
        self.messages: list[tuple[str, bytes]] = []
        self.acks: dict[int, list[Any]] = {}
        self.connected = threading.Event()
        self._lock = threading.Lock()
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
        c.tls_set_context(client_context(setup.site_dir / "ca.pem", cert, key))
        c.on_connect = lambda _c, _u, _f, rc, _p: None if rc.is_failure else self.connected.set()
        c.on_subscribe = lambda _c, _u, mid, rcs, _p: self._ack(mid, list(rcs))
        c.on_publish = lambda _c, _u, mid, rc, _p: self._ack(mid, [rc])
        c.on_message = lambda _c, _u, msg: self._got(msg.topic, msg.payload)
        c.connect("127.0.0.1", setup.port, keepalive=30)
        c.loop_start()
        self.client = c
        assert self.connected.wait(WAIT_S), f"{client_id} could not connect"

    def _ack(self, mid: int, codes: list[Any]) -> None:
        with self._lock:
            self.acks[mid] = codes

    def _got(self, topic: str, payload: bytes) -> None:
        with self._lock:
            self.messages.append((topic, payload))

    def _wait_ack(self, mid: int | None) -> list[Any]:
        assert mid is not None
        wait_until(lambda: mid in self.acks, what=f"the broker's answer to message {mid}")
        return self.acks[mid]

    def subscribe(self, topic: str) -> list[Any]:
        return self._wait_ack(self.client.subscribe(topic, qos=1)[1])

    def publish(self, topic: str, payload: bytes) -> Any:
        (code,) = self._wait_ack(self.client.publish(topic, payload, qos=1).mid)
        return code

    def received(self, topic: str) -> list[bytes]:
        with self._lock:
            return [p for t, p in self.messages if t == topic]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def online(setup: Setup, device: str, steps: list[dict[str, object]] | None = None) -> Station:
    station = setup.station(device, steps or [], uplink=FAST_UPLINK)
    station.wait(lambda e: e.get("kind") == "uplink" and e.get("status") == "connected")
    return station


def commands(station: Station) -> list[tuple[str, str]]:
    return [(e["cmd"], e["id"]) for e in station.of("command")]


def test_the_broker_runs_from_the_acl_provisioning_wrote(setup: OperatorSetup) -> None:
    site_acl = (setup.site.broker_dir / "acl").read_text()
    assert f"user {OPERATOR}\ntopic write {PREFIX}/+/cmd\ntopic read {PREFIX}/+/event\n" in site_acl
    assert setup.broker is not None
    assert (setup.broker.workdir / "acl").read_text().startswith(site_acl)  # the broker's copy, unchanged


def test_ping_is_answered_and_no_wait_only_sends(setup: OperatorSetup) -> None:
    station = online(setup, "cmd-ping")
    try:
        done = operator_cmd(setup, "cmd-ping", "ping", "--timeout", "30")
        assert done.returncode == 0, done.stderr
        assert "cmd-ping answered ping" in done.stdout
        (cmd_id,) = COMMAND_ID.findall(done.stdout)
        station.wait(lambda e: e.get("kind") == "command" and e.get("id") == cmd_id)  # its log may trail the answer
        assert commands(station) == [("ping", cmd_id)]  # the station saw exactly this command
    finally:
        assert station.terminate() == 0
    # restarted, the station finds no retained command: the broker holds none to replay
    station = online(setup, "cmd-ping")
    try:
        sent = operator_cmd(setup, "cmd-ping", "identify", "--no-wait")
        assert sent.returncode == 0, sent.stderr
        assert "sent identify to cmd-ping" in sent.stdout and "expires at" in sent.stdout
        (later_id,) = COMMAND_ID.findall(sent.stdout)
        station.wait(lambda e: e.get("kind") == "command" and e.get("id") == later_id)
        assert later_id != cmd_id  # a fresh id each time: the station refuses repeats
        assert commands(station) == [("identify", later_id)]
        assert not [line for line in station.stderr() if "command ignored" in line]
    finally:
        assert station.terminate() == 0


def test_wipe_needs_yes_then_wipes_the_undelivered_captures(setup: OperatorSetup) -> None:
    setup.stop_relay()  # broker up, relay down: the captures stay pending on the station
    who = ids(41)
    steps = [*opening(who), *press(2), {"wait_for": {"sealed": 2}, "timeout_s": 60}]
    station = online(setup, "cmd-wipe", steps)
    try:
        sealed = station.wait_captures("sealed", 2)
        refused = operator_cmd(setup, "cmd-wipe", "wipe")
        assert refused.returncode == 2 and "--yes" in refused.stderr and refused.stdout == ""
        # positive control for "nothing was published": a later ping is the first command it sees
        assert operator_cmd(setup, "cmd-wipe", "ping").returncode == 0
        station.wait(lambda e: e.get("kind") == "command")
        assert [c for c, _ in commands(station)] == ["ping"] and not station.of("wipe")

        done = operator_cmd(setup, "cmd-wipe", "wipe", "--yes")
        assert done.returncode == 0, done.stderr
        assert "wiped 2 undelivered capture(s)" in done.stdout
        assert all(cid in done.stdout for cid in sealed)
        (cmd_id,) = COMMAND_ID.findall(done.stdout)
        station.wait(lambda e: e.get("kind") == "command" and e.get("id") == cmd_id)
        assert commands(station)[-1] == ("wipe", cmd_id)
        (wipe,) = station.of("wipe")
        assert wipe["trigger"] == "remote" and sorted(wipe["capture_ids"]) == sorted(sealed)
        output = refused.stderr + done.stdout + done.stderr
        assert who.patient_a not in output and who.operator not in output
    finally:
        assert station.terminate() == 0


def test_a_running_relay_keeps_its_session_while_the_operator_sends(setup: OperatorSetup) -> None:
    """The operator's client id is its own CN: the relay is not disconnected (compare the
    last test, where the relay's own identity takes its session over)."""
    setup.stop_relay()
    before = relay_connects(setup)
    setup.start_relay()
    wait_until(lambda: relay_connects(setup) > before, what="the relay connected")  # this relay holds the session
    assert setup.broker is not None
    before, log_before = relay_connects(setup), len(setup.broker.log_text())
    station = online(setup, "cmd-beside")
    try:
        done = operator_cmd(setup, "cmd-beside", "ping", "--timeout", "30")
        assert done.returncode == 0, done.stderr
        assert "cmd-beside answered ping" in done.stdout
    finally:
        assert station.terminate() == 0
    broker_log = setup.broker.log_text()[log_before:]
    assert f"as {OPERATOR} " in broker_log  # the command's connection, under its own name
    # no takeover, no disconnection, no reconnection of the relay's session ...
    assert not re.search(r"as relay-1 |Client relay-1 (already connected|disconnected|closed)", broker_log)
    # ... which went on receiving: the station's last status went to relay-1 after the command
    assert re.search(rf"as {OPERATOR} .*Sending PUBLISH to relay-1 \S+ \S+ \S+ \S+ '{PREFIX}/cmd-beside/status'",
                     broker_log, re.S)
    assert relay_connects(setup) == before
    assert setup.relay is not None and setup.relay.poll() is None


def test_the_operator_may_not_acknowledge_nor_read_nor_write_captures(setup: OperatorSetup) -> None:
    """A forged "stored" ack would make a station drop an undelivered photo; a capture
    written by an operator would file a photo for any patient it chose. The station's
    own identity (the only one that may read its ack topic) listens; ``relay-2``'s ack
    and capture reception are the positive controls. Synthetic payloads, no station runs."""
    setup.stop_relay()  # nobody else consumes the synthetic capture
    device = "cmd-acks"
    d = setup.identity_dir(device)
    # ACL probes: topics spelled by hand on purpose (a malformed capture topic among them)
    ack, capture = f"{PREFIX}/{device}/ack", f"{PREFIX}/{device}/capture/c0ffee/0"
    station = Client(setup, d / identity.CERT, d / identity.KEY, device)
    relay = Client(setup, *setup.site.relay_files(2), "relay-2")
    operator = Client(setup, *setup.operator, OPERATOR)
    try:
        assert not station.subscribe(ack)[0].is_failure
        assert not relay.subscribe(f"{PREFIX}/+/capture/#")[0].is_failure
        operator.subscribe(f"{PREFIX}/+/capture/#")  # Mosquitto grants it, then delivers nothing
        operator.subscribe(capture)

        forged = json.dumps({"capture_id": "c0ffee", "status": "stored"}).encode()
        assert operator.publish(ack, forged).is_failure  # PUBACK "Not authorized"
        assert not relay.publish(ack, b'{"capture_id": "c0ffee", "status": "control"}').is_failure
        wait_until(lambda: bool(station.received(ack)), what="the relay's ack at the station")
        assert station.received(ack) == [b'{"capture_id": "c0ffee", "status": "control"}']

        assert not station.publish(capture, b"synthetic part").is_failure
        wait_until(lambda: bool(relay.received(capture)), what="the capture at relay-2")
        assert not operator.publish(f"{PREFIX}/{device}/cmd", b"{}").is_failure  # a later marker ...
        assert operator.publish(f"{PREFIX}/{device}/capture/x/0", b"x").is_failure  # ... and no capture write
        # Nor in its own tree, which the old 'pattern write P/%u/capture/#' granted every CN:
        for own in ("capture/c0ffee/part/0", "capture/c0ffee/manifest", "status", "event"):
            assert operator.publish(f"{PREFIX}/{OPERATOR}/{own}", b"{}").value == 0x87, own  # Not authorized
        assert not station.publish(f"{PREFIX}/{device}/status", b"{}").is_failure  # the station may
        assert operator.messages == []
    finally:
        for c in (operator, relay, station):
            c.close()


def test_offline_station_times_out_and_says_when_the_command_expires(setup: OperatorSetup) -> None:
    station = online(setup, "cmd-gone")
    assert station.terminate() == 0  # a clean stop: its retained status says "offline"
    late = operator_cmd(setup, "cmd-gone", "ping", "--timeout", "1", "--ttl", "60")
    assert late.returncode == 3, late.stderr
    assert "no answer from station cmd-gone" in late.stderr
    assert re.search(r"expires at \d{4}-\d\d-\d\dT[0-9:.]+Z and will be ignored afterwards", late.stderr)
    assert "'offline'" in late.stderr  # the operator may read the retained status
    never = operator_cmd(setup, "cmd-never-seen", "identify", "--timeout", "1")
    assert never.returncode == 3 and "no status of it is known" in never.stderr


@pytest.mark.parametrize("station", ["Cmd-Upper", "ab", "a/b", "cmd-+", "x" * 65])
def test_invalid_station_id_is_refused_before_anything_is_sent(setup: OperatorSetup, station: str) -> None:
    done = operator_cmd(setup, station, "ping")
    assert done.returncode == 2 and "station id" in done.stderr and done.stdout == ""


def test_cert_without_key_is_a_usage_error(setup: OperatorSetup) -> None:
    cert, _ = setup.operator
    done = relay_cmd(setup.relay_config(), "--cert", str(cert), "cmd-ping", "ping")
    assert done.returncode == 2 and "--cert and --key together" in done.stderr and done.stdout == ""


def test_broker_refusal_is_exit_4_with_the_acl_named(setup: OperatorSetup) -> None:
    """A station's certificate may not command another station: the ACL refuses."""
    d = setup.identity_dir("cmd-intruder")
    done = relay_cmd(setup.relay_config(), "--cert", str(d / identity.CERT), "--key", str(d / identity.KEY),
                     "cmd-ping", "ping", "--timeout", "5")
    assert done.returncode == 4, done.stderr
    assert "refused" in done.stderr and "ACL" in done.stderr


def test_the_relay_config_fallback_still_sends(setup: OperatorSetup) -> None:
    """Without --cert/--key the identity of --config is used (here the spare relay-2)."""
    station = online(setup, "cmd-spare")
    try:
        done = relay_cmd(spare_relay_config(setup), "cmd-spare", "ping", "--timeout", "30")
        assert done.returncode == 0, done.stderr
        assert "cmd-spare answered ping" in done.stdout
    finally:
        assert station.terminate() == 0


def test_with_a_clock_two_hours_behind_the_command_arrives_expired_and_is_ignored(setup: OperatorSetup) -> None:
    """``send_command`` with an injected clock: the station's gate refuses the command as
    expired, sends no answer, and the caller learns when it expired; the same call with
    the real clock is answered (the positive control)."""
    target = Remote.from_config(load_relay_config(setup.relay_config()), *setup.operator)
    assert target.client_id == OPERATOR
    station = online(setup, "cmd-clock")
    try:
        past = time.time() - 7200
        with pytest.raises(StationSilent) as silent:
            send_command(target, "cmd-clock", "ping", ttl_s=60, timeout_s=3,
                         wall=lambda: past, new_id=lambda: "clock-old-1")
        assert (silent.value.sent.id, silent.value.sent.expires_at) == ("clock-old-1", past + 60)
        assert silent.value.last_state not in (None, "offline")  # it was online, and ignored it
        wait_until(lambda: any("command ignored (expired)" in line for line in station.stderr()),
                   what="the station's log of the refusal")
        answer = send_command(target, "cmd-clock", "ping", new_id=lambda: "clock-now-2")
        assert answer.event is not None and (answer.event.event, answer.event.cmd_id) == ("ping", "clock-now-2")
        station.wait(lambda e: e.get("kind") == "command" and e.get("id") == "clock-now-2")
        assert commands(station) == [("ping", "clock-now-2")]
    finally:
        assert station.terminate() == 0


def test_sent_as_the_running_relay_the_session_goes_back_to_the_relay_and_the_command_says_so(
        setup: OperatorSetup) -> None:
    """The fallback's known cost: the broker forces client id = CN, so the relay's own
    identity takes over its session. Last, as it bounces the relay."""
    setup.stop_relay()
    before = relay_connects(setup)
    setup.start_relay()
    wait_until(lambda: relay_connects(setup) > before, what="the relay connected")  # it holds the session first
    before = relay_connects(setup)
    done = relay_cmd(setup.relay_config(), "cmd-nobody", "ping", "--timeout", "30")
    assert done.returncode == 4, done.stderr
    assert "another client connected as relay-1" in done.stderr and "operator identity" in done.stderr
    assert re.search(r"it expires at \S+Z and is ignored afterwards", done.stderr)
    wait_until(lambda: relay_connects(setup) > before, what="the relay reconnected")  # it took its session back
    assert setup.relay is not None and setup.relay.poll() is None


def test_a_revoked_operator_is_shut_out_after_the_broker_restarts(setup: OperatorSetup) -> None:
    """``provision revoke`` rewrites the CRL and the ACL; the restarted broker refuses the
    operator (last: this module's operator is gone afterwards). The relay's fallback
    identity, same broker, is the positive control."""
    done = subprocess.run([*CLI, "provision", "revoke", str(setup.site_dir), OPERATOR],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "CRL and ACL rewritten" in done.stdout and "publish-crl" in done.stdout
    assert OPERATOR not in (setup.site.broker_dir / "acl").read_text()
    assert setup.broker is not None
    setup.broker.stop()
    setup.broker.start()  # from the site's broker/ folder: the new CRL and ACL
    assert OPERATOR not in (setup.broker.workdir / "acl").read_text()
    refused = operator_cmd(setup, "cmd-nobody", "ping", "--timeout", "5")
    assert refused.returncode == 4, refused.stderr
    assert "broker" in refused.stderr and "Traceback" not in refused.stderr
    control = relay_cmd(spare_relay_config(setup), "cmd-nobody", "ping", "--timeout", "1")
    assert control.returncode == 3, control.stderr  # connected and sent; nobody answers
