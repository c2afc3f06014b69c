"""The station as a whole (DESIGN §10): cold start to ready, shutter to sealed.

* Cold start to ready: ``clinicam station run`` on simulated hardware, from exec to its
  ``ready`` event, beside ``python -c pass`` (report; budget 1.5 s absolute).
* Shutter to sealed for a 12 MP JPEG: the station's path after the camera hands over
  the still (metadata, sealing, vault) beside the bare work on the same bytes (one AEAD
  pass and two SHA-256 passes). The simulated camera's own rendering is not counted:
  on a Pi the ISP makes the JPEG.
"""

from __future__ import annotations

import hashlib
import io
import signal
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from bench_sealing import make_sealer
from clinicam.firmware.capture.vault import Vault
from clinicam.firmware.codes.classify import PatientId
from clinicam.firmware.workflow.metadata import CameraFacts, DeviceInfo, SessionFacts, build_metadata
from clinicam.tools.demo_setup import CLI, DemoSetup
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from harness import Context, Figure, Stats, measure
from PIL import Image

AREA = "station"


def _cold_start(config: Path) -> float:
    t0 = time.perf_counter()
    proc = subprocess.Popen([*CLI, "station", "run", "--config", str(config), "--events-json"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    assert proc.stdout is not None
    try:
        for line in proc.stdout:
            if '"kind": "ready"' in line:
                return time.perf_counter() - t0
        raise RuntimeError("the station exited before it was ready")
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise


def _python_pass() -> float:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", "pass"], check=True)
    return time.perf_counter() - t0


def cold_start(ctx: Context) -> Figure:
    with tempfile.TemporaryDirectory(dir=ctx.workdir) as tmp:
        setup = DemoSetup(Path(tmp))
        setup.provision()
        config = setup.station_config()
        _cold_start(config)  # warm the page cache once
        value = Stats.of([_cold_start(config) for _ in range(ctx.runs)])
    base = Stats.of([_python_pass() for _ in range(ctx.runs)])
    return Figure(AREA, "cold start to ready (sim hardware)", "s", value, "python -c pass", base,
                  note=f"budget 1.5 s absolute: {'within' if value.median <= 1.5 else 'OVER'}")


def _jpeg_12mp() -> bytes:
    rng = np.random.default_rng(7)
    pixels = rng.integers(0, 255, size=(3000, 4000, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def shutter_to_sealed(ctx: Context) -> Figure:
    jpeg = _jpeg_12mp()
    sealer = make_sealer("CHACHA20-POLY1305")
    device = DeviceInfo("cam-bench-01", "Bench", "lab", "bench")
    session = SessionFacts("0" * 32, 1, PatientId("BENCH-0001", "GS1"))
    camera = CameraFacts(4000, 3000, "simulated")
    vault = Vault(max_captures=10_000, max_bytes=1 << 40)

    def station_path() -> None:
        image = bytearray(jpeg)  # what the camera driver hands over
        meta = build_metadata(session, camera, device, captured_at=datetime.now(UTC), clock_synced=True)
        sealed = sealer.seal(image, meta)
        vault.put(sealed)
        vault.ack(sealed.capture_id)

    aead = ChaCha20Poly1305(bytes(32))

    def bare() -> None:
        image = bytearray(jpeg)
        hashlib.sha256(image).digest()
        ct = aead.encrypt(bytes(12), bytes(image), b"")
        hashlib.sha256(ct).digest()

    value = measure(station_path, ctx.runs)
    base = measure(bare, ctx.runs)
    return Figure(AREA, f"shutter to sealed, 12 MP JPEG ({len(jpeg) / 1e6:.1f} MB)", "s", value,
                  "bare AEAD + 2x SHA-256, same bytes", base,
                  note="after the camera hands over the JPEG; ChaCha20-Poly1305 (the Pi 4's choice)")


def run(ctx: Context) -> list[Figure]:
    return [cold_start(ctx), shutter_to_sealed(ctx)]
