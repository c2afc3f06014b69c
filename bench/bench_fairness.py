"""Fairness figures (DESIGN §10, flood row; issue 13 §2): another station's delivery
while one station floods, and the relay's memory against its configured bounds.

A ``clinicam relay run`` process with small bounds (``flood_kit.BOUNDS``: inbox 8 MiB,
2 MiB per station; reassembly 16 MiB, 4 MiB per station), the real mTLS broker and two
stations. For each flood of ``flood_kit.FLOODS`` (incomplete captures filling the
budget, zero-byte parts, retained status, events), the control station's two 300 kB
captures, woken once the flood is under way, are timed to their ``stored`` acks,
beside the same two captures with no flood. Budget: stored within 30 s (absolute, in
the note). Memory: the relay's peak RSS growth during the flood against the configured
bounds (inbox + reassembly) — budget ≤ 1.0× of bounds + 32 MiB interpreter slack.
The control's uplink uses a 5 s ack timeout: a message the broker drops costs it one.
"""

from __future__ import annotations

import queue
import random
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from bench_delivery import Bench
from clinicam.firmware.capture.vault import Vault
from clinicam.firmware.uplink.client import Uplink
from clinicam.firmware.workflow.events import CaptureStored
from clinicam.protocol.sealing import Sealer
from clinicam.provisioning.tlsctx import client_context
from clinicam.tools.brokerproc import LOOPBACK
from harness import Context, Figure, Stats
from paho.mqtt.enums import CallbackAPIVersion

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "integration"))
from flood_kit import FLOODS, MEMORY_BOUND, RELAY_EXTRA, RELAY_TAIL, Flood, rss

AREA = "fairness"
MIB = 1024 * 1024
WITHIN_S = 30.0


class Control:
    """The well-behaved station: the real uplink, a short ack timeout."""

    def __init__(self, ident: Any, port: int) -> None:
        self.vault = Vault(max_captures=100, max_bytes=2**28)
        self.sealer = Sealer(ident.device_id, ident.key, ident.cert_pem, ident.recipient)
        self.events: queue.Queue[Any] = queue.Queue()
        self.uplink = Uplink(identity=ident, vault=self.vault, post=self.events.put, port=port,
                             ack_timeout_s=5.0, retry_min_s=0.5, retry_max_s=2.0)
        self.uplink.start()

    def deliver(self, n: int, seed: int, timeout: float = 120.0) -> float:
        """Seal ``n`` 300 kB captures, wake the uplink, seconds until all are stored."""
        ids = set()
        for k in range(n):
            sealed = self.sealer.seal(bytearray(random.Random(seed + k).randbytes(300_000)),
                                      {"patient": {"id": "BENCH-1"}})
            self.vault.put(sealed)
            ids.add(sealed.capture_id)
        t0 = time.perf_counter()
        self.uplink.wake()
        deadline = time.monotonic() + timeout
        while ids:
            event = self.events.get(timeout=max(0.01, deadline - time.monotonic()))
            if isinstance(event, CaptureStored):
                ids.discard(event.capture_id)
        return time.perf_counter() - t0


def _flooder(ident: Any, port: int) -> mqtt.Client:
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=ident.device_id, protocol=mqtt.MQTTv5)
    client.tls_set_context(client_context(ident.ca_path, ident.cert_path, ident.key_path))
    client.connect(LOOPBACK, port)
    client.loop_start()
    return client


def _relay(bench: Bench, out: Path) -> subprocess.Popen[bytes]:
    """``clinicam relay run`` with the flood bounds; returns once it is subscribed."""
    cert, key = bench.site.relay_files(1)
    state = bench.root / "relay-fairness"
    state.mkdir(parents=True, exist_ok=True)
    conf = state / "relay.toml"
    conf.write_text(
        f'[relay]\nstate_dir = "{state}"\nstatus_file = "{state}/status.json"\n'
        f'audit_log = "{state}/audit.jsonl"\n{RELAY_EXTRA}'
        f'[broker]\nhost = "{LOOPBACK}"\nport = {bench.site.port}\n'
        f'[identity]\ncert = "{cert}"\nkey = "{key}"\nca = "{bench.root}/site/ca.pem"\n'
        f'recipient_keys = ["{bench.root}/site/relay/recipient.key"]\n'
        f'[[sinks]]\ntype = "directory"\nname = "archive"\npath = "{out}"\n{RELAY_TAIL}')
    proc = subprocess.Popen([sys.executable, "-m", "clinicam.tools.cli", "relay", "run",
                             "--config", str(conf)], stderr=subprocess.PIPE)
    assert proc.stderr is not None
    for line in proc.stderr:
        if b"clinicam relay: running" in line:
            break
    else:
        raise RuntimeError("relay process did not start")
    threading.Thread(target=proc.stderr.read, daemon=True).start()  # keep draining
    return proc


def run(ctx: Context) -> list[Figure]:
    bench = Bench(ctx.workdir / "fairness", stations=2)
    bench.broker.start()
    runs = 1 if ctx.quick else 2
    figures: list[Figure] = []
    try:
        relay = _relay(bench, ctx.workdir / "fairness-out")
        control = Control(bench.idents[0], bench.site.port)
        try:
            control.deliver(1, seed=1)  # warm-up
            quiet = Stats.of([control.deliver(2, seed=10 + r * 2) for r in range(runs + 1)])
            for kind, (maker, head_start) in sorted(FLOODS.items()):
                latencies, growth = [], []
                for r in range(runs):
                    before = rss(relay.pid)["VmRSS"]
                    client = _flooder(bench.idents[1], bench.site.port)
                    flood = Flood(client, bench.idents[1].device_id, maker).start()
                    try:
                        flood.wait_sent(head_start)
                        latencies.append(control.deliver(2, seed=1000 + 10 * r + 100 * len(figures)))
                    finally:
                        flood.stop()
                        client.disconnect()
                        client.loop_stop()
                    growth.append((rss(relay.pid)["VmHWM"] - before) / MIB)
                lat = Stats.of(latencies)
                ok = "ok" if lat.max < WITHIN_S else "OVER"
                figures.append(Figure(
                    AREA, f"control stored, {kind} flood", "s", lat,
                    baseline_name="the same captures, no flood", baseline=quiet,
                    note=f"2 x 300 kB; absolute budget {WITHIN_S:.0f} s: {ok}; "
                         f"flood sent {flood.sent} messages"))
                figures.append(Figure(
                    AREA, f"relay peak RSS growth, {kind} flood", "MiB", Stats.of(growth),
                    baseline_name="configured bounds + slack", baseline=Stats.of([MEMORY_BOUND / MIB]),
                    budget="<= 1.0x", note="VmHWM during the flood - VmRSS before it "
                                          "(peak is per process: later floods show the max so far)"))
        finally:
            control.uplink.stop()
            relay.terminate()
            relay.wait(30)
    finally:
        bench.broker.stop()
    return figures
