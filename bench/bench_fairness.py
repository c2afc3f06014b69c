"""Fairness figures (DESIGN §10, flood row; issue 13 §2): another station's delivery
while one station floods, and the relay's memory against its configured bounds.

A ``clinicam relay run`` process with small bounds (``flood_kit.BOUNDS``: inbox 8 MiB,
2 MiB per station; reassembly 16 MiB, 4 MiB per station), the real mTLS broker and two
stations (``bench_delivery.Bench`` and ``Station``: the same site, broker, relay
process and uplink as the delivery figures). For each flood of ``flood_kit.FLOODS``
(incomplete captures filling the budget, zero-byte parts, parts the relay must reject,
retained status, events), the control station's two 300 kB
captures, woken once the flood has run ``HOLD_S`` (10 s; 3 s with ``--quick``) and
sent at least its head start, are timed to their ``stored`` acks,
beside the same two captures with no flood. Budget: stored within 30 s (absolute, in
the note). Memory: the relay's peak RSS growth during the flood against the configured
bounds (inbox + reassembly) — budget ≤ 1.0× of bounds + 32 MiB interpreter slack.
The control's uplink uses a 5 s ack timeout: a message the broker drops costs it one.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from bench_delivery import Bench, Station
from clinicam.provisioning.tlsctx import client_context
from clinicam.tools.brokerproc import LOOPBACK
from harness import Context, Figure, Stats
from paho.mqtt.enums import CallbackAPIVersion

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "integration"))
from flood_kit import FLOODS, MEMORY_BOUND, RELAY_EXTRA, RELAY_TAIL, Flood, rss

AREA = "fairness"
MIB = 1024 * 1024
WITHIN_S = 30.0
SIZE = 300_000
HOLD_S = 10.0  # the flood runs this long (and at least its head start) before the control


def _flooder(ident: Any, port: int) -> mqtt.Client:
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=ident.device_id, protocol=mqtt.MQTTv5)
    client.tls_set_context(client_context(ident.ca_path, ident.cert_path, ident.key_path))
    client.connect(LOOPBACK, port)
    client.loop_start()
    return client


def run(ctx: Context) -> list[Figure]:
    bench = Bench(ctx.workdir / "fairness", stations=2)
    bench.broker.start()
    runs = 1 if ctx.quick else 2
    hold_s = 3.0 if ctx.quick else HOLD_S
    figures: list[Figure] = []
    try:
        relay = bench.relay_process(ctx.workdir / "fairness-out", relay_extra=RELAY_EXTRA, tail=RELAY_TAIL)
        # the well-behaved station: a short ack timeout, so a dropped message costs little
        control = Station(bench.idents[0], bench.site.port, ack_timeout_s=5.0, retry_min_s=0.5, retry_max_s=2.0)
        try:
            control.deliver(1, SIZE, seed=1)  # warm-up
            quiet = Stats.of([control.deliver(2, SIZE, seed=10 + r * 2) for r in range(runs + 1)])
            for kind, (maker, head_start) in sorted(FLOODS.items()):
                latencies, growth = [], []
                for r in range(runs):
                    before = rss(relay.pid)["VmRSS"]
                    client = _flooder(bench.idents[1], bench.site.port)
                    flood = Flood(client, bench.idents[1].device_id, maker).start()
                    try:
                        flood.wait_sent(head_start)
                        # a flood that has run a while: what the relay could not read by
                        # now waits in the broker's queue ahead of the control's messages
                        time.sleep(max(0.0, flood.started_at + hold_s - time.monotonic()))
                        latencies.append(control.deliver(2, SIZE, seed=1000 + 10 * r + 100 * len(figures)))
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
                    note=f"2 x 300 kB after {hold_s:.0f} s of flood; absolute budget {WITHIN_S:.0f} s: "
                         f"{ok}; flood sent {flood.sent} messages"))
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
