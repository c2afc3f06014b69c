"""Cameras: a luminance stream for reading codes, and full-resolution JPEG stills.

Stills are written into a caller-provided ``bytearray`` (resized to fit), never to a
file: the caller seals it and zeroes it (DESIGN §3.2). Both calls are made from one
thread, the station's camera thread (picamera2 is not safe to drive from several).

``Picamera2Camera`` documents the exact picamera2 call sequence it uses; the unit tests
check it against a recording stand-in, ``tests/hardware`` against a real Camera Module.
``SimulatedCamera`` serves rendered scenes or a folder of images, on a script, with an
injectable clock.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import io
import logging
import os
import threading
import time
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeAlias

import numpy as np
from clinicam.common.errors import CameraUnavailable
from clinicam.drivers.scenes import Scene
from PIL import Image

log = logging.getLogger(__name__)

MAX_SIM_PIXELS = 12_000_000
AF_MODE_AUTO = 1  # libcamera controls.AfModeEnum.Auto
AF_MODE_CONTINUOUS = 2  # libcamera controls.AfModeEnum.Continuous


@dataclass(frozen=True)
class StillInfo:
    size: int  # bytes of JPEG written into the caller's buffer
    width: int
    height: int
    model: str | None
    exposure_us: int | None
    analogue_gain: float | None
    lens_position: float | None


class Camera(Protocol):
    def scan_frames(self) -> Generator[np.ndarray, None, None]: ...  # luminance planes, forever
    def capture_jpeg(self, into: bytearray) -> StillInfo: ...
    def close(self) -> None: ...


class StillCropper(Protocol):
    """Optional camera capability: a luminance crop of the full-resolution still stream.

    ``box`` is a region of the scan frame (x0, y0, x1, y1 in its pixels); the result is
    the same region at the still's resolution, its scale (still px per scan px) and the
    frame pixel its top-left corner maps to. The code reader asks for one when the scan
    frame located a symbol it could not resolve (1 px modules). See README "Reading
    codes" for what a Pi driver does (one ``capture_request``, crop of the "main" plane).
    """

    def capture_region(self, box: tuple[int, int, int, int]
                       ) -> tuple[np.ndarray, float, tuple[int, int]]: ...


def _luminance(pixels: np.ndarray) -> np.ndarray:
    """Rec. 601 luma of a 3-channel crop as uint8 (a luminance plane passes through).

    picamera2's still "main" plane is BGR888, which it stores as [R, G, B] per pixel;
    for reading bars the weights matter far less than the resolution.
    """
    if pixels.ndim == 2:
        return np.ascontiguousarray(pixels)
    rgb = pixels[..., :3].astype(np.float32)
    luma = rgb[..., 0] * 0.299 + rgb[..., 1] * 0.587 + rgb[..., 2] * 0.114
    return np.ascontiguousarray(np.clip(luma + 0.5, 0, 255).astype(np.uint8))


def _fill(into: bytearray, view: memoryview) -> int:
    """Copy ``view`` into ``into`` (resized) and zero the source."""
    into[:] = view
    view[:] = bytes(len(view))
    return len(into)


# Scanning: a bounded frame time (at least 10 fps whatever the light) and fast noise
# reduction, with enough buffers that a frame is always ready; the still mode (12 MP,
# high-quality denoise, frame times up to 1 s) is entered only for the capture.
SCAN_BUFFERS = 4
SCAN_FRAME_US = (33_333, 100_000)  # libcamera FrameDurationLimits (min, max)
NR_FAST = 1  # libcamera controls.draft.NoiseReductionModeEnum.Fast
CAPTURE_TIMEOUT_S = 10.0  # autofocus cycle + mode switch + one 12 MP frame, with margin
SCAN_TIMEOUT_S = 2.0  # twenty frame times at the slowest scan rate
CLOSE_TIMEOUT_S = 3.0


class Picamera2Camera:
    """Raspberry Pi camera through picamera2 (from Raspberry Pi OS, imported here only).

    Call sequence: ``Picamera2(camera_num, tuning=<path or None>)`` (a path, because a
    tuning *dict* makes picamera2 write a temporary file) → scanning configuration
    ``create_preview_configuration(main={"size": lores, "format": "YUV420"},
    buffer_count=4, controls={FrameDurationLimits, NoiseReductionMode: Fast},
    display=None, encode=None)`` and still configuration
    ``create_still_configuration(main={"size": still}, buffer_count=1, display=None)``
    → ``configure(scan)`` → the scan stream's size and stride read back from
    ``camera_configuration()`` (libcamera may align them) → ``options["quality"] = q``
    → ``start`` → ``set_controls({"AfMode": Continuous})`` when the camera has ``AfMode``.
    Scanning: ``capture_array("main", wait=timeout)``, Y plane = the first ``height``
    rows and ``width`` columns (rows are padded to the stride).
    Still: ``autofocus_cycle(wait=timeout)`` (AF cameras) →
    ``switch_mode_capture_request_and_stop(still, wait=timeout)`` →
    ``request.save("main", BytesIO, format="jpeg", exif_data={"0th": {}, "Exif": {}})``
    → ``request.get_metadata()`` → ``request.release()`` → ``configure(scan)`` →
    ``start()`` → back to continuous AF. A timeout cancels picamera2's pending jobs
    (``cancel_all_and_flush``) and raises ``CameraUnavailable``.

    Copies of the JPEG: picamera2's fast path encodes into an immutable ``bytes`` and,
    to insert the EXIF block, slices it into a second one before writing both into our
    ``BytesIO``. The ``BytesIO`` is zeroed here; those ``bytes`` objects cannot be, and
    are freed to the allocator (which the unit's ``MALLOC_PERTURB_`` overwrites on
    free). The raw 12 MP frame stays in a dma-buf that the next capture reuses.
    """

    # A still crop pauses scanning for one mode switch: at most one every 2 s keeps
    # the scan stream running at least ~80 % of the time.
    region_interval_s = 2.0

    def __init__(
        self,
        still_size: tuple[int, int] = (4608, 2592),
        lores_size: tuple[int, int] = (1280, 720),
        jpeg_quality: int = 90,
        autofocus: bool = True,
        tuning_file: str | None = None,
        camera_num: int = 0,
        picamera2_class: Any = None,
        *,
        capture_timeout_s: float = CAPTURE_TIMEOUT_S,
        scan_timeout_s: float = SCAN_TIMEOUT_S,
        dev_dir: str = "/dev",
        access: Callable[[str, int], bool] = os.access,
    ) -> None:
        cls = picamera2_class or self._import()
        try:
            self._cam = cls(camera_num, tuning=tuning_file or None)
        except Exception as exc:  # picamera2 raises RuntimeError, IndexError, OSError
            raise CameraUnavailable(open_problem(exc, dev_dir, access)) from exc
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._capture_timeout, self._scan_timeout = capture_timeout_s, scan_timeout_s
        self._still = still_size
        try:
            self._configure(still_size, lores_size, jpeg_quality, autofocus)
        except Exception as exc:
            self._close_now()
            raise CameraUnavailable(
                f"the camera refused its configuration ({type(exc).__name__}): check [camera] "
                "still_* and lores_* in /etc/clinicam/station.toml against the sensor's modes"
            ) from exc
        self.model = str(self._cam.camera_properties.get("Model") or "") or None

    def _configure(self, still: tuple[int, int], lores: tuple[int, int], quality: int,
                   autofocus: bool) -> None:
        cam = self._cam
        self._scan_config = cam.create_preview_configuration(
            main={"size": lores, "format": "YUV420"}, buffer_count=SCAN_BUFFERS,
            controls={"FrameDurationLimits": SCAN_FRAME_US, "NoiseReductionMode": NR_FAST},
            display=None, encode=None,
        )
        self._still_config = cam.create_still_configuration(
            main={"size": still}, buffer_count=1, display=None,
        )
        cam.configure(self._scan_config)
        # libcamera may align the size (and pads rows to the stride): use what it set.
        main = cam.camera_configuration()["main"]
        self.scan_size = (int(main["size"][0]), int(main["size"][1]))
        cam.options["quality"] = quality
        self._af = autofocus and "AfMode" in cam.camera_controls
        cam.start()
        if self._af:
            cam.set_controls({"AfMode": AF_MODE_CONTINUOUS})

    @staticmethod
    def _import() -> Any:
        try:
            from picamera2 import Picamera2
        except ImportError as exc:
            raise CameraUnavailable(
                "picamera2 is not importable: install python3-picamera2 from Raspberry Pi OS "
                "and create the venv with --system-site-packages"
            ) from exc
        return Picamera2

    def scan_frames(self) -> Generator[np.ndarray, None, None]:
        """The scan stream's Y plane, frame after frame."""
        width, height = self.scan_size
        while not self._closed.is_set():
            with self._lock:
                yuv = self._waiting(lambda: self._cam.capture_array("main", wait=self._scan_timeout),
                                    "no scan frame")
            # Rows may be padded to the stride: keep exactly the Y plane's pixels.
            yield yuv[:height, :width]

    def capture_jpeg(self, into: bytearray) -> StillInfo:
        """Focus once, switch to the still mode for one JPEG into ``into``, switch back."""
        buf = io.BytesIO()
        with self._lock:
            if self._af:
                self._waiting(lambda: self._cam.autofocus_cycle(wait=self._capture_timeout), "no focus")
            # Not switch_mode_and_capture_request: it switches back (reallocating the
            # buffers) while our request still holds one, and picamera2's DmaAllocator
            # then reuses that fd number and loses track of it (KeyError on the next
            # switch; found through tests/picamera2_sim). Release first, then restart.
            request = self._waiting(
                lambda: self._cam.switch_mode_capture_request_and_stop(self._still_config,
                                                                       wait=self._capture_timeout),
                "no still")
            try:
                request.save("main", buf, format="jpeg", exif_data={"0th": {}, "Exif": {}})
                meta = request.get_metadata()
            finally:
                request.release()
                self._restart_scan()
        view = buf.getbuffer()
        try:
            size = _fill(into, view)
        finally:
            view.release()
            buf.close()
        if size == 0:
            raise CameraUnavailable("the camera returned an empty image: check the camera")
        return StillInfo(size, self._still[0], self._still[1], self.model,
                         _int(meta.get("ExposureTime")), _float(meta.get("AnalogueGain")),
                         _float(meta.get("LensPosition")))

    def capture_region(self, box: tuple[int, int, int, int]
                       ) -> tuple[np.ndarray, float, tuple[int, int]]:
        """``StillCropper``: one frame of the still mode, cut to ``box`` (scan pixels).

        The same mode switch as a capture (``switch_mode_capture_request_and_stop``),
        but only the crop of the "main" plane is converted to luminance and kept; the
        request is released at once. It costs one mode switch (about 0.4 s in the
        bench's simulation, more on a Pi), so the code reader asks for it at most once
        per ``region_interval_s`` and only for a region it located but could not resolve.
        """
        scale = self._still[0] / self.scan_size[0]
        x0, y0, x1, y1 = (max(0, int(v)) for v in box)
        with self._lock:
            request = self._waiting(
                lambda: self._cam.switch_mode_capture_request_and_stop(self._still_config,
                                                                       wait=self._capture_timeout),
                "no still")
            try:
                rgb = request.make_array("main")
                crop = rgb[int(y0 * scale): int(y1 * scale), int(x0 * scale): int(x1 * scale)]
                luma = _luminance(crop)
            finally:
                request.release()
                self._restart_scan()
        return luma, scale, (x0, y0)

    def _restart_scan(self) -> None:
        self._cam.configure(self._scan_config)
        self._cam.start()
        if self._af:
            self._cam.set_controls({"AfMode": AF_MODE_CONTINUOUS})

    def _waiting(self, call: Callable[[], Any], what: str) -> Any:
        """Run a picamera2 call that waits on the camera; a timeout is CameraUnavailable."""
        if self._closed.is_set():
            raise CameraUnavailable("the camera is closed")
        try:
            return call()
        except (TimeoutError, concurrent.futures.TimeoutError, concurrent.futures.CancelledError) as exc:
            # The job stays queued in picamera2 after a timeout: cancel it, or the next
            # call would wait behind it.
            with contextlib.suppress(Exception):
                self._cam.cancel_all_and_flush()
            raise CameraUnavailable(f"{what} from the camera in time: check the ribbon cable "
                                    "and restart the station") from exc

    def close(self) -> None:
        """Stop and close without waiting on a stuck capture (the wipe must not).

        Pending captures are cancelled first (they raise ``CameraUnavailable`` on the
        camera thread); stop and close then run on a helper thread given
        ``CLOSE_TIMEOUT_S``: a camera that hangs in the kernel is left to process exit.
        """
        if self._closed.is_set():
            return
        self._closed.set()
        with contextlib.suppress(Exception):
            self._cam.cancel_all_and_flush()
        closer = threading.Thread(target=self._close_now, name="camera-close", daemon=True)
        closer.start()
        closer.join(CLOSE_TIMEOUT_S)
        if closer.is_alive():
            log.warning("camera did not stop within %.0f s; left to process exit", CLOSE_TIMEOUT_S)

    def _close_now(self) -> None:
        with contextlib.suppress(Exception):
            self._cam.stop()
        with contextlib.suppress(Exception):
            self._cam.close()


