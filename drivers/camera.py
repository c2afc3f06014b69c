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

import io
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeAlias

import numpy as np
from clinicam.common.errors import CameraUnavailable
from clinicam.drivers.scenes import Scene
from PIL import Image

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
    def scan_frames(self) -> Iterator[np.ndarray]: ...  # luminance planes, forever
    def capture_jpeg(self, into: bytearray) -> StillInfo: ...
    def close(self) -> None: ...


def _fill(into: bytearray, view: memoryview) -> int:
    """Copy ``view`` into ``into`` (resized) and zero the source: no stray JPEG copy."""
    into[:] = view
    view[:] = bytes(len(view))
    return len(into)


class Picamera2Camera:
    """Raspberry Pi camera through picamera2 (from Raspberry Pi OS, imported here only).

    Call sequence: ``Picamera2(camera_num, tuning=<path or None>)`` (a path, because a
    tuning *dict* makes picamera2 write a temporary file) →
    ``create_still_configuration(main={"size": still}, lores={"size": lores,
    "format": "YUV420"}, display=None)`` → ``configure`` → ``options["quality"] = q`` →
    ``start`` → ``set_controls({"AfMode": Continuous})`` when the camera has ``AfMode``.
    Scanning: ``capture_array("lores")``, Y plane = first ``lores_height`` rows (and
    ``lores_width`` columns, rows being padded to the stride).
    Still: ``autofocus_cycle()`` (AF cameras) → ``capture_request()`` →
    ``request.save("main", BytesIO, format="jpeg", exif_data={"0th": {}, "Exif": {}})``
    (the fast JPEG path writes only into a ``BytesIO``; EXIF kept minimal) →
    ``request.get_metadata()`` → ``request.release()`` → back to continuous AF.
    """

    def __init__(
        self,
        still_size: tuple[int, int] = (4608, 2592),
        lores_size: tuple[int, int] = (1280, 720),
        jpeg_quality: int = 90,
        autofocus: bool = True,
        tuning_file: str | None = None,
        camera_num: int = 0,
        picamera2_class: Any = None,
    ) -> None:
        cls = picamera2_class or self._import()
        try:
            self._cam = cls(camera_num, tuning=tuning_file or None)
        except (RuntimeError, IndexError, OSError) as exc:
            raise CameraUnavailable(
                "Camera not found: check the ribbon cable and 'rpicam-hello --list-cameras', "
                'or set [hardware] backend = "sim" in /etc/clinicam/station.toml'
            ) from exc
        self._lock = threading.Lock()
        self._lores_w, self._lores_h = lores_size
        self._still = still_size
        config = self._cam.create_still_configuration(
            main={"size": still_size}, lores={"size": lores_size, "format": "YUV420"},
            display=None,
        )
        self._cam.configure(config)
        self._cam.options["quality"] = jpeg_quality
        self._af = autofocus and "AfMode" in self._cam.camera_controls
        self._cam.start()
        if self._af:
            self._cam.set_controls({"AfMode": AF_MODE_CONTINUOUS})
        self.model = str(self._cam.camera_properties.get("Model") or "") or None

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

    def scan_frames(self) -> Iterator[np.ndarray]:
        """The lores stream's Y plane, frame after frame."""
        while True:
            with self._lock:
                yuv = self._cam.capture_array("lores")
            # Rows may be padded to the stride: keep exactly the Y plane's pixels.
            yield yuv[: self._lores_h, : self._lores_w]

    def capture_jpeg(self, into: bytearray) -> StillInfo:
        """Focus once, take a full-resolution JPEG into ``into``, return what was used."""
        buf = io.BytesIO()
        with self._lock:
            if self._af:
                self._cam.autofocus_cycle()
            request = self._cam.capture_request()
            try:
                request.save("main", buf, format="jpeg", exif_data={"0th": {}, "Exif": {}})
                meta = request.get_metadata()
            finally:
                request.release()
            if self._af:
                self._cam.set_controls({"AfMode": AF_MODE_CONTINUOUS})
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

    def close(self) -> None:
        with self._lock:
            self._cam.stop()
            self._cam.close()


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

    def scan_frames(self) -> Iterator[np.ndarray]:
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
