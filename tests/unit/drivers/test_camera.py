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

    def __init__(self, camera_num=0, tuning=None, af=True, scan_size=(1280, 720)):
        self.log = [("Picamera2", camera_num, tuning)]
        self.options = {}
        self.camera_controls = {"AfMode": (0, 2, 0)} if af else {}
        self.camera_properties = {"Model": "imx708"}
        self.scan_size = scan_size
        self.stall = None  # an exception the next waiting call raises
        FakePicamera2.instances.append(self)

    def create_preview_configuration(self, **kwargs):
        self.log.append(("create_preview_configuration", kwargs))
        return {"use_case": "preview", **kwargs}

    def create_still_configuration(self, **kwargs):
        self.log.append(("create_still_configuration", kwargs))
        return {"use_case": "still", **kwargs}

    def configure(self, config):
        self.log.append(("configure", config["use_case"]))

    def camera_configuration(self):
        return {"main": {"size": self.scan_size, "stride": 1344, "format": "YUV420"}}

    def start(self):
        self.log.append(("start", dict(self.options)))

    def set_controls(self, controls):
        self.log.append(("set_controls", controls))

    def _wait(self, name, wait):
        self.log.append((name, wait))
        if self.stall is not None:
            raise self.stall

    def autofocus_cycle(self, wait=None):
        self._wait("autofocus_cycle", wait)
        return True

    def capture_array(self, name, wait=None):
        self._wait("capture_array", wait)
        assert name == "main"
        return np.zeros((self.scan_size[1] * 3 // 2, 1344), np.uint8)  # rows padded to a stride

    def switch_mode_capture_request_and_stop(self, config, wait=None):
        self._wait("switch_mode_capture_request_and_stop", wait)
        assert config["use_case"] == "still"
        return FakeRequest(self.log)

    def cancel_all_and_flush(self):
        self.log.append(("cancel_all_and_flush",))

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
    assert names == ["Picamera2", "create_preview_configuration", "create_still_configuration",
                     "configure", "start", "set_controls", "capture_array", "autofocus_cycle",
                     "switch_mode_capture_request_and_stop", "request.save", "request.get_metadata",
                     "request.release", "configure", "start", "set_controls",
                     "cancel_all_and_flush", "stop", "close"]
    assert fake.log[12][1] == "preview"  # back to the scan configuration after the release
    assert fake.log[0][2].endswith("imx708.json")  # a path, never a dict
    scan = fake.log[1][1]
    assert scan["main"] == {"size": (1280, 720), "format": "YUV420"} and scan["buffer_count"] >= 3
    assert scan["controls"]["FrameDurationLimits"][1] <= 100_000  # >= 10 fps in any light
    assert scan["controls"]["NoiseReductionMode"] == 1  # Fast
    assert fake.log[2][1]["main"] == {"size": (4608, 2592)}
    assert fake.log[3][1] == "preview"
    assert fake.log[4][1] == {"quality": 85}
    assert all(entry[1] is not None for entry in fake.log if entry[0] in
               ("capture_array", "autofocus_cycle", "switch_mode_capture_request_and_stop"))  # timeouts
    assert fake.log[9][2:] == ("BytesIO", "jpeg", {"0th": {}, "Exif": {}})


def test_scan_size_is_read_back_from_the_camera():
    # libcamera may align the size it was asked for: the Y plane follows what it set.
    cam = Picamera2Camera(lores_size=(1280, 720),
                          picamera2_class=lambda n, tuning: FakePicamera2(n, tuning, scan_size=(1216, 684)))
    assert next(cam.scan_frames()).shape == (684, 1216)
    cam.close()


def test_picamera2_without_autofocus():
    cam = Picamera2Camera(picamera2_class=lambda n, tuning: FakePicamera2(n, tuning, af=False))
    fake = FakePicamera2.instances[-1]
    cam.capture_jpeg(bytearray())
    names = [entry[0] for entry in fake.log]
    assert "autofocus_cycle" not in names and "set_controls" not in names


def test_a_stalled_camera_times_out_and_is_flushed():
    from concurrent.futures import TimeoutError as FutureTimeout

    cam = Picamera2Camera(picamera2_class=FakePicamera2)
    fake = FakePicamera2.instances[-1]
    fake.stall = FutureTimeout()
    with pytest.raises(CameraUnavailable, match="no focus from the camera in time"):
        cam.capture_jpeg(bytearray())
    with pytest.raises(CameraUnavailable, match="no scan frame"):
        next(cam.scan_frames())
    assert [e[0] for e in fake.log].count("cancel_all_and_flush") == 2
    cam.close()


def test_close_does_not_wait_for_a_capture_in_progress():
    # The camera thread holds the driver's lock in a capture that never returns; close
    # (the wipe's path) must still return, and cancel the capture.
    import threading

    cam = Picamera2Camera(picamera2_class=FakePicamera2)
    fake = FakePicamera2.instances[-1]
    release = threading.Event()
    entered = threading.Event()

    def stuck(config, wait=None):
        entered.set()
        release.wait(5)
        from concurrent.futures import CancelledError

        raise CancelledError()

    fake.switch_mode_capture_request_and_stop = stuck
    fake.autofocus_cycle = lambda wait=None: True
    outcome = []

    def capture():
        try:
            cam.capture_jpeg(bytearray())
        except CameraUnavailable as exc:
            outcome.append(exc)

    worker = threading.Thread(target=capture)
    worker.start()
    assert entered.wait(5)
    cam.close()  # returns although the capture still holds the lock
    assert [e[0] for e in fake.log][-3:] == ["cancel_all_and_flush", "stop", "close"]
    release.set()
    worker.join(5)
    assert len(outcome) == 1  # the capture ended as CameraUnavailable, not a hang
    with pytest.raises(CameraUnavailable, match="closed"):
        cam.capture_jpeg(bytearray())


def _raising(exc):
    def factory(*args, **kwargs):
        raise exc
    return factory


def _no_dev(tmp_path):
    d = tmp_path / "empty-dev"
    d.mkdir(exist_ok=True)
    return str(d)


def test_picamera2_missing_camera(tmp_path):
    with pytest.raises(CameraUnavailable, match="Camera not found: check the ribbon cable"):
        Picamera2Camera(picamera2_class=_raising(IndexError("list index out of range")),
                        dev_dir=_no_dev(tmp_path))


def test_permission_problems_are_not_reported_as_a_missing_camera(tmp_path):
    dev = tmp_path / "dev"
    (dev / "dma_heap").mkdir(parents=True)
    for node in ("media0", "video0", "dma_heap/linux,cma"):
        (dev / node).touch()
    denied = {str(dev / "dma_heap/linux,cma")}

    def access(path, mode):
        return path not in denied

    # libcamera lists no camera when it may not open the nodes: the nodes tell.
    none_listed = RuntimeError("Camera __init__ sequence did not complete.")
    with pytest.raises(CameraUnavailable, match=r"permission denied on .*dma_heap/linux,cma.*'video' group"):
        Picamera2Camera(picamera2_class=_raising(none_listed), dev_dir=str(dev), access=access)
    # picamera2 0.3.36: DmaHeap's os.open raises PermissionError itself.
    with pytest.raises(CameraUnavailable, match="Camera not accessible"):
        Picamera2Camera(picamera2_class=_raising(PermissionError(13, "Permission denied")),
                        dev_dir=_no_dev(tmp_path))
    # picamera2 0.3.38: no heap device could be opened.
    with pytest.raises(CameraUnavailable, match="Camera buffers unavailable"):
        Picamera2Camera(picamera2_class=_raising(RuntimeError("Could not open any dmaHeap device")),
                        dev_dir=_no_dev(tmp_path))
    # Positive control: the same nodes, all accessible, and no camera: "not found".
    with pytest.raises(CameraUnavailable, match="Camera not found"):
        Picamera2Camera(picamera2_class=_raising(none_listed), dev_dir=str(dev), access=lambda p, m: True)


def test_a_refused_configuration_is_mapped_and_closes_the_camera():
    class Refusing(FakePicamera2):
        def configure(self, config):
            raise RuntimeError("lores stream dimensions may not exceed main stream")

    with pytest.raises(CameraUnavailable, match="refused its configuration"):
        Picamera2Camera(picamera2_class=Refusing)
    assert [e[0] for e in FakePicamera2.instances[-1].log][-2:] == ["stop", "close"]