def open_problem(exc: BaseException, dev_dir: str = "/dev",
                 access: Callable[[str, int], bool] = os.access) -> str:
    """What stopped picamera2 from opening the camera, as a message with its remedy.

    A permission problem looks like a missing camera to libcamera (it lists no camera
    when it may not open /dev/media* and /dev/video*), and picamera2 raises
    ``PermissionError`` (0.3.36) or ``RuntimeError("Could not open any dmaHeap
    device")`` (0.3.38) when /dev/dma_heap is not accessible: the chain and the device
    nodes tell the cases apart.
    """
    denied = _denied_nodes(dev_dir, access)
    chain = _chain(exc)
    if denied or any(isinstance(e, PermissionError) for e in chain):
        where = ", ".join(denied) or "a camera device"
        return (f"Camera not accessible: permission denied on {where}: the station user must "
                "be in the 'video' group and raspberrypi-sys-mods' udev rules installed "
                "(they give /dev/dma_heap/* that group), and the unit must allow the device")
    if any("dmaHeap" in str(e) for e in chain):
        return ("Camera buffers unavailable: no /dev/dma_heap device: check that the kernel "
                "has the CMA heap (Raspberry Pi OS kernel) and that raspberrypi-sys-mods is installed")
    return ("Camera not found: check the ribbon cable and 'rpicam-hello --list-cameras', "
            'or set [hardware] backend = "sim" in /etc/clinicam/station.toml')


