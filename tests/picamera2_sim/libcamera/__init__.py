"""A simulated ``libcamera`` Python binding: one Camera Module 3 (imx708) on a Pi.

Only what picamera2 (0.3.36, pinned in ``tests/picamera2_sim``) calls, with the
behaviour that matters to the station taken from libcamera's Raspberry Pi pipeline
handler (src/libcamera/pipeline/rpi/{common/pipeline_base.cpp,vc4/vc4.cpp,
pisp/pisp.cpp}):

- at most one raw and two processed (YUV/RGB) streams; a second processed stream is
  clipped to the first's size (VC4: "one stream must be equal or smaller than the other
  in all dimensions"); sizes even;
- the raw stream is the chosen sensor mode: ``SRGGB10_CSI2P`` on VC4 (Unicam writes the
  CSI-2 packing), ``RGGB_PISP_COMP1`` on PiSP (the front end writes 8-bit compressed);
- strides as the ISP drivers set them: VC4 (bcm2835-isp) YUV420 rows aligned to 64
  bytes, RGB to 32; PiSP (libpisp ``compute_optimal_stride``, then the Y stride doubled
  from the chroma one for YUV420) aligned to 64 per plane; frame size stride x height
  (x 3/2 for YUV420);
- the sensor mode scored as picamera2/libcamera do (the caller sets
  ``sensor_config``), the frame time the larger of the mode's minimum, the exposure the
  light needs and the ``FrameDurationLimits`` minimum, and at most their maximum;
- an autofocus state machine (``AfMode`` Manual/Auto/Continuous, ``AfTrigger``, the
  ``AfState`` of every frame's metadata);
- faults: no camera, permission denied (set by the allocator shim), a stalled pipeline.

Frames are real pixels: the scene (a luminance image) scaled to each stream and written
into the request's buffers, which picamera2's allocator maps (memfd here, dma-buf on a Pi).
"""

from __future__ import annotations

import contextlib
import enum
import importlib
import mmap
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image

from .controls import ControlId, ControlInfo, ControlType, ctl

# --- value types --------------------------------------------------------------------


class Size:
    def __init__(self, width: int = 0, height: int = 0) -> None:
        self.width, self.height = int(width), int(height)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Size) and (self.width, self.height) == (other.width, other.height)

    def __hash__(self) -> int:
        return hash((self.width, self.height))

    def __repr__(self) -> str:
        return f"{self.width}x{self.height}"


class Rectangle:
    def __init__(self, x: int = 0, y: int = 0, width: int = 0, height: int = 0) -> None:
        self.x, self.y, self.width, self.height = int(x), int(y), int(width), int(height)

    def __repr__(self) -> str:
        return f"({self.x}, {self.y})/{self.width}x{self.height}"


class Transform:
    def __init__(self, other: Transform | None = None, hflip: int = 0, vflip: int = 0, transpose: int = 0) -> None:
        if isinstance(other, Transform):
            hflip, vflip, transpose = other.hflip, other.vflip, other.transpose
        self.hflip, self.vflip, self.transpose = bool(hflip), bool(vflip), bool(transpose)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Transform) and self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def _key(self) -> tuple[bool, bool, bool]:
        return (self.hflip, self.vflip, self.transpose)

    def __str__(self) -> str:
        return f"<libcamera.Transform hflip={int(self.hflip)} vflip={int(self.vflip)} transpose={int(self.transpose)}>"


class Orientation(enum.Enum):
    Rotate0 = 1
    Rotate0Mirror = 2
    Rotate180 = 3
    Rotate180Mirror = 4
    Rotate90Mirror = 5
    Rotate270 = 6
    Rotate90 = 7
    Rotate270Mirror = 8


