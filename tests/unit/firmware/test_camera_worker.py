"""The camera thread: codes from real rendered frames become events, stills come back.

Runs a real ``SimulatedCamera`` and the real zxing-cpp reader; the frame pacing is the
simulated camera's own (15 fps). Presentation time is the worker's injected clock, moved
by the test: no test sleeps to let time pass.
"""

from __future__ import annotations

import queue

import pytest
from clinicam.drivers.camera import SimulatedCamera
from clinicam.drivers.readers import Code, make_reader
from clinicam.drivers.scenes import Scene, Symbol
from clinicam.firmware.capture.camera_worker import CameraWorker, post_classified
from clinicam.firmware.codes.classify import CardCode, CodeRules, PatientId
from clinicam.firmware.codes.gs1 import gs1_check_digit
from clinicam.firmware.workflow.events import CodeRejectedEvent, CodeScanned

GSRN = "79999990000042424"
GSRN += gs1_check_digit(GSRN)


def wristband(content: str = f"(8018){GSRN}") -> Scene:
    return Scene(symbols=(Symbol(content, "gs1-128", module_px=2.6),))


class Clock:
    """The worker's monotonic clock, moved only by the test."""

    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def worker(clock: Clock):
    camera = SimulatedCamera(frame_size=(1280, 720), still_size=(640, 480))
    events: queue.Queue = queue.Queue()
    w = CameraWorker(camera, make_reader("auto"), CodeRules(), events.put, clear_after_s=0.5, clock=clock)
    w.start()
    yield camera, w, events
    w.stop()


def frames_seen(w: CameraWorker) -> None:
    """Return once the worker has read the codes of at least one frame shown from now on.

    A still is taken at the top of the loop, before that frame's codes are read, so a
    second still cannot be taken before the frame of the first was fully read.
    """
    for _ in range(2):
        w.capture(bytearray(), timeout_s=10)


def next_event(events: queue.Queue, timeout: float = 10.0):
    return events.get(timeout=timeout)


def test_a_wristband_in_view_is_reported_once_per_presentation(worker, clock):
    camera, w, events = worker
    camera.show(wristband())
    first = next_event(events)
    assert isinstance(first, CodeScanned)
    assert first.classified == PatientId(GSRN, "GS1", None)
    assert first.now == clock.t  # the event is dated by the injected clock
    for _ in range(10):  # still in view, frame after frame for 2 s: the same presentation
        clock.t += 0.2
        frames_seen(w)
    assert events.empty()
    camera.show(None)  # a gap shorter than clear_after_s: a decoder missing a frame
    frames_seen(w)
    clock.t += 0.3
    camera.show(wristband())
    frames_seen(w)
    assert events.empty()
    camera.show(None)  # out of view longer than clear_after_s: the next showing counts
    frames_seen(w)
    clock.t += 0.6
    frames_seen(w)
    camera.show(wristband())
    assert isinstance(next_event(events), CodeScanned)


def test_a_rejected_code_posts_its_reason_and_never_its_text(worker):
    camera, _w, events = worker
    bad = GSRN[:-1] + str((int(GSRN[-1]) + 1) % 10)  # wrong check digit
    camera.show(wristband(f"(8018){bad}"))
    event = next_event(events)
    assert event == CodeRejectedEvent("check-digit")
    assert bad not in repr(event)


def test_a_card_is_classified(worker):
    camera, _w, events = worker
    camera.show(Scene(symbols=(Symbol("CLINICAM:LAT:LEFT", "qr", module_px=6.0),)))
    event = next_event(events)
    assert isinstance(event.classified, CardCode)
    assert (event.classified.kind, event.classified.value) == ("LAT", "LEFT")


def test_a_still_is_taken_on_the_camera_thread_into_the_callers_buffer(worker):
    _camera, w, _events = worker
    buf = bytearray()
    info = w.capture(buf, timeout_s=10)
    assert buf[:2] == b"\xff\xd8" and len(buf) == info.size
    assert (info.width, info.height) == (640, 480)
    assert w.alive(max_silence_s=5)


def test_handheld_scanner_codes_take_the_same_path():
    events: list = []
    post_classified(Code("gs1-128", f"8018{GSRN}", f"8018{GSRN}".encode(), "]C1"), CodeRules(), events.append, 1.0)
    post_classified(Code("ean13", "4006381333931", b"4006381333931", "]E0"), CodeRules(), events.append, 2.0)
    assert events[0] == CodeScanned(PatientId(GSRN, "GS1", None), 1.0)
    assert events[1] == CodeRejectedEvent("unknown")


def test_the_station_reader_reads_a_band_turned_45_degrees():
    """The station's reader (the pipeline on the stream, as build_hardware wires it)
    reports a band at 45° once; one plain zxing-cpp call per frame never does."""
    from clinicam.drivers.pipeline import PipelineReader, StreamReader
    from clinicam.firmware.codes.gs1 import plausible

    band = Scene(symbols=(Symbol(f"(8018){GSRN}", "gs1-128", module_px=2.6, angle=45),))
    for reader, expect in ((make_reader("zxing"), False),
                           (StreamReader(PipelineReader(gs1=plausible)), True)):
        clock = Clock()
        camera = SimulatedCamera(frame_size=(1280, 720), still_size=(1280, 720))
        events: queue.Queue = queue.Queue()
        w = CameraWorker(camera, reader, CodeRules(), events.put, clear_after_s=0.5, clock=clock)
        camera.show(band)
        w.start()
        try:
            if expect:
                event = next_event(events)
                assert isinstance(event, CodeScanned)
                assert event.classified == PatientId(GSRN, "GS1", None)
            for _ in range(5):  # frame after frame, still in view: nothing more (or nothing)
                clock.t += 0.1
                frames_seen(w)
            assert events.empty()
        finally:
            w.stop()
