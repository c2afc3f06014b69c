"""On a Raspberry Pi with the station's camera and GPIO: ``pytest -m hardware``.

Deselected by default (pyproject addopts). A missing device fails, it does not skip:
running these means the hardware is supposed to be there.
"""

from __future__ import annotations

import io

import pytest
from clinicam.drivers.camera import Picamera2Camera
from clinicam.drivers.panel import PATTERNS, Panel
from clinicam.drivers.pins import make_pin_factory
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