class ColorSpace:
    class Primaries(enum.Enum):
        Raw = 0
        Smpte170m = 1
        Rec709 = 2
        Rec2020 = 3

    class TransferFunction(enum.Enum):
        Linear = 0
        Srgb = 1
        Rec709 = 2

    class YcbcrEncoding(enum.Enum):
        Null = 0
        Rec601 = 1
        Rec709 = 2
        Rec2020 = 3

    class Range(enum.Enum):
        Full = 0
        Limited = 1

    def __init__(self, other: ColorSpace | None = None, primaries: Any = None, transferFunction: Any = None,
                 ycbcrEncoding: Any = None, range: Any = None) -> None:
        if isinstance(other, ColorSpace):
            primaries, transferFunction = other.primaries, other.transferFunction
            ycbcrEncoding, range = other.ycbcrEncoding, other.range
        self.primaries, self.transferFunction = primaries, transferFunction
        self.ycbcrEncoding, self.range = ycbcrEncoding, range

    @classmethod
    def Sycc(cls) -> ColorSpace:
        return cls(None, cls.Primaries.Rec709, cls.TransferFunction.Srgb, cls.YcbcrEncoding.Rec601, cls.Range.Full)

    @classmethod
    def Smpte170m(cls) -> ColorSpace:
        return cls(None, cls.Primaries.Smpte170m, cls.TransferFunction.Rec709, cls.YcbcrEncoding.Rec601,
                   cls.Range.Limited)

    @classmethod
    def Rec709(cls) -> ColorSpace:
        return cls(None, cls.Primaries.Rec709, cls.TransferFunction.Rec709, cls.YcbcrEncoding.Rec709,
                   cls.Range.Limited)

    @classmethod
    def Raw(cls) -> ColorSpace:
        return cls(None, cls.Primaries.Raw, cls.TransferFunction.Linear, cls.YcbcrEncoding.Null, cls.Range.Full)

    def __str__(self) -> str:
        return f"<libcamera.ColorSpace {self.primaries.name}/{self.transferFunction.name}>"


class PixelFormat:
    def __init__(self, name: str) -> None:
        self._name = str(name)

    def __str__(self) -> str:
        return self._name

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PixelFormat) and other._name == self._name

    def __hash__(self) -> int:
        return hash(self._name)


class StreamRole(enum.Enum):
    Raw = 0
    StillCapture = 1
    VideoRecording = 2
    Viewfinder = 3


class SensorConfiguration:
    def __init__(self) -> None:
        self.bit_depth = 0
        self.output_size = Size()


class FrameMetadata:
    class Status(enum.Enum):
        Success = 0
        Error = 1
        Cancelled = 2

    def __init__(self) -> None:
        self.status = FrameMetadata.Status.Cancelled
        self.sequence = 0
        self.timestamp = 0


class FrameBuffer:
    class Plane:
        def __init__(self) -> None:
            self.fd = -1
            self.offset = 0
            self.length = 0

    def __init__(self, planes: list[FrameBuffer.Plane]) -> None:
        self.planes = list(planes)
        self.metadata = FrameMetadata()


# --- the sensor ---------------------------------------------------------------------


@dataclass(frozen=True)
class SensorMode:
    size: tuple[int, int]
    min_frame_us: int  # at the mode's maximum frame rate


# imx708 (Camera Module 3) modes as rpicam-hello --list-cameras prints them.
IMX708_MODES = (
    SensorMode((1536, 864), 8_324),  # 120.13 fps, 2x2 binned
    SensorMode((2304, 1296), 17_847),  # 56.03 fps, 2x2 binned
    SensorMode((4608, 2592), 69_686),  # 14.35 fps, full resolution
)
IMX708_BAYER = "RGGB"


def _align(value: int, to: int) -> int:
    return (value + to - 1) // to * to


