"""Only station identities put photos into the record (DESIGN §3.5, §5, §7), end to end.

A real Mosquitto from the generated config and ACL, the real relay process (``clinicam
relay run``, directory sink), and the site's own identities: an operator issued by
``provision operator`` and the spare relay worker ``relay-2``. Each publishes, on its
own tree, a capture it sealed validly with its own site-signed certificate, a void it
signed, and a status:

* with the generated ACL the broker refuses every one of them (PUBACK 135 "Not
  authorized"), and the ``admin-test`` watcher (reads ``#``) proves none was delivered;
* with an ACL that still has the old ``pattern`` rules (a site not yet migrated), the
  broker lets them through and the relay itself refuses them: ``rejected``/``identity``
  for the capture, nothing filed, nothing audited, the status not listed.

``station-a`` doing the same is the positive control each time. Ids are synthetic.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from clinicam.protocol.manifest import sign_event
from clinicam.protocol.recipient import load_recipient_public
from clinicam.protocol.sealing import SealedCapture, Sealer
from clinicam.protocol.topics import DEFAULT_PREFIX
from clinicam.provisioning import pki
from clinicam.provisioning.operators import issue_operator
from clinicam.tools.brokerproc import Mosquitto
from clinicam.tools.demo_setup import CLI, to_toml
from station_kit import wait_until

P = DEFAULT_PREFIX  # ACL probes: topics spelled by hand on purpose (the broker's rules are the subject)
NOT_AUTHORIZED = 0x87
ADMIN_ACL = "user admin-test\ntopic read #\n"
# What every site's ACL said before this fix: Mosquitto applies these to every client.
OLD_PATTERNS = "\n".join(f"pattern {rule}" for rule in (
    f"write {P}/%u/capture/#", f"write {P}/%u/status", f"write {P}/%u/event",
    f"read {P}/%u/ack", f"read {P}/%u/cmd"))
STATUS = json.dumps({"state": "idle", "pending": 0, "pending_bytes": 0, "boot": "0" * 32,
                     "fw": "test", "uptime_s": 1, "cert_not_after": None, "clock_synced": True}).encode()


@dataclass(frozen=True)
class Who:
    name: str
    cert: Path
    key: Path


@pytest.fixture(scope="module")
def operator(site: Any, tmp_path_factory: pytest.TempPathFactory) -> Who:
    """A real operator identity of the session's site (its ACL block regenerated)."""
    op = issue_operator(site.site, "it-intruder", tmp_path_factory.mktemp("operator"))
    return Who(op.cn, op.cert, op.key)


@pytest.fixture
def intruders(site: Any, operator: Who) -> list[Who]:
    cert, key = site.site.relay_files(2)
    return [operator, Who("relay-2", cert, key)]


def station(site: Any) -> Who:
    ident = site.device("station-a")
    return Who("station-a", ident.cert, ident.key)


def seal(site: Any, who: Who, image: bytes = b"\xff\xd8synthetic\xff\xd9") -> SealedCapture:
    """A capture sealed exactly as a station seals, with ``who``'s own certificate and key."""
    recipient = load_recipient_public(site.recipient_pub_path.read_bytes())
    sealer = Sealer(who.name, pki.load_key(who.key), who.cert.read_bytes(), recipient, chunk_size=4096)
    return sealer.seal(bytearray(image * 20), {"patient": {"id": "SYNTH-0000", "issuer": "test",
                                                           "encounter": None}})


def capture_messages(who: str, cap: SealedCapture) -> list[tuple[str, bytes]]:
    base = f"{P}/{who}/capture/{cap.capture_id}"
    return [*((f"{base}/part/{i}", bytes(p)) for i, p in enumerate(cap.parts)), (f"{base}/manifest", cap.manifest)]


def void_message(who: Who, capture_id: str) -> tuple[str, bytes]:
    event = {"event": "void", "at": "2026-11-26T12:00:00.000Z", "capture_id": capture_id}
    return f"{P}/{who.name}/event", json.dumps(sign_event(event, pki.load_key(who.key))).encode()


