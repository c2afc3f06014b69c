"""Real picamera2 over a simulated libcamera: the camera driver's path in CI.

picamera2 is Python on top of libcamera's C++ bindings. Its own code -- configure,
request handling, the job queue, the JPEG and EXIF path, the allocator -- runs here
unchanged (the version Raspberry Pi OS bookworm ships, ``PICAMERA2_VERSION``,
installed from PyPI without its dependencies). What cannot exist off a Pi is
replaced underneath it:

- ``libcamera`` (this package's ``libcamera/``): an imx708 with the VC4 and PiSP
  size/stride/format rules, an autofocus state machine, and faults;
- ``/dev/dma_heap``: picamera2's ``DmaAllocator`` keeps running, its heap allocates
  memfd buffers (``MemfdHeap``) and the dma-buf cache syncs become no-ops;
- ``prctl`` and ``pykms`` (imported by outputs and previews the station never uses):
  stubs in ``stubs/``.

Use: ``sim = install(platform="vc4")`` before ``import picamera2`` (a pytest fixture
does it, ``tests/unit/drivers/conftest.py``), set ``sim.scene``, ``sim.no_camera``,
``sim.permission_denied``, ``sim.stalled``; ``uninstall()`` afterwards.
"""

from __future__ import annotations

import importlib
import os
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PICAMERA2_VERSION = "0.3.36"
HERE = Path(__file__).parent


@dataclass
class Sim:
    """The knobs of the simulated camera, shared by the fake libcamera and the heap."""

    platform: str = "vc4"  # "vc4" (Pi 4 and earlier) or "pisp" (Pi 5)
    time_scale: float = 1.0  # 0.1: frames ten times faster than the sensor's timing
    no_camera: bool = False
    permission_denied: bool = False  # /dev/dma_heap/* not openable (group video missing)
    stalled: threading.Event = field(default_factory=threading.Event)
    scene: Any = None
    frames: int = 0
    configures: int = 0
    starts: int = 0

    def sleep(self, seconds: float) -> None:
        if self.time_scale > 0:
            time.sleep(seconds * self.time_scale)


class MemfdHeap:
    """Stands in for picamera2's ``DmaHeap``: same interface, memfd buffers.

    It follows the real class's logic over simulated device nodes: a missing heap is
    skipped, a heap that may not be opened raises the ``PermissionError`` that
    ``os.open`` raises on a Pi (picamera2 0.3.36 catches only ``FileNotFoundError``).
    """

    sim: Sim | None = None

    def __init__(self) -> None:
        from picamera2.dma_heap import UniqueFD

        if self.sim is not None and self.sim.permission_denied:
            raise PermissionError(13, "Permission denied", "/dev/dma_heap/vidbuf_cached")
        self._unique = UniqueFD
        self._valid = True

    @property
    def isValid(self) -> bool:
        return self._valid

    def alloc(self, name: str, size: int) -> Any:
        fd = os.memfd_create(name, os.MFD_CLOEXEC)
        os.ftruncate(fd, size)
        return self._unique(fd)

    def close(self) -> None:
        self._valid = False


class _FcntlShim:
    """``fcntl`` for the allocator module: DMA_BUF_IOCTL_SYNC is a no-op on memfd."""

    def __init__(self, real: Any, sync_request: int) -> None:
        self._real, self._sync = real, sync_request

    def ioctl(self, fd: Any, request: int, arg: Any = 0, *rest: Any) -> Any:
        if request == self._sync:
            return 0
        return self._real.ioctl(fd, request, arg, *rest)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


_saved_path: list[str] = []


def install(platform: str = "vc4", time_scale: float = 1.0) -> Sim:
    """Make ``import picamera2`` load the real package over the simulation."""
    sim = Sim(platform=platform, time_scale=time_scale)
    if not _saved_path:
        _saved_path.extend(sys.path)
        sys.path[:0] = [str(HERE), str(HERE / "stubs")]
    import libcamera  # the simulated one, from HERE

    libcamera._reset()
    sim.scene = libcamera.Scene()
    libcamera.CameraManager.sim = sim
    import picamera2
    import picamera2.allocators.dmaallocator as dma
    import picamera2.picamera2 as pc2
    from picamera2.platform import Platform

    if picamera2.__file__ and "site-packages" not in picamera2.__file__:
        raise RuntimeError("picamera2 must be the PyPI package, not a copy")
    MemfdHeap.sim = sim
    dma.DmaHeap = MemfdHeap  # type: ignore[misc,assignment]
    if not isinstance(dma.fcntl, _FcntlShim):
        dma.fcntl = _FcntlShim(dma.fcntl, dma.DMA_BUF_IOCTL_SYNC)  # type: ignore[assignment]
    pc2.Picamera2.platform = Platform.PISP if platform == "pisp" else Platform.VC4
    return sim


def uninstall() -> None:
    """Stop every simulated camera thread and forget the manager.

    picamera2's own manager wrapper (``Picamera2._cm``) is reset too: a ``Picamera2``
    whose constructor failed after opening the camera (the dma-heap permission case)
    stays registered there and would keep the old, acquired camera for the next test.
    """
    import libcamera
    import picamera2.picamera2 as pc2

    manager = libcamera.CameraManager._instance
    if manager is not None:
        for cam in manager._cameras:
            cam.stop()
    import atexit
    import gc

    for obj in gc.get_objects():  # half-constructed ones would close again at exit/GC
        if isinstance(obj, pc2.Picamera2):
            atexit.unregister(obj.close)
            obj.is_open = False  # its camera belonged to the manager being dropped
    wrapper = pc2.Picamera2._cm
    with wrapper._lock:
        wrapper.cameras.clear()
        wrapper.running = False
    thread = getattr(wrapper, "thread", None)
    if thread is not None and thread.is_alive():
        thread.join(2)
    wrapper._cms = None
    libcamera._reset()


def installed_version() -> str:
    return importlib.metadata.version("picamera2")
