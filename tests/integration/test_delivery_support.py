"""Helpers for the delivery tests: in-process stations and relays on the real broker.

A ``Station`` is the real chain minus hardware: the installed identity, ``Sealer``,
``Vault``, ``Wiper`` and ``Uplink``; a relay is ``RelayCore`` + ``Relay`` with a
``DirectorySink``. No test here sleeps: they wait on events with a deadline.
"""

from __future__ import annotations

import json
import queue
import random
import select
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from clinicam.firmware.capture.vault import Vault
from clinicam.firmware.capture.wipe import Wiper
from clinicam.firmware.uplink.client import Uplink
from clinicam.firmware.workflow.events import CaptureStored
from clinicam.protocol.recipient import load_recipient_private
from clinicam.protocol.sealing import Sealer
from clinicam.protocol.topics import Topics
from clinicam.provisioning.identity import load_identity
from clinicam.relay.audit import AuditLog
from clinicam.relay.core import RelayCore
from clinicam.relay.ledger import Ledger
from clinicam.relay.partition import Partition
from clinicam.relay.records import StatusBoard
from clinicam.relay.service import Relay
from clinicam.relay.sinks import Sink
from clinicam.relay.sinks.directory import DirectorySink
from cryptography import x509

WAIT = 60.0  # an upper bound on waiting for the real thing, never a delay that must pass


def jpeg_like(size: int, seed: int, marker: bytes = b"") -> bytes:
    """Incompressible bytes framed like a JPEG (the relay never decodes the image)."""
    body = random.Random(seed).randbytes(max(0, size - 4 - len(marker)))
    return b"\xff\xd8" + marker + body + b"\xff\xd9"


def metadata(patient: str = "SYNTH-0000001") -> dict[str, Any]:
    return {"patient": {"id": patient, "issuer": "TEST", "encounter": None},
            "purpose": "WOUND", "session": {"id": "0" * 32, "index": 1}}


@dataclass
class Station:
    """One station's delivery chain, talking to the broker like the real one."""

    name: str
    uplink: Uplink
    vault: Vault
    sealer: Sealer
    wiper: Wiper
    events: queue.Queue[Any] = field(default_factory=queue.Queue)
    seen: list[Any] = field(default_factory=list)

    def capture(self, image: bytes, patient: str = "SYNTH-0000001") -> str:
        sealed = self.sealer.seal(bytearray(image), metadata(patient))
        self.vault.put(sealed)
        self.uplink.wake()
        return sealed.capture_id

    def wait_for(self, done: Callable[[list[Any]], bool], timeout: float = WAIT) -> list[Any]:
        """Collect uplink events until ``done(seen)``; fail after ``timeout``."""
        deadline = time.monotonic() + timeout
        while not done(self.seen):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"{self.name}: condition not met; events: {self.seen[-20:]}")
            try:
                self.seen.append(self.events.get(timeout=remaining))
            except queue.Empty:
                continue
        return self.seen

    def stored(self) -> list[str]:
        return [e.capture_id for e in self.seen if isinstance(e, CaptureStored)]

    def wait_stored(self, ids: Sequence[str], timeout: float = WAIT) -> None:
        self.wait_for(lambda _: set(ids) <= set(self.stored()), timeout)


def make_station(site: Any, name: str, port: int, vault: Vault | None = None,
                 **kw: Any) -> Station:
    ident = load_identity(site.device(name).dir)
    vault = vault if vault is not None else Vault()
    wiper = Wiper(vault)
    sealer = Sealer(ident.device_id, ident.key, ident.cert_pem, ident.recipient)
    events: queue.Queue[Any] = queue.Queue()
    options: dict[str, Any] = dict(ack_timeout_s=4.0, retry_min_s=0.3, retry_max_s=2.0,
                                   reconnect_min_s=1, reconnect_max_s=2, keepalive_s=10)
    options.update(kw)
    uplink = Uplink(identity=ident, vault=vault, post=events.put, port=port,
                    wipe=lambda: wiper.wipe("command"), **options)
    wiper.add_listener(uplink.wiped)
    station = Station(name, uplink, vault, sealer, wiper, events)
    uplink.start()
    return station


def make_core(site: Any, out: Path, *, sinks: Sequence[Sink] | None = None,
              partition: Partition | None = None, **kw: Any) -> RelayCore:
    ca = x509.load_pem_x509_certificate(site.ca_pem.read_bytes())
    recipient = load_recipient_private(site.recipient_key_path.read_bytes())
    kw.setdefault("audit", AuditLog(out / "audit.jsonl"))
    kw.setdefault("board", StatusBoard(out / "status.json"))
    kw.setdefault("ledger", Ledger(out / "ledger.jsonl"))
    return RelayCore(ca_cert=ca, recipients=[recipient],
                     sinks=list(sinks) if sinks else [DirectorySink(out / "archive")],
                     partition=partition, **kw)


