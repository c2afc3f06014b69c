"""Captures per second from the relay's DICOM sinks into a real Orthanc (issue 7).

For each image size (1 MB and 5 MB) and each way in (STOW-RS, C-STORE), the time of one
``sink.store`` (building the DICOM object included) beside the time Orthanc takes to
accept the same Part 10 bytes on its native REST ``POST /instances``: the cost of
storing the bytes at all, measured in the same run. Report only: no budget in DESIGN.
"""

from __future__ import annotations

import hashlib
import io
import itertools
from pathlib import Path
from typing import Any

from clinicam.relay.sinks import dicom
from clinicam.relay.sinks.dicomweb import DicomWebSink
from clinicam.relay.sinks.dimse import DimseSink
from clinicam.relay.sinks.httpclient import Auth
from clinicam.tools.orthanc import Orthanc, orthanc_available
from harness import Context, Figure, measure
from PIL import Image


class _Capture:
    """The five fields a sink reads, with synthetic metadata."""

    def __init__(self, n: int, image: bytes) -> None:
        self.device = "bench-cart"
        self.capture_id = hashlib.sha256(f"bench/{n}".encode()).hexdigest()[:32]
        self.manifest: dict[str, Any] = {}
        self.image = image
        self.metadata = {
            "patient": {"id": "SYN-BENCH", "issuer": "urn:oid:2.999.9", "encounter": None},
            "operator": None, "purpose": "WOUND", "laterality": None, "view": None,
            "consent": None, "body_site": None, "captured_at": "2026-03-02T09:00:00.000Z",
            "tz_offset": "+00:00", "clock_synced": True,
            "session": {"id": "be" * 16, "index": n},
            "image": {"media_type": "image/jpeg"},
            "camera": {"model": None}, "device": {"id": "bench-cart", "firmware": "bench"},
        }


def _jpeg_of(target: int) -> bytes:
    """A noisy baseline JPEG of at least ``target`` bytes."""
    side = 1024
    while True:
        out = io.BytesIO()
        Image.effect_noise((side, side * 3 // 4), 60).convert("RGB").save(out, "JPEG",
                                                                          quality=95)
        if out.tell() >= target:
            return out.getvalue()
        side = int(side * (target / out.tell()) ** 0.5 * 1.05) + 16


def _figure(name: str, value: Any, baseline: Any, size: int) -> Figure:
    return Figure(
        area="pacs", name=name, unit="s/capture", value=value,
        baseline_name="Orthanc REST POST /instances of the same bytes", baseline=baseline,
        note=f"{1 / value.median:.1f} captures/s, image {size / 1e6:.1f} MB",
        extra={"captures_per_s": 1 / value.median, "image_bytes": size},
    )


def run(ctx: Context) -> list[Figure]:
    if not orthanc_available():
        print("pacs: Orthanc not installed, skipped")
        return []
    figures: list[Figure] = []
    with Orthanc(Path(ctx.workdir) / "orthanc", aet="BENCHPACS") as pacs:
        secret = Path(ctx.workdir) / "pacs.pw"
        secret.write_text(pacs.password)
        auth = Auth("basic", username=pacs.username, password_file=secret)
        stow = DicomWebSink("pacs", pacs.dicomweb_url, auth=auth)
        dimse = DimseSink("pacs-dimse", "127.0.0.1", pacs.dicom_port, called_aet="BENCHPACS")
        counter = itertools.count(1)
        sizes = [1_000_000] if ctx.quick else [1_000_000, 5_000_000]
        for size in sizes:
            image = _jpeg_of(size)

            def rest(image: bytes = image) -> None:
                ds = dicom.build_photo(_Capture(next(counter), image))
                pacs.call("POST", "/instances", dicom.encode(ds))

            baseline = measure(rest, runs=ctx.runs)
            for label, sink in (("STOW-RS", stow), ("C-STORE", dimse)):
                def store(image: bytes = image, sink: Any = sink) -> None:
                    sink.store(_Capture(next(counter), image))

                value = measure(store, runs=ctx.runs)
                figures.append(_figure(f"{label} {size // 1_000_000} MB capture", value,
                                       baseline, len(image)))
    return figures
