"""Cameras: simulated stills are real JPEGs in the caller's buffer; the picamera2 driver
makes exactly the documented call sequence (checked against a recording stand-in)."""

from __future__ import annotations

import io
from typing import ClassVar

import numpy as np
import pytest
from clinicam.common.errors import CameraUnavailable
from clinicam.drivers.camera import Picamera2Camera, SimulatedCamera, with_comment
from clinicam.drivers.readers import ZxingReader
from clinicam.drivers.scenes import Scene, Symbol
from PIL import Image

WRISTBAND = Scene((Symbol("(8018)796123456789012343", "gs1-128", 5.0),), seed=1)
CARD = Scene((Symbol("CLINICAM:END", "qr", 6.0, renderer="segno"),), seed=2)


def texts(frame):
    return [c.text for c in ZxingReader().decode(frame)]


def test_script_with_fake_clock(clock):
    cam = SimulatedCamera((640, 480), (640, 480), clock=clock, sleep=clock.advance, fps=10)
    cam.play([(WRISTBAND, 0.5), (CARD, 0.5), (None, None)])
    frames = cam.scan_frames()
    seen = [texts(next(frames)) for _ in range(12)]  # 0.0 .. 1.1 s at 10 fps
    assert seen[:5] == [["8018796123456789012343"]] * 5
    assert seen[5:10] == [["CLINICAM:END"]] * 5
    assert seen[10:] == [[], []]
    cam.close()


def test_still_is_a_jpeg_in_the_callers_buffer(clock):
    marker = bytearray(b"CANARY-1234")
    cam = SimulatedCamera((640, 480), (1600, 1200), clock=clock, marker=marker)
    cam.show(WRISTBAND)
    buf = bytearray(b"old contents that must go")
    info = cam.capture_jpeg(buf)
    assert info.size == len(buf) and (info.width, info.height) == (1600, 1200)
    assert buf[:2] == b"\xff\xd8" and buf[-2:] == b"\xff\xd9"
    assert b"CANARY-1234" in buf  # the marker sits in a COM segment
    with Image.open(io.BytesIO(bytes(buf))) as img:
        img.load()
        assert img.format == "JPEG" and img.size == (1600, 1200)
        assert texts(np.asarray(img.convert("L"))) == ["8018796123456789012343"]
    cam.clear_marker()
    assert marker == bytes(11)  # zeroed in place
    plain = bytearray()
    cam.capture_jpeg(plain)
    assert b"CANARY" not in plain and plain[:4] != b"\xff\xd8\xff\xfe"


def test_twelve_megapixel_limit(clock):
    SimulatedCamera(still_size=(4000, 3000), clock=clock)
    with pytest.raises(ValueError):
        SimulatedCamera(still_size=(4608, 3456), clock=clock)


def test_folder_of_images(tmp_path, clock):
    for i, scene in enumerate((WRISTBAND, CARD)):
        Image.fromarray(scene.render(640, 480)).save(tmp_path / f"{i}.png")
    cam = SimulatedCamera((640, 480), folder=tmp_path, hold_s=1.0, clock=clock,
                          sleep=clock.advance, fps=2)
    frames = cam.scan_frames()
    got = [texts(next(frames)) for _ in range(5)]
    assert got == [["8018796123456789012343"]] * 2 + [["CLINICAM:END"]] * 2 + [
        ["8018796123456789012343"]]
    with pytest.raises(CameraUnavailable):
        SimulatedCamera(folder=_empty(tmp_path))


def _empty(tmp_path):
    d = tmp_path / "empty"
    d.mkdir()
    return d


def test_with_comment_rejects_non_jpeg():
    with pytest.raises(ValueError):
        with_comment(b"PNG", b"x")


# --- picamera2 stand-in ----------------------------------------------------------------

class FakeRequest:
    def __init__(self, log):
        self.log = log

    def save(self, name, file_output, format=None, exif_data=None):
        self.log.append(("request.save", name, type(file_output).__name__, format, exif_data))
        file_output.write(b"\xff\xd8fake-jpeg\xff\xd9")

    def get_metadata(self):
        self.log.append(("request.get_metadata",))
        return {"ExposureTime": 8000, "AnalogueGain": 2.5, "LensPosition": 3.2}

    def release(self):
        self.log.append(("request.release",))


class FakePicamera2:
    """Records the calls the driver makes, in order."""

    instances: ClassVar[list[FakePicamera2]] = []

    def __init__(self, camera_num=0, tuning=None, af=True):
        self.log = [("Picamera2", camera_num, tuning)]
        self.options = {}
        self.camera_controls = {"AfMode": (0, 2, 0)} if af else {}
        self.camera_properties = {"Model": "imx708"}
        FakePicamera2.instances.append(self)

    def create_still_configuration(self, **kwargs):
        self.log.append(("create_still_configuration", kwargs))
        return {"cfg": kwargs}

    def configure(self, config):
        self.log.append(("configure",))

    def start(self):
        self.log.append(("start", dict(self.options)))

    def set_controls(self, controls):
        self.log.append(("set_controls", controls))

    def autofocus_cycle(self):
        self.log.append(("autofocus_cycle",))
        return True

    def capture_array(self, name):
        self.log.append(("capture_array", name))
        return np.zeros((720 * 3 // 2, 1344), np.uint8)  # rows padded to a stride

    def capture_request(self):
        self.log.append(("capture_request",))
        return FakeRequest(self.log)

    def stop(self):
        self.log.append(("stop",))

    def close(self):
        self.log.append(("close",))


def test_picamera2_call_sequence():
    cam = Picamera2Camera((4608, 2592), (1280, 720), jpeg_quality=85,
                          tuning_file="/usr/share/libcamera/ipa/rpi/vc4/imx708.json",
                          picamera2_class=FakePicamera2)
    fake = FakePicamera2.instances[-1]
    frame = next(cam.scan_frames())
    assert frame.shape == (720, 1280)
    buf = bytearray()
    info = cam.capture_jpeg(buf)
    cam.close()
    assert bytes(buf) == b"\xff\xd8fake-jpeg\xff\xd9"
    assert info.size == len(buf) and info.model == "imx708"
    assert (info.exposure_us, info.analogue_gain, info.lens_position) == (8000, 2.5, 3.2)
    names = [entry[0] for entry in fake.log]
    assert names == ["Picamera2", "create_still_configuration", "configure", "start",
                     "set_controls", "capture_array", "autofocus_cycle", "capture_request",
                     "request.save", "request.get_metadata", "request.release",
                     "set_controls", "stop", "close"]
    assert fake.log[0][2].endswith("imx708.json")  # a path, never a dict
    assert fake.log[1][1]["lores"] == {"size": (1280, 720), "format": "YUV420"}
    assert fake.log[3][1] == {"quality": 85}
    assert fake.log[8][2:] == ("BytesIO", "jpeg", {"0th": {}, "Exif": {}})


def test_picamera2_without_autofocus():
    cam = Picamera2Camera(picamera2_class=lambda n, tuning: FakePicamera2(n, tuning, af=False))
    fake = FakePicamera2.instances[-1]
    cam.capture_jpeg(bytearray())
    names = [entry[0] for entry in fake.log]
    assert "autofocus_cycle" not in names and "set_controls" not in names


def test_picamera2_missing_camera():
    def broken(*args, **kwargs):
        raise IndexError("list index out of range")

    with pytest.raises(CameraUnavailable):
        Picamera2Camera(picamera2_class=broken)
