"""On a Raspberry Pi with the station's camera and GPIO: ``pytest -m hardware``.

Deselected by default (pyproject addopts). A missing device fails, it does not skip:
running these means the hardware is supposed to be there.
"""

from __future__ import annotations

import grp
import io
import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from clinicam.drivers.camera import CAPTURE_TIMEOUT_S, Picamera2Camera
from clinicam.drivers.panel import PATTERNS, Panel
from clinicam.drivers.pins import HEADER_CHIP_LABELS, _lgpio_label, make_pin_factory
from clinicam.drivers.power import PowerInputs
from clinicam.drivers.readers import make_reader
from PIL import Image

pytestmark = pytest.mark.hardware


@pytest.fixture(scope="module")
def camera():
    cam = Picamera2Camera(still_size=(2304, 1296), lores_size=(1280, 720), jpeg_quality=85)
    yield cam
    cam.close()


def test_lores_frames_are_luminance(camera):
    frames = camera.scan_frames()
    frame = next(frames)
    assert frame.shape == (720, 1280) and frame.dtype.name == "uint8"
    make_reader().decode(frame)  # runs on a real frame without error


def test_still_is_a_jpeg_in_the_buffer(camera):
    buf = bytearray()
    info = camera.capture_jpeg(buf)
    assert info.size == len(buf) > 10_000
    with Image.open(io.BytesIO(bytes(buf))) as img:
        assert img.format == "JPEG" and img.size == (info.width, info.height)
    assert info.model


def test_gpio_panel_and_power_inputs():
    factory = make_pin_factory("pi")
    panel = Panel(factory)
    events: list[str] = []
    power = PowerInputs(factory, on_event=events.append)
    try:
        for name in PATTERNS:
            panel.signal(name)
    finally:
        panel.close()
        power.close()
        factory.close()


# --- what only a Pi can settle (issue 19; image-build/README.md, first-boot checklist) --


def test_gpio_header_chip_found_by_label():
    # Pi 5 on kernels >= 6.6.45: RP1 is gpiochip0 (PyPI gpiozero 2.0.1 would open 4).
    factory = make_pin_factory("pi")
    try:
        label = _lgpio_label(factory.chip)
        print(f"header chip: gpiochip{factory.chip} ({label}), kernel {os.uname().release}")
        assert label in HEADER_CHIP_LABELS
    finally:
        factory.close()


def test_lgpio_fifo_goes_to_lg_wd(tmp_path):
    # The unit starts in "/" (read-only under ProtectSystem=strict): LG_WD must be used.
    env = {**os.environ, "LG_WD": str(tmp_path)}
    subprocess.run([sys.executable, "-c", "import lgpio"], cwd="/", env=env, check=True)
    fifos = [p for p in tmp_path.iterdir() if p.name.startswith(".lgd-nfy")]
    assert fifos and all(stat.S_ISFIFO(p.stat().st_mode) for p in fifos)


@pytest.mark.parametrize(("pattern", "group"), [("/dev/dma_heap/*", "video"), ("/dev/gpiochip*", "gpio"),
                                                 ("/dev/media*", "video"), ("/dev/video*", "video")])
def test_device_groups_from_raspberrypi_sys_mods(pattern, group):
    nodes = sorted(Path("/").glob(pattern.lstrip("/")))
    assert nodes, f"no {pattern}"
    wrong = [f"{n} {grp.getgrgid(n.stat().st_gid).gr_name}" for n in nodes
             if grp.getgrgid(n.stat().st_gid).gr_name != group]
    assert not wrong, f"expected group {group}: {wrong}"
    if pattern.startswith("/dev/dma_heap"):
        assert Path("/dev/dma_heap/vidbuf_cached").exists()  # sys-mods' link picamera2 opens first


def test_picamera2_is_the_version_the_fixture_pins():
    from importlib.metadata import version

    sys.path.insert(0, str(Path(__file__).parents[1]))
    import picamera2_sim

    assert version("picamera2") == picamera2_sim.PICAMERA2_VERSION


def test_scan_rate_and_switch_cost(camera):
    # The scan configuration must give >= 10 frames/s in any light; the still needs a
    # mode switch (measured here: the simulation does not cost CMA reallocation).
    frames = camera.scan_frames()
    next(frames)
    t0 = time.monotonic()
    for _ in range(30):
        next(frames)
    fps = 30 / (time.monotonic() - t0)
    t1 = time.monotonic()
    info = camera.capture_jpeg(bytearray())
    capture_s = time.monotonic() - t1
    t2 = time.monotonic()
    next(frames)
    back_s = time.monotonic() - t2
    print(f"scan {fps:.1f} frames/s at {camera.scan_size}; capture {capture_s:.2f} s "
          f"(AF, switch, {info.width}x{info.height} JPEG, switch back); first scan frame after {back_s:.2f} s")
    assert fps >= 10 and capture_s < CAPTURE_TIMEOUT_S and camera.scan_size == (1280, 720)


def test_focus_gives_a_sharp_still(camera):
    # Hold a printed wristband 10-20 cm in front of the camera.
    buf = bytearray()
    info = camera.capture_jpeg(buf)
    with Image.open(io.BytesIO(bytes(buf))) as img:
        gray = np.asarray(img.convert("L").resize((1152, 648)), dtype=np.float32)
    lap = gray[1:-1, 1:-1] * 4 - gray[:-2, 1:-1] - gray[2:, 1:-1] - gray[1:-1, :-2] - gray[1:-1, 2:]
    print(f"lens position {info.lens_position}, Laplacian variance {lap.var():.1f}")
    assert info.lens_position is not None and lap.var() > 20


def test_close_returns_promptly():
    cam = Picamera2Camera(still_size=(2304, 1296), lores_size=(1280, 720))
    next(cam.scan_frames())
    t0 = time.monotonic()
    cam.close()
    assert time.monotonic() - t0 < 4.0
