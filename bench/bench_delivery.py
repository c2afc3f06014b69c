"""Delivery figures (DESIGN §10): one 5 MB capture end to end, and relay throughput.

1. **5 MB capture, first part published → ``stored`` ack**, station uplink and relay
   in this process over the real mTLS broker, beside ``mosquitto_pub -l`` →
   ``mosquitto_sub`` moving the same bytes, cut into the same 122880-byte messages (the
   broker's 128 KiB packet limit forbids one 5 MB message), QoS 1, over the same
   listener. Budget ≤ 2.0×. Honest differences: the baseline includes both clients'
   process start and TLS handshake (tens of ms); ours includes the relay's opening
   (signature, unwrap, decrypt, hashes) and two fsyncs by the directory sink.
2. **Captures per second with 10 simulated stations** (pre-sealed 200 kB captures, all
   woken at once) through one ``clinicam relay run`` process, and through two
   partitioned ones. Reported, no budget; on a 2-core machine shared with the stations
   the second relay mainly shows that partitioning costs nothing.
"""

from __future__ import annotations

import queue
import random
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from clinicam.firmware.capture.vault import Vault
from clinicam.firmware.uplink.client import Uplink
from clinicam.firmware.workflow.events import CaptureStored
from clinicam.protocol.recipient import load_recipient_private
from clinicam.protocol.sealing import Sealer
from clinicam.protocol.topics import DEFAULT_PREFIX, Topics
from clinicam.provisioning import identity
from clinicam.provisioning.site import Site
from clinicam.relay.core import RelayCore
from clinicam.relay.service import Relay
from clinicam.relay.sinks.directory import DirectorySink
from clinicam.tools.brokerproc import LOOPBACK, Mosquitto, free_port
from cryptography import x509
from harness import Context, Figure, Stats

AREA = "delivery"
P = DEFAULT_PREFIX
MB = 1_000_000
CHUNK = 122880


class Bench:
    """A throwaway site with a broker, n stations and two relay identities."""

    def __init__(self, root: Path, stations: int) -> None:
        self.root = root
        self.site = Site.create(root / "site", "Bench Clinic", [LOOPBACK], port=free_port(),
                                kem="x25519", relays=2)
        self.idents = [self._station(f"bench-{i:02d}") for i in range(stations)]
        self.broker = Mosquitto(self.site.broker_dir, root / "broker", port=self.site.port)

    def _station(self, name: str) -> identity.DeviceIdentity:
        d = self.root / "stations" / name
        self.site.sign(identity.create_device_key(d, name).read_bytes())
        bundle = self.site.bundle(name, self.root / "bundles" / name)
        return identity.install(identity.InstallFiles.from_bundle(bundle), d)

    def relay(self, out: Path, n: int = 1) -> Relay:
        cert, key = self.site.relay_files(n)
        ca = self.root / "site" / "ca.pem"
        core = RelayCore(ca_cert=x509.load_pem_x509_certificate(ca.read_bytes()),
                         recipients=[load_recipient_private(
                             (self.root / "site/relay/recipient.key").read_bytes())],
                         sinks=[DirectorySink(out)],
                         chain=[self.site.issuing] if self.site.issuing is not None else [])
        return Relay(core=core, host=LOOPBACK, port=self.site.port, ca=ca, cert=cert, key=key,
                     client_id=f"relay-{n}")

    def relay_process(self, out: Path, n: int = 1, worker: int = 0, workers: int = 1, *,
                      relay_extra: str = "", tail: str = "") -> subprocess.Popen[bytes]:
        """``clinicam relay run`` as its own process; returns once it serves.

        ``relay_extra`` adds ``[relay]`` keys, ``tail`` whole sections (the fairness
        bench's bounds)."""
        cert, key = self.site.relay_files(n)
        state = self.root / f"relay-{n}-{worker}-{workers}-{time.monotonic_ns()}"
        state.mkdir(parents=True)
        conf = state / "relay.toml"
        conf.write_text(
            f'[relay]\nworker = {worker}\nworkers = {workers}\nstate_dir = "{state}"\n'
            f'status_file = "{state}/status.json"\naudit_log = "{state}/audit.jsonl"\n{relay_extra}'
            f'[broker]\nhost = "{LOOPBACK}"\nport = {self.site.port}\n'
            f'[identity]\ncert = "{cert}"\nkey = "{key}"\nca = "{self.root}/site/ca.pem"\n'
            f'chain = "{self.site.chain_pem if self.site.issuing is not None else ""}"\n'
            f'recipient_keys = ["{self.root}/site/relay/recipient.key"]\n'
            f'[[sinks]]\ntype = "directory"\nname = "archive"\npath = "{out}"\n{tail}')
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


class Station:
    """A station's real uplink and sealer, in this process, on pre-made images."""

    def __init__(self, ident: identity.DeviceIdentity, port: int, **uplink: Any) -> None:
        self.ident = ident
        self.vault = Vault(max_captures=1000, max_bytes=2**31)
        self.sealer = Sealer(ident.device_id, ident.key, ident.cert_pem, ident.recipient)
        self.events: queue.Queue[Any] = queue.Queue()
        self.uplink = Uplink(identity=ident, vault=self.vault, post=self.events.put,
                             port=port, **{"ack_timeout_s": 120.0, **uplink})
        self.uplink.start()

    def deliver(self, n: int, size: int, seed: int, timeout: float = 120.0) -> float:
        """Seal ``n`` captures, wake the uplink: seconds until all are stored."""
        ids = {self.seal(size, seed + k) for k in range(n)}
        t0 = time.perf_counter()
        self.uplink.wake()
        self.wait_stored(ids, timeout)
        return time.perf_counter() - t0

    def seal(self, size: int, seed: int) -> str:
        image = bytearray(random.Random(seed).randbytes(size))
        sealed = self.sealer.seal(image, {"patient": {"id": "BENCH-1"}})
        self.vault.put(sealed)
        return sealed.capture_id

    def wait_stored(self, ids: set[str], timeout: float = 300.0) -> None:
        deadline = time.monotonic() + timeout
        while ids:
            event = self.events.get(timeout=max(0.01, deadline - time.monotonic()))
            if isinstance(event, CaptureStored):
                ids.discard(event.capture_id)


