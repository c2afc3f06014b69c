"""The camera driver through real picamera2 over the simulated imx708 (tests/picamera2_sim).

* Scan rate: frames per second from ``Picamera2Camera.scan_frames`` (a preview
  configuration: 4 buffers, frame time <= 100 ms, fast denoise) beside the previous
  driver's stream (the lores of a still configuration: one buffer, frame times up to
  1 s, each lores frame waiting for a new 12 MP frame), in good light (10 ms exposure)
  and dim light (200 ms). Higher is better.
* Capture latency: ``capture_jpeg`` (autofocus cycle on the scan stream, switch to the
  still mode, one frame, JPEG, switch back) beside the previous driver's capture (AF
  and capture in the still mode it was always in).
* Mode switch round trip: scan -> still -> one frame -> scan, beside one still request
  in a running still mode: the switch cost alone.

What these numbers are: picamera2's own code (configure, job queue, request recycling,
JPEG/EXIF through simplejpeg and piexif) runs for real on this machine; the sensor's
frame timing is the simulation's model (imx708 mode frame times, exposure, frame
duration limits, a 6-frame autofocus sweep). The mode switch on a Pi also reallocates
CMA buffers and restarts the ISP, which the simulation does not cost: measure the
switch on the first real Pi (image-build/README.md, first-boot checklist).
"""

from __future__ import annotations

import io
import sys
import time
from pathlib import Path

from harness import Context, Figure, Stats

AREA = "camera"
SCAN_FRAMES = 15
LIGHT = {"good light": 10_000, "dim light": 200_000}  # exposure the AGC needs, us


def _install():  # type: ignore[no-untyped-def]
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    import picamera2_sim

    return picamera2_sim, picamera2_sim.install("vc4", time_scale=1.0)


def _scan_rate(frames) -> float:  # type: ignore[no-untyped-def]
    next(frames)  # the first frame may predate the measurement
    t0 = time.perf_counter()
    for _ in range(SCAN_FRAMES):
        next(frames)
    return SCAN_FRAMES / (time.perf_counter() - t0)


class _PreviousDriver:
    """The call sequence before issue 19: scan the lores of a still configuration."""

    def __init__(self) -> None:
        from picamera2 import Picamera2

        self.cam = Picamera2(0)
        config = self.cam.create_still_configuration(main={"size": (4608, 2592)},
                                                     lores={"size": (1280, 720), "format": "YUV420"},
                                                     display=None)
        self.cam.configure(config)
        self.cam.start()
        self.cam.set_controls({"AfMode": 2})

    def frames(self):  # type: ignore[no-untyped-def]
        while True:
            yield self.cam.capture_array("lores")[:720, :1280]

    def capture(self) -> None:
        self.cam.autofocus_cycle()
        request = self.cam.capture_request()
        try:
            request.save("main", io.BytesIO(), format="jpeg", exif_data={"0th": {}, "Exif": {}})
        finally:
            request.release()
        self.cam.set_controls({"AfMode": 2})

    def close(self) -> None:
        self.cam.stop()
        self.cam.close()


def run(ctx: Context) -> list[Figure]:
    from clinicam.drivers.camera import Picamera2Camera

    fixture, sim = _install()
    runs = max(2, ctx.runs - 2)
    figures: list[Figure] = []
    try:
        for light, exposure in LIGHT.items():
            sim.scene.exposure_us = exposure
            old = _PreviousDriver()
            try:
                before = Stats.of([_scan_rate(old.frames()) for _ in range(runs)])
                old_capture = Stats.of([_timed(old.capture) for _ in range(runs)])
            finally:
                old.close()
            cam = Picamera2Camera((4608, 2592), (1280, 720))
            try:
                after = Stats.of([_scan_rate(cam.scan_frames()) for _ in range(runs)])
                new_capture = Stats.of([_timed(lambda cam=cam: cam.capture_jpeg(bytearray())) for _ in range(runs)])
                switch = Stats.of([_timed(lambda cam=cam: _switch_round_trip(cam)) for _ in range(runs)])
            finally:
                cam.close()
            old = _PreviousDriver()
            try:
                one_still = Stats.of([_timed(lambda old=old: old.cam.capture_request().release()) for _ in range(runs)])
            finally:
                old.close()
            figures.append(Figure(AREA, f"scan rate, {light}", "frames/s", after,
                                  "lores of the still configuration", before, budget=">= 1.5x",
                                  higher_is_better=True,
                                  note="simulated sensor timing, real picamera2 (see bench_camera.py)"))
            figures.append(Figure(AREA, f"capture latency, {light}", "s", new_capture,
                                  "previous driver (AF and capture in the still mode)", old_capture,
                                  note="AF now runs on the fast scan stream; includes the switch"))
            figures.append(Figure(AREA, f"mode switch round trip, {light}", "s", switch,
                                  "one still request in the still mode", one_still,
                                  note="scan -> still -> one frame -> scan; no CMA/ISP cost simulated"))
    finally:
        fixture.uninstall()
    return figures


def _switch_round_trip(cam) -> None:  # type: ignore[no-untyped-def]
    """What capture_jpeg adds to a capture: the switch to the still mode and back."""
    p = cam._cam
    p.switch_mode_capture_request_and_stop(cam._still_config, wait=10).release()
    p.configure(cam._scan_config)
    p.start()


def _timed(fn) -> float:  # type: ignore[no-untyped-def]
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0