def start_relay(site: Any, port: int, core: RelayCore, n: int = 1, **kw: Any) -> Relay:
    ident = site.relay(n)
    relay = Relay(core=core, host="127.0.0.1", port=port, ca=ident.ca, cert=ident.cert,
                  key=ident.key, client_id=ident.name, sweep_s=kw.pop("sweep_s", 0.5), **kw)
    relay.start()
    return relay


def archived(root: Path) -> dict[str, list[str]]:
    """capture id -> the files the directory sink holds for it."""
    out: dict[str, list[str]] = {}
    for path in sorted(root.glob("*/*")):
        out.setdefault(path.stem, []).append(path.suffix)
    return out


# -- relays as separate processes (``clinicam relay run``), for kill -9 ---------------


def relay_toml(site: Any, port: int, state: Path, archive: Path, *, n: int, worker: int,
               workers: int, relay_extra: str = "", tail: str = "") -> Path:
    """A relay.toml; ``relay_extra`` adds lines to ``[relay]``, ``tail`` whole sections."""
    ident = site.relay(n)
    text = f"""
[relay]
worker = {worker}
workers = {workers}
state_dir = "{state}"
status_file = "{state}/status.json"
audit_log = "{state}/audit.jsonl"
{relay_extra}

[broker]
host = "127.0.0.1"
port = {port}

[identity]
cert = "{ident.cert}"
key = "{ident.key}"
ca = "{ident.ca}"
recipient_keys = ["{site.recipient_key_path}"]

[[sinks]]
type = "directory"
name = "archive"
path = "{archive}"
{tail}
"""
    state.mkdir(parents=True, exist_ok=True)
    path = state / "relay.toml"
    path.write_text(text)
    return path


class RelayProcess:
    """``clinicam relay run`` in a child process; its stderr is drained into ``log``."""

    def __init__(self, config: Path) -> None:
        self.proc = spawn_relay(config)
        self.log = bytearray(getattr(self.proc, "startup", b""))  # what it said while starting
        self._drain = threading.Thread(target=self._read, daemon=True)
        self._drain.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for chunk in iter(lambda: self.proc.stderr.read1(4096), b""):  # type: ignore[union-attr]
            self.log += chunk

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait()

    def stop(self) -> int:
        self.proc.terminate()
        return self.proc.wait(WAIT)


def spawn_relay(config: Path) -> subprocess.Popen[bytes]:
    """``clinicam relay run`` in a child; returns once it says it is running."""
    proc = subprocess.Popen([sys.executable, "-m", "clinicam.tools.cli", "relay", "run",
                             "--config", str(config)], stderr=subprocess.PIPE)
    assert proc.stderr is not None
    deadline, seen = time.monotonic() + WAIT, b""
    while b"clinicam relay: running" not in seen:
        ready, _, _ = select.select([proc.stderr], [], [], max(0.0, deadline - time.monotonic()))
        chunk = proc.stderr.read1(4096) if ready else b""  # type: ignore[attr-defined]
        if not chunk:
            proc.kill()
            raise AssertionError(f"relay did not start: {seen.decode(errors='replace')}")
        seen += chunk
    proc.startup = seen  # type: ignore[attr-defined]
    return proc


def audit_decisions(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()
            if '"source":"relay"' in line]


def publish_capture(client: Any, prefix: str, device: str, sealed: Any,
                    manifest: bytes | None = None, skip: Sequence[int] = ()) -> list[int]:
    """Publish a sealed capture by hand (parts, then manifest); PUBACK reason codes."""
    topics = Topics(prefix)
    codes = [client.probe.publish(topics.part(device, sealed.capture_id, i), bytes(p)).value
             for i, p in enumerate(sealed.parts) if i not in skip]
    codes.append(client.probe.publish(topics.manifest(device, sealed.capture_id), manifest or sealed.manifest).value)
    return codes


def next_json(client: Any, topic: str, timeout: float = WAIT) -> dict[str, Any]:
    """The next message ``client`` receives on ``topic``, as JSON."""
    deadline = time.monotonic() + timeout
    while True:
        msg = client.probe.next_message(timeout=max(0.01, deadline - time.monotonic()))
        if msg.topic == topic:
            return json.loads(msg.payload)  # type: ignore[no-any-return]


def eventually(done: Callable[[], bool], timeout: float = WAIT) -> None:
    """Wait for a condition another process or thread will make true (polls, bounded)."""
    deadline, tick = time.monotonic() + timeout, threading.Event()
    while not done():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        tick.wait(0.02)  # a poll interval, not a delay the test relies on
