"""The camera thread: the only thread that touches the camera (picamera2 wants one).

It scans luminance frames for codes and, between two frames, takes the stills the
workflow asks for. Codes are decoded, reported once per presentation, classified and
*posted* as events; the thread owns no workflow state. A still is a job with a future:
the workflow thread waits for it (a capture is the one thing it has to wait for), while
the wipe path never does (DESIGN §3.4).

Scanned text is classified here and dropped: only the classified value (in memory) or
a rejection reason code travels on.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout

import numpy as np
from clinicam.common.errors import CameraUnavailable, CodeRejected
from clinicam.drivers.camera import Camera, StillInfo
from clinicam.drivers.readers import Code, CodeReader, PresentationFilter
from clinicam.firmware.codes.classify import CodeRules, classify
from clinicam.firmware.workflow.events import CodeRejectedEvent, CodeScanned, Event

log = logging.getLogger(__name__)


def post_classified(code: Code, rules: CodeRules, post: Callable[[Event], None], now: float) -> None:
    """Classify a code (from the camera or a handheld scanner) and post what it means.

    The scanned text goes no further than this function: the event carries the
    classified identity (in memory only) or a rejection reason code.
    """
    try:
        post(CodeScanned(classify(code, rules), now))
    except CodeRejected as exc:
        log.info("code rejected: %s (%s)", exc.reason, code.symbology)
        post(CodeRejectedEvent(exc.reason))


class CameraWorker:
    """Scans for codes and takes stills on one thread."""

    def __init__(
        self,
        camera: Camera,
        reader: CodeReader,
        rules: CodeRules,
        post: Callable[[Event], None],
        *,
        clear_after_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.camera, self.reader, self.rules, self._post = camera, reader, rules, post
        self._clock = clock
        self._filter = PresentationFilter(clear_after_s, clock)
        self._jobs: list[tuple[bytearray, Future[StillInfo]]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._reset = threading.Event()
        self._thread: threading.Thread | None = None
        self.heartbeat = clock()
        self.failed: BaseException | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="camera", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        self._fail_pending(CameraUnavailable("the camera thread stopped"))

    def alive(self, max_silence_s: float) -> bool:
        """For the watchdog: the thread runs and went round its loop recently."""
        running = self._thread is not None and self._thread.is_alive()
        return running and self._clock() - self.heartbeat < max_silence_s

    def forget_codes(self) -> None:
        """After a wipe or a session end: a code still in view counts as new again."""
        self._reset.set()

    def capture(self, into: bytearray, timeout_s: float = 15.0) -> StillInfo:
        """Take a still into ``into`` on the camera thread; raises ``CameraUnavailable``."""
        future: Future[StillInfo] = Future()
        with self._lock:
            if self._stop.is_set() or self.failed is not None:
                raise CameraUnavailable("the camera is not running: see the log, restart the station")
            self._jobs.append((into, future))
        try:
            return future.result(timeout_s)
        except FutureTimeout:
            raise CameraUnavailable(f"no still within {timeout_s:.0f} s: check the camera") from None

    # --- the thread -----------------------------------------------------------------

    def _run(self) -> None:
        try:
            for frame in self.camera.scan_frames():
                self.heartbeat = self._clock()
                if self._stop.is_set():
                    return
                self._take_stills()
                self._read_codes(frame)
        except Exception as exc:  # the watchdog and the next capture report it
            self.failed = exc
            log.error("camera thread failed: %s", type(exc).__name__)
            self._fail_pending(CameraUnavailable("camera failed: check the camera and restart the station"))

    def _take_stills(self) -> None:
        with self._lock:
            jobs, self._jobs = self._jobs, []
        for into, future in jobs:
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(self.camera.capture_jpeg(into))
            except Exception as exc:
                future.set_exception(exc)

    def _read_codes(self, frame: np.ndarray) -> None:
        if self._reset.is_set():
            self._reset.clear()
            self._filter.reset()
        codes = self.reader.decode(frame)
        for code in self._filter.feed(codes):
            post_classified(code, self.rules, self._post, self._clock())

    def _fail_pending(self, error: BaseException) -> None:
        with self._lock:
            jobs, self._jobs = self._jobs, []
        for _, future in jobs:
            if future.set_running_or_notify_cancel():
                future.set_exception(error)