def _ours_5mb(bench: Bench, ctx: Context) -> Stats:
    relay = bench.relay(ctx.workdir / "delivery-out")
    relay.start()
    station = Station(bench.idents[0], bench.site.port)
    try:
        samples = []
        for run in range(ctx.runs + 1):
            first: list[float] = []
            publish = station.uplink.engine._publish

            def timed(topic: str, payload: Any, response: Any, publish: Any = publish,
                      first: list[float] = first) -> int:
                if not first:
                    first.append(time.perf_counter())
                return publish(topic, payload, response)  # type: ignore[no-any-return]

            station.uplink.engine._publish = timed
            cid = station.seal(5 * MB, seed=run)
            station.uplink.wake()
            station.wait_stored({cid})
            if run:  # the first is a warm-up
                samples.append(time.perf_counter() - first[0])
            station.uplink.engine._publish = publish
        return Stats.of(samples)
    finally:
        station.uplink.stop()
        relay.stop()


def _mosquitto_5mb(bench: Bench, ctx: Context) -> Stats:
    ident = bench.idents[0]
    cert, key = bench.site.relay_files(2)
    data = random.Random(7).randbytes(5 * MB)
    lines = b"\n".join(bytes(48 + (b % 64) for b in data[o:o + CHUNK])
                       for o in range(0, len(data), CHUNK)) + b"\n"  # printable, no newlines
    count = lines.count(b"\n")
    topic = Topics(P).part(ident.device_id, "0" * 32, 0)
    tls = ["-h", LOOPBACK, "-p", str(bench.site.port), "-V", "mqttv5", "-q", "1"]
    samples = []
    for run in range(ctx.runs + 1):
        sub = subprocess.Popen(["mosquitto_sub", *tls, "--cafile", str(ident.ca_path),
                                "--cert", str(cert), "--key", str(key), "-t", topic,
                                "-C", str(count), "-N"], stdout=subprocess.DEVNULL)
        time.sleep(0.5)  # bench only: let the subscription settle (it has no ready signal)
        t0 = time.perf_counter()
        subprocess.run(["mosquitto_pub", *tls, "--cafile", str(ident.ca_path), "--cert",
                        str(ident.cert_path), "--key", str(ident.key_path), "-t", topic, "-l"],
                       input=lines, check=True)
        sub.wait(120)
        if run:
            samples.append(time.perf_counter() - t0)
    return Stats.of(samples)


def _throughput(bench: Bench, ctx: Context, workers: int, per_station: int) -> Stats:
    samples = []
    stations = [Station(i, bench.site.port) for i in bench.idents]
    try:
        for run in range(max(2, ctx.runs // 2)):
            out = ctx.workdir / f"thru-{workers}-{run}"
            procs = [bench.relay_process(out, n=k + 1, worker=k, workers=workers)
                     for k in range(workers)]
            try:
                ids = [{st.seal(200_000, seed=1000 * run + 10 * j + k) for k in range(per_station)}
                       for j, st in enumerate(stations)]
                t0 = time.perf_counter()
                for st in stations:
                    st.uplink.wake()
                for st, wanted in zip(stations, ids, strict=True):
                    st.wait_stored(set(wanted))
                samples.append(len(stations) * per_station / (time.perf_counter() - t0))
            finally:
                for p in procs:
                    p.terminate()
                    p.wait(30)
    finally:
        for st in stations:
            st.uplink.stop()
    return Stats.of(samples)


def run(ctx: Context) -> list[Figure]:
    if shutil.which("mosquitto_pub") is None or shutil.which("mosquitto") is None:
        raise RuntimeError("bench_delivery needs mosquitto and mosquitto-clients")
    bench = Bench(ctx.workdir / "delivery", stations=10)
    bench.broker.start()
    try:
        baseline = _mosquitto_5mb(bench, ctx)
        ours = _ours_5mb(bench, ctx)
        per_station = 3 if ctx.quick else 6
        one = _throughput(bench, ctx, 1, per_station)
        two = _throughput(bench, ctx, 2, per_station)
    finally:
        bench.broker.stop()
    return [
        Figure(AREA, "5 MB capture: first part -> stored ack", "s", ours,
               baseline_name="mosquitto_pub -l -> mosquitto_sub, same bytes", baseline=baseline,
               budget="<= 2.0x",
               note="42 QoS 1 messages of <=122880 B both ways; baseline includes process start"),
        Figure(AREA, "captures/s, 10 stations, 1 relay", "1/s", one, higher_is_better=True,
               note=f"{per_station} x 200 kB per station, relay as 'clinicam relay run'"),
        Figure(AREA, "captures/s, 10 stations, 2 partitioned relays", "1/s", two,
               baseline_name="1 relay", baseline=one, higher_is_better=True,
               note="ratio > 1 means partitioning scales; 2 shared cores limit it"),
    ]