class RelayProcess:
    """``clinicam relay run`` against one broker, filing into a directory sink."""

    def __init__(self, site: Any, broker: Mosquitto, work: Path) -> None:
        self.work, self.out, self.status = work, work / "out", work / "status.json"
        work.mkdir(parents=True, exist_ok=True)
        relay = site.site.relay_dir
        self.config = work / "relay.toml"
        self.config.write_text(to_toml(
            {"relay": {"state_dir": str(work / "state"), "status_file": str(self.status),
                       "audit_log": str(work / "audit.jsonl")},
             "broker": {"host": "127.0.0.1", "port": broker.port},
             "identity": {"cert": str(relay / "relay-1.pem"), "key": str(relay / "relay-1.key"),
                          "ca": str(site.ca_pem), "crl": str(site.dir / "crl.pem"),
                          "recipient_keys": [str(site.recipient_key_path)]}},
            {"sinks": [{"type": "directory", "name": "archive", "path": str(self.out)}]}))
        self.log = work / "relay.log"
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen([*CLI, "relay", "run", "--config", str(self.config)],
                                         stdout=log, stderr=log)
        # "running" is printed once the broker granted the stations' subscriptions (the
        # presence and CRL SUBACKs come first): from then on nothing sent to it is missed
        wait_until(lambda: "clinicam relay: running" in self.log.read_text(),
                   what="the relay's subscription")

    def filed(self) -> list[str]:
        return sorted(p.parent.name for p in self.out.rglob("*.jpg")) if self.out.exists() else []

    def stations(self) -> dict[str, Any]:
        return dict(json.loads(self.status.read_text())["stations"]) if self.status.exists() else {}

    def counters(self) -> dict[str, int]:
        return dict(json.loads(self.status.read_text())["counters"]) if self.status.exists() else {}

    def audit(self) -> list[dict[str, Any]]:
        path = self.work / "audit.jsonl"
        return [json.loads(ln) for ln in path.read_text().splitlines()] if path.exists() else []

    def status_cli(self) -> str:
        done = subprocess.run([*CLI, "relay", "status", "--config", str(self.config)],
                              capture_output=True, text=True, timeout=60)
        assert done.returncode in (0, 1), done.stderr  # 1: warnings (a quiet test station)
        return done.stdout

    def stop(self) -> str:
        self.proc.terminate()
        self.proc.wait(30)
        text = self.log.read_text()
        assert "Traceback" not in text, text
        return text


@pytest.fixture
def start_relay(site: Any, tmp_path: Path) -> Iterator[Callable[[Mosquitto], RelayProcess]]:
    started: list[RelayProcess] = []

    def start(broker: Mosquitto) -> RelayProcess:
        relay = RelayProcess(site, broker, tmp_path / f"relay-{len(started)}")
        started.append(relay)
        return relay

    yield start
    for relay in started:
        relay.stop()


def acks_of(watcher: Any, device: str, capture_id: str) -> list[dict[str, Any]]:
    """Drain the watcher; the acks the relay sent for ``(device, capture_id)``."""
    seen = []
    while not watcher.messages.empty():
        msg = watcher.messages.get_nowait()
        if msg.topic == f"{P}/{device}/ack":
            body = json.loads(msg.payload)
            if body["capture_id"] == capture_id:
                seen.append(body)
    return seen


def wait_ack(watcher: Any, device: str, capture_id: str) -> dict[str, Any]:
    got: list[dict[str, Any]] = []
    wait_until(lambda: bool(got.extend(acks_of(watcher, device, capture_id)) or got),
               what=f"the relay's ack for {device}/{capture_id}")
    return got[0]


def send(client: Any, messages: list[tuple[str, bytes]], **kw: Any) -> list[int]:
    return [client.probe.publish(topic, payload, **kw).value for topic, payload in messages]


def file_control(site: Any, mqtt_client: Callable[..., Any], broker: Mosquitto, watcher: Any) -> str:
    """station-a files a capture and publishes its status: the relay is up and listening."""
    a = mqtt_client(site.device("station-a"), broker=broker)
    cap = seal(site, station(site))
    assert max(send(a, capture_messages("station-a", cap))) < 0x80
    assert send(a, [(f"{P}/station-a/status", STATUS)], retain=True) == [0]
    assert wait_ack(watcher, "station-a", cap.capture_id)["status"] == "stored"
    return cap.capture_id