def _chain(exc: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    cur: BaseException | None = exc
    while cur is not None and cur not in seen:
        seen.append(cur)
        cur = cur.__cause__ or cur.__context__
    return seen


def _denied_nodes(dev_dir: str, access: Callable[[str, int], bool]) -> list[str]:
    """Camera device nodes that exist but that this process may not open read-write."""
    root = Path(dev_dir)
    nodes = sorted([*root.glob("media[0-9]*"), *root.glob("video[0-9]*"), *root.glob("dma_heap/*")])
    return [str(n) for n in nodes if not access(str(n), os.R_OK | os.W_OK)]


def _int(v: Any) -> int | None:
    return None if v is None else int(v)


def _float(v: Any) -> float | None:
    return None if v is None else float(v)


Shown: TypeAlias = "Scene | np.ndarray | None"  # a scene, a ready luminance image, or nothing in view


class SimulatedCamera:
    """Rendered scenes or image files, shown on a script, with an injectable clock.

    ``play([(wristband, 0.5), (card, 0.5), (None, None)])`` shows the wristband for half
    a second, then the card, then nothing for ever (a ``None`` duration holds). Time is
    ``clock()``; ``scan_frames`` paces itself with ``sleep(1/fps)``, so a test passes a
    sleep that advances its fake clock and runs without waiting.
    """

    def __init__(
        self,
        frame_size: tuple[int, int] = (1280, 720),
        still_size: tuple[int, int] = (2304, 1296),
        *,
        folder: str | Path | None = None,
        hold_s: float = 2.0,
        fps: float = 15.0,
        jpeg_quality: int = 90,
        marker: bytes | bytearray | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if still_size[0] * still_size[1] > MAX_SIM_PIXELS:
            raise ValueError("simulated stills are limited to 12 megapixels")
        self.frame_size, self.still_size = frame_size, still_size
        self._fps, self._quality, self._marker = fps, jpeg_quality, marker
        self._clock, self._sleep = clock, sleep
        self._script: list[tuple[Shown, float | None]] = []
        self._loop = False
        self._started = clock()
        self._cache: dict[tuple[int, tuple[int, int]], np.ndarray] = {}
        if folder is not None:
            self.play([(_load(p), hold_s) for p in _images_in(folder)], loop=True)

    def play(self, script: Sequence[tuple[Shown, float | None]], loop: bool = False) -> None:
        """Replace the script; it starts now."""
        self._script, self._loop, self._started = list(script), loop, self._clock()
        self._cache.clear()

    def show(self, shown: Shown) -> None:
        """Show one thing until told otherwise."""
        self.play([(shown, None)])

    def current(self) -> Shown:
        """What is in front of the camera now."""
        elapsed = self._clock() - self._started
        total = sum(d or 0.0 for _, d in self._script)
        if self._loop and total > 0 and all(d for _, d in self._script):
            elapsed %= total
        for shown, seconds in self._script:
            if seconds is None or elapsed < seconds:
                return shown
            elapsed -= seconds
        return None

    def _image(self, shown: Shown, size: tuple[int, int]) -> np.ndarray:
        key = (id(shown), size)
        if key not in self._cache:
            self._cache[key] = _render(shown, size)
        return self._cache[key]

    def scan_frames(self) -> Generator[np.ndarray, None, None]:
        while True:
            yield self._image(self.current(), self.frame_size)
            self._sleep(1.0 / self._fps)

    def capture_jpeg(self, into: bytearray) -> StillInfo:
        """A real JPEG of what is in view, at ``still_size``, into ``into``.

        With a marker set, it goes into a COM segment right after SOI; the JPEG is
        assembled directly in ``into`` and the encoder's buffer zeroed, so the only
        copies of the marker are the caller's buffer and the marker object itself.
        """
        pixels = _render(self.current(), self.still_size)
        buf = io.BytesIO()
        Image.fromarray(pixels, "L").convert("RGB").save(buf, format="JPEG",
                                                        quality=self._quality)
        view = buf.getbuffer()
        try:
            size = _fill_with_comment(into, view, self._marker)
        finally:
            view.release()
        w, h = self.still_size
        return StillInfo(size, w, h, "simulated", 10000, 1.0, None)

    def capture_region(self, box: tuple[int, int, int, int]
                       ) -> tuple[np.ndarray, float, tuple[int, int]]:
        """``StillCropper``: what is in view rendered at ``still_size``, cropped to ``box``
        (scan-frame pixels) scaled up; the still is rendered, not a resized scan frame,
        so a crop really holds detail the scan frame lacks."""
        scale = self.still_size[0] / self.frame_size[0]
        pixels = self._image(self.current(), self.still_size)
        x0, y0, x1, y1 = (max(0, v) for v in box)
        crop = pixels[int(y0 * scale): int(y1 * scale), int(x0 * scale): int(x1 * scale)]
        return np.ascontiguousarray(crop), scale, (x0, y0)

    def set_marker(self, marker: bytes | bytearray | None) -> None:
        """Plant ``marker`` in the next stills (memory-residue tests); None stops."""
        self._marker = marker

    def clear_marker(self) -> None:
        """Zero a ``bytearray`` marker in place and forget it (end of a residue test)."""
        if isinstance(self._marker, bytearray):
            self._marker[:] = bytes(len(self._marker))
        self._marker = None

    def close(self) -> None:
        self._cache.clear()
        self.clear_marker()


def _fill_with_comment(into: bytearray, view: memoryview,
                       comment: bytes | bytearray | None) -> int:
    if comment is None:
        return _fill(into, view)
    if view[:2] != b"\xff\xd8" or len(comment) > 65533:
        raise ValueError("need a JPEG and a comment of at most 65533 bytes")
    into[:] = b"\xff\xd8\xff\xfe" + (len(comment) + 2).to_bytes(2, "big")
    into += comment
    into += view[2:]
    view[:] = bytes(len(view))
    return len(into)


def with_comment(jpeg: bytes, comment: bytes) -> bytes:
    """Insert a COM segment right after SOI (memory-residue tests plant a marker there)."""
    if jpeg[:2] != b"\xff\xd8" or len(comment) > 65533:
        raise ValueError("need a JPEG and a comment of at most 65533 bytes")
    return jpeg[:2] + b"\xff\xfe" + (len(comment) + 2).to_bytes(2, "big") + comment + jpeg[2:]


def _render(shown: Shown, size: tuple[int, int]) -> np.ndarray:
    width, height = size
    if shown is None:
        return Scene().render(width, height)
    if isinstance(shown, Scene):
        return shown.render(width, height)
    if shown.shape == (height, width):
        return shown
    return np.asarray(Image.fromarray(shown, "L").resize(size, Image.Resampling.BILINEAR))


def _images_in(folder: str | Path) -> list[Path]:
    files = sorted(p for p in Path(folder).iterdir()
                   if p.suffix.lower() in {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"})
    if not files:
        raise CameraUnavailable("the simulated camera's image folder holds no images: "
                                "check [hardware] sim_images")
    return files


def _load(path: Path) -> np.ndarray:
    with Image.open(path) as img:
        return np.asarray(img.convert("L"))