def stride_for(platform: str, fmt: str, width: int) -> int:
    """Bytes per row of the first plane, as the platform's ISP driver sets it."""
    if fmt.endswith("_CSI2P"):  # Unicam: 10-bit packed, rows aligned to 32 bytes (VC4)
        return _align(width * 10 // 8, 32)
    if fmt.endswith("_PISP_COMP1"):  # PiSP front end: 8 bits per pixel, 64-byte rows
        return _align(width, 64)
    if fmt in ("YUV420", "YVU420"):
        return _align(width, 64) if platform == "vc4" else 2 * _align(width // 2, 64)
    if fmt in ("BGR888", "RGB888"):
        return _align(width * 3, 32 if platform == "vc4" else 64)
    if fmt in ("XBGR8888", "XRGB8888"):
        return _align(width * 4, 32 if platform == "vc4" else 64)
    raise ValueError(f"format {fmt} not simulated")


def frame_size_for(fmt: str, stride: int, height: int) -> int:
    return stride * height * 3 // 2 if fmt in ("YUV420", "YVU420") else stride * height


def _is_raw(fmt: str) -> bool:
    return fmt.startswith(("S", IMX708_BAYER)) and ("CSI2P" in fmt or "PISP" in fmt or fmt[-2:].isdigit())


# --- configuration ------------------------------------------------------------------


class Stream:
    def __init__(self, index: int) -> None:
        self.index = index
        self.configuration: StreamConfiguration | None = None


class StreamFormats:
    def __init__(self, formats: dict[str, list[Size]]) -> None:
        self._formats = formats

    @property
    def pixel_formats(self) -> list[PixelFormat]:
        return [PixelFormat(f) for f in self._formats]

    def sizes(self, pix: PixelFormat) -> list[Size]:
        return list(self._formats[str(pix)])


class StreamConfiguration:
    def __init__(self, role: StreamRole, fmt: str, size: Size, formats: StreamFormats) -> None:
        self.role = role
        self.pixel_format = PixelFormat(fmt)
        self.size = size
        self.stride = 0
        self.frame_size = 0
        self.buffer_count = 4
        self.color_space: ColorSpace | None = ColorSpace.Sycc()
        self.formats = formats
        self.stream: Stream | None = None


class CameraConfiguration:
    class Status(enum.Enum):
        Valid = 0
        Adjusted = 1
        Invalid = 2

    def __init__(self, camera: Camera, configs: list[StreamConfiguration]) -> None:
        self._camera = camera
        self._configs = configs
        self.orientation = Orientation.Rotate0
        self.sensor_config: SensorConfiguration | None = None

    def at(self, index: int) -> StreamConfiguration:
        return self._configs[index]

    def __iter__(self) -> Any:
        return iter(self._configs)

    def __len__(self) -> int:
        return len(self._configs)

    def validate(self) -> CameraConfiguration.Status:
        return self._camera._validate(self)


# --- requests -----------------------------------------------------------------------


class Request:
    class Status(enum.Enum):
        Pending = 0
        Complete = 1
        Cancelled = 2

    class ReuseFlag(enum.Enum):
        Default = 0
        ReuseBuffers = 1

    def __init__(self, camera: Camera, cookie: int) -> None:
        self.camera = camera
        self.cookie = cookie
        self.buffers: dict[Stream, FrameBuffer] = {}
        self.metadata: dict[ControlId, Any] = {}
        self.controls: dict[ControlId, Any] = {}
        self.status = Request.Status.Pending
        self.sequence = 0

    def add_buffer(self, stream: Stream, buffer: FrameBuffer) -> None:
        self.buffers[stream] = buffer

    def set_control(self, cid: ControlId, value: Any) -> None:
        self.controls[cid] = value

    def reuse(self, flag: Any = None) -> None:
        self.status = Request.Status.Pending
        self.metadata = {}
        self.controls = {}
        for fb in self.buffers.values():
            fb.metadata.status = FrameMetadata.Status.Cancelled


# --- the camera and its simulated pipeline ------------------------------------------

AF_STEPS = 6  # frames an autofocus sweep takes (scanning), then Focused


@dataclass
class Scene:
    """What the simulated sensor sees: a luminance image and how bright it is."""

    image: np.ndarray = field(default_factory=lambda: np.full((480, 640), 128, np.uint8))
    exposure_us: int = 20_000  # what the AGC settles on in this light
    focusable: bool = True  # an AF sweep finds contrast (else Failed)


class Camera:
    def __init__(self, manager: CameraManager, sim: Any) -> None:
        self._manager = manager
        self._sim = sim
        self.id = "/base/soc/i2c0mux/i2c@1/imx708@1a"
        self._acquired = False
        self._running = False
        self._queue: list[Request] = []
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._config: CameraConfiguration | None = None
        self._mode = IMX708_MODES[-1]
        self._ctl: dict[str, Any] = {}
        self._af_state, self._af_steps, self._lens = 0, 0, 1.0
        self._sequence = 0
        self._frames_cache: dict[tuple[int, int, str, int, int, int], bytes] = {}

    # properties and controls, as a Pi reports them for the imx708
    @property
    def properties(self) -> dict[ControlId, Any]:
        return {
            ctl("Model"): "imx708",
            ctl("ColorFilterArrangement"): 0,  # RGGB: marks a Raspberry Pi camera for picamera2
            ctl("PixelArraySize"): Size(4608, 2592),
            ctl("Location"): 2,
            ctl("Rotation"): 0,
        }

    @property
    def controls(self) -> dict[ControlId, ControlInfo]:
        fdl_min = self._mode.min_frame_us
        return {
            ctl("AfMode"): ControlInfo(0, 2, 0),
            ctl("AfTrigger"): ControlInfo(0, 1, 0),
            ctl("LensPosition"): ControlInfo(0.0, 32.0, 1.0),
            ctl("FrameDurationLimits"): ControlInfo(fdl_min, 120_000_000, fdl_min),
            ctl("NoiseReductionMode"): ControlInfo(0, 4, 0),
            ctl("ExposureTime"): ControlInfo(26, 112_015_553, 20_000),
            ctl("ExposureTimeMode"): ControlInfo(0, 1, 0),
            ctl("AnalogueGain"): ControlInfo(1.12, 16.0, 1.0),
            ctl("AnalogueGainMode"): ControlInfo(0, 1, 0),
            ctl("AeEnable"): ControlInfo(False, True, True),
            ctl("ScalerCrop"): ControlInfo(Rectangle(0, 0, 64, 64), Rectangle(0, 0, 4608, 2592),
                                           Rectangle(0, 0, 4608, 2592)),
        }

    def acquire(self) -> None:
        if self._acquired:
            raise RuntimeError("Failed to acquire camera: Device or resource busy")
        self._acquired = True

    def release(self) -> None:
        self._acquired = False

    def generate_configuration(self, roles: list[StreamRole]) -> CameraConfiguration:
        raw_formats = {self._raw_format(): [Size(*m.size) for m in IMX708_MODES]}
        out_formats = {f: [Size(64, 64), Size(4608, 2592)] for f in ("YUV420", "BGR888", "RGB888", "XBGR8888")}
        configs = []
        for role in roles:
            if role == StreamRole.Raw:
                configs.append(StreamConfiguration(role, self._raw_format(), Size(4608, 2592),
                                                   StreamFormats(raw_formats)))
            else:
                configs.append(StreamConfiguration(role, "YUV420", Size(800, 600), StreamFormats(out_formats)))
        return CameraConfiguration(self, configs)

    def _raw_format(self) -> str:
        return f"S{IMX708_BAYER}10_CSI2P" if self._sim.platform == "vc4" else f"{IMX708_BAYER}_PISP_COMP1"

    def _validate(self, config: CameraConfiguration) -> CameraConfiguration.Status:
        status = CameraConfiguration.Status.Valid
        raws = [c for c in config if _is_raw(str(c.pixel_format))]
        outs = [c for c in config if not _is_raw(str(c.pixel_format))]
        if len(raws) > 1 or len(outs) > 2 or (not outs and not raws):
            return CameraConfiguration.Status.Invalid
        mode = self._pick_mode(config, outs)
        for c in raws:
            fmt = self._raw_format()
            if str(c.pixel_format) != fmt or (c.size.width, c.size.height) != mode.size:
                status = CameraConfiguration.Status.Adjusted
            c.pixel_format, c.size = PixelFormat(fmt), Size(*mode.size)
        first = outs[0].size if outs else None
        for c in outs:
            fmt = str(c.pixel_format)
            if fmt not in ("YUV420", "YVU420", "BGR888", "RGB888", "XBGR8888", "XRGB8888"):
                return CameraConfiguration.Status.Invalid
            w, h = c.size.width, c.size.height
            if first is not None:  # no stream larger than the first in any dimension
                w, h = min(w, first.width), min(h, first.height)
            w, h = max(64, w - w % 2), max(64, h - h % 2)
            if (w, h) != (c.size.width, c.size.height):
                c.size, status = Size(w, h), CameraConfiguration.Status.Adjusted
        for c in config:
            c.stride = stride_for(self._sim.platform, str(c.pixel_format), c.size.width)
            c.frame_size = frame_size_for(str(c.pixel_format), c.stride, c.size.height)
        return status

    def _pick_mode(self, config: CameraConfiguration, outs: list[StreamConfiguration]) -> SensorMode:
        sc = config.sensor_config
        if sc is not None and sc.output_size.width:
            want = (sc.output_size.width, sc.output_size.height)
            for m in IMX708_MODES:
                if m.size == want:
                    return m
        largest = max(((c.size.width, c.size.height) for c in outs), default=IMX708_MODES[-1].size)
        for m in IMX708_MODES:  # the smallest mode that covers the output (libcamera's intent)
            if m.size[0] >= largest[0] and m.size[1] >= largest[1]:
                return m
        return IMX708_MODES[-1]

    def configure(self, config: CameraConfiguration) -> int:
        if self._running:
            return -16  # -EBUSY
        if self._validate(config) == CameraConfiguration.Status.Invalid:
            return -22
        for i, c in enumerate(config):
            c.stream = Stream(i)
            c.stream.configuration = c
        self._config = config
        self._mode = self._pick_mode(config, [c for c in config if not _is_raw(str(c.pixel_format))])
        self._sim.configures += 1
        return 0

    def create_request(self, cookie: int = 0) -> Request:
        return Request(self, cookie)

    def start(self, controls: dict[ControlId, Any] | None = None) -> None:
        if self._config is None:
            raise RuntimeError("Failed to start camera: not configured")
        self._apply(controls or {})
        self._running = True
        self._sim.starts += 1
        self._thread = threading.Thread(target=self._pipeline, name="libcamera-sim", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if not self._running:
            return
        with self._cond:
            self._running = False
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join()
        with self._cond:  # libcamera completes every queued request as cancelled
            cancelled, self._queue = self._queue, []
        for req in cancelled:
            req.status = Request.Status.Cancelled
            self._manager._complete(req)

    def queue_request(self, request: Request) -> None:
        with self._cond:
            if not self._running:
                raise RuntimeError("Failed to queue request: camera not running")
            self._queue.append(request)
            self._cond.notify_all()

    # the pipeline thread
    def _apply(self, controls: dict[ControlId, Any]) -> None:
        for cid, value in controls.items():
            self._ctl[cid.name] = value
        if "AfTrigger" in {c.name for c in controls} and self._ctl.get("AfMode") == 1:
            if self._ctl.get("AfTrigger") == 0:  # Start: sweep
                self._af_state, self._af_steps = 1, 0
            else:  # Cancel
                self._af_state = 0
        if "AfMode" in {c.name for c in controls} and self._ctl["AfMode"] == 2 and self._af_state == 0:
            self._af_state, self._af_steps = 1, 0  # continuous: starts a passive scan

    def frame_us(self) -> int:
        fdl = self._ctl.get("FrameDurationLimits") or (self._mode.min_frame_us, 1_000_000_000)
        want = max(self._mode.min_frame_us, self._sim.scene.exposure_us, int(fdl[0]))
        return min(want, max(int(fdl[1]), self._mode.min_frame_us))

    def _pipeline(self) -> None:
        while True:
            with self._cond:
                while self._running and (not self._queue or self._sim.stalled.is_set()):
                    self._cond.wait(0.05)
                if not self._running:
                    return
                request = self._queue.pop(0)
            self._sim.sleep(self.frame_us() / 1e6)
            self._apply(request.controls)
            self._fill(request)
            self._manager._complete(request)

    def _af_step(self) -> None:
        mode = self._ctl.get("AfMode", 0)
        if mode == 0 or self._af_state != 1:
            return
        self._af_steps += 1
        if self._af_steps >= AF_STEPS:
            self._af_state = 2 if self._sim.scene.focusable else 3
            if self._af_state == 2:
                self._lens = 3.2

    def _fill(self, request: Request) -> None:
        self._af_step()
        self._sequence += 1
        exposure = min(self._sim.scene.exposure_us, self.frame_us())
        for stream, fb in request.buffers.items():
            cfg = stream.configuration
            assert cfg is not None
            data = self._pixels(cfg)
            with mmap.mmap(fb.planes[0].fd, fb.planes[0].length, mmap.MAP_SHARED,
                           mmap.PROT_READ | mmap.PROT_WRITE) as mem:
                mem[: len(data)] = data
            fb.metadata.status = FrameMetadata.Status.Success
            fb.metadata.sequence = self._sequence
            fb.metadata.timestamp = time.monotonic_ns()
        request.metadata = {
            ctl("ExposureTime"): exposure,
            ctl("AnalogueGain"): 2.0,
            ctl("DigitalGain"): 1.0,
            ctl("FrameDuration"): self.frame_us(),
            ctl("AfState"): self._af_state,
            ctl("LensPosition"): self._lens,
            ctl("SensorTimestamp"): time.monotonic_ns(),
        }
        request.status = Request.Status.Complete
        self._sim.frames += 1

    def _pixels(self, cfg: StreamConfiguration) -> bytes:
        fmt, w, h, stride = str(cfg.pixel_format), cfg.size.width, cfg.size.height, cfg.stride
        scene = self._sim.scene
        key = (id(scene), id(scene.image), fmt, w, h, stride)
        cached = self._frames_cache.get(key)
        if cached is not None:
            return cached
        if _is_raw(fmt):
            out = bytes(frame_size_for(fmt, stride, h))  # raw pixels are not simulated
        else:
            luma = np.asarray(Image.fromarray(self._sim.scene.image).resize((w, h), Image.Resampling.BILINEAR))
            if fmt in ("YUV420", "YVU420"):
                y = np.zeros((h, stride), np.uint8)
                y[:, :w] = luma
                chroma = np.full(frame_size_for(fmt, stride, h) - stride * h, 128, np.uint8)
                out = y.tobytes() + chroma.tobytes()
            else:
                bpp = 3 if fmt in ("BGR888", "RGB888") else 4
                rows = np.zeros((h, stride), np.uint8)
                rows[:, : w * bpp] = np.repeat(luma, bpp, axis=1)
                out = rows.tobytes()
        if any(k[:2] != key[:2] for k in self._frames_cache):
            self._frames_cache = {}  # a new scene: forget the old one's frames
        self._frames_cache[key] = out
        return out


class CameraManager:
    _instance: CameraManager | None = None
    sim: Any = None  # set by tests.picamera2_sim.install()

    def __init__(self) -> None:
        self.version = "v0.5.0+rpt20250429 (simulated)"
        self.event_fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self._ready: list[Request] = []
        self._lock = threading.Lock()
        self._cameras = [Camera(self, self.sim)]

    @classmethod
    def singleton(cls) -> CameraManager:
        if cls._instance is None:
            cls._instance = cls()
        return cls._instance

    @property
    def cameras(self) -> list[Camera]:
        return [] if self.sim.no_camera else list(self._cameras)

    def get(self, camera_id: str) -> Camera:
        for cam in self.cameras:
            if cam.id == camera_id:
                return cam
        raise RuntimeError(f"no camera {camera_id}")

    find = get

    def get_ready_requests(self) -> list[Request]:
        with self._lock:
            with contextlib.suppress(BlockingIOError):
                os.eventfd_read(self.event_fd)
            ready, self._ready = self._ready, []
        return ready

    def _complete(self, request: Request) -> None:
        with self._lock:
            self._ready.append(request)
        os.eventfd_write(self.event_fd, 1)


def _reset() -> None:
    """Forget the manager (between tests): a fresh camera and event fd."""
    CameraManager._instance = None


__all__ = [
    "Camera", "CameraConfiguration", "CameraManager", "ColorSpace", "ControlType", "FrameBuffer",
    "FrameMetadata", "Orientation", "PixelFormat", "Rectangle", "Request", "SensorConfiguration",
    "Size", "Stream", "StreamRole", "Transform",
]

# Submodules picamera2 imports as attributes: libcamera.controls, libcamera.properties,
# and libcamera._libcamera (it isinstance-checks ColorSpace and Transform there).
for _sub in ("controls", "properties", "_libcamera"):
    importlib.import_module(f"{__name__}.{_sub}")

_ = Callable  # typing only