def test_the_broker_refuses_captures_voids_and_statuses_of_operators_and_relays(
        site: Any, intruders: list[Who], broker: Mosquitto, mqtt_client: Callable[..., Any],
        start_relay: Callable[[Mosquitto], RelayProcess]) -> None:
    watcher = mqtt_client(site.admin).probe
    assert watcher.subscribe(f"{P}/#").value < 0x80
    relay = start_relay(broker)
    control = file_control(site, mqtt_client, broker, watcher)  # positive control, before
    for who in intruders:
        client = mqtt_client(_ident(site, who), broker=broker)
        cap = seal(site, who)
        refused = send(client, capture_messages(who.name, cap))
        refused += send(client, [void_message(who, cap.capture_id)])
        refused += send(client, [(f"{P}/{who.name}/status", STATUS)], retain=True)
        assert refused == [NOT_AUTHORIZED] * (len(cap.parts) + 3), who.name
        # A marker the identity may write: whatever the broker had delivered of the
        # refused messages would reach the watcher before it.
        marker = f"{P}/station-b/cmd" if who.name.startswith("operator") else f"{P}/station-b/ack"
        assert send(client, [(marker, b'{"capture_id": "marker"}')]) == [0]
        seen = []
        while True:
            msg = watcher.next_message()
            seen.append(msg.topic)
            if msg.topic == marker:
                break
        assert not any(f"/{who.name}/" in t for t in seen), seen
    again = file_control(site, mqtt_client, broker, watcher)  # positive control, after
    assert relay.filed() == ["station-a", "station-a"]
    # the status file is rewritten within a second (coalesced), not per message: wait for
    # the one written after the second control capture, i.e. after everything above
    wait_until(lambda: relay.counters().get("stored", 0) >= 2, what="the status file after both controls")
    assert sorted(relay.stations()) == ["station-a"]
    listing = relay.status_cli()
    assert "station-a" in listing and not any(w.name in listing for w in intruders)
    assert {control, again} <= {line.get("capture_id") for line in relay.audit()}
    assert {line["device"] for line in relay.audit()} == {"station-a"}


def _ident(site: Any, who: Who) -> Any:
    """A TLS identity like the session fixture's, for ``who``'s files."""
    return type(site.admin)(who.name, site.ca_pem, who.cert, who.key)


def test_past_an_old_pattern_acl_the_relay_itself_refuses_them(
        site: Any, intruders: list[Who], broker_factory: Callable[..., Mosquitto],
        mqtt_client: Callable[..., Any], start_relay: Callable[[Mosquitto], RelayProcess]) -> None:
    """A site that has not regenerated its ACL: the broker lets service identities write
    their own tree (PUBACK 0), and the relay's station-profile check stands behind it."""
    legacy = broker_factory("legacy", acl_extra=ADMIN_ACL + OLD_PATTERNS + "\n")
    watcher = mqtt_client(site.admin, broker=legacy).probe
    assert watcher.subscribe(f"{P}/#").value < 0x80
    relay = start_relay(legacy)
    file_control(site, mqtt_client, legacy, watcher)  # positive control
    for who in intruders:
        client = mqtt_client(_ident(site, who), broker=legacy)
        cap = seal(site, who)
        assert max(send(client, capture_messages(who.name, cap))) < 0x80  # the old ACL's hole
        ack = wait_ack(watcher, who.name, cap.capture_id)
        assert (ack["status"], ack["reason"], ack["ref"]) == ("rejected", "identity", None)
        assert send(client, [void_message(who, cap.capture_id)]) == [0]
        assert send(client, [(f"{P}/{who.name}/status", STATUS)], retain=True) == [0]
        for leaf in ("event", "status"):
            line = f"refused {leaf} message on a service identity's topic ({who.name}): not a station"
            wait_until(lambda line=line: line in relay.log.read_text(), what=f"the relay refusing the {leaf}")
    file_control(site, mqtt_client, legacy, watcher)  # positive control, after
    assert relay.filed() == ["station-a", "station-a"]
    # the status file is rewritten within a second (coalesced), not per message: wait for
    # the one written after the second control capture, i.e. after everything above
    wait_until(lambda: relay.counters().get("stored", 0) >= 2, what="the status file after both controls")
    assert sorted(relay.stations()) == ["station-a"]
    listing = relay.status_cli()
    assert "station-a" in listing and not any(w.name in listing for w in intruders)
    stations_audited = {line["device"] for line in relay.audit() if line["source"] == "station"}
    assert stations_audited <= {"station-a"}
    decisions = {(line["device"], line["decision"], line["reason"]) for line in relay.audit()
                 if line["source"] == "relay" and line["device"] != "station-a"}
    assert decisions == {(w.name, "rejected", "identity") for w in intruders}
