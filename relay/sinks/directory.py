"""A sink that files captures as plain files: the development and test record system.

Layout: ``<root>/<device>/<capture_id>.jpg`` (the image as taken) and
``<capture_id>.json`` (the part-0 metadata), and ``<capture_id>.void`` once the
station voids the capture. Every file is written atomically (temporary file, fsync,
rename, fsync of the directory), so a crash never leaves half a photo that looks
whole. Storing the same ``(device, capture_id)`` again returns the same reference and
rewrites nothing (the relay re-acknowledges a re-sent capture, DESIGN §5).

The output *is* the record: it holds PHI by design, so the root belongs on the
record system's protected storage, never on a station.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from clinicam.protocol.ids import CAPTURE_ID as _CAPTURE_ID
from clinicam.protocol.ids import DEVICE_ID as _DEVICE
from clinicam.protocol.reasons import SinkError
from clinicam.relay.sinks import OpenedCaptureLike


def _checked(device: str, capture_id: str) -> tuple[str, str]:
    # Both come from a verified manifest, but a file name is built from them: refuse
    # anything that could step out of the root.
    if not _DEVICE.fullmatch(device) or not _CAPTURE_ID.fullmatch(capture_id):
        raise SinkError("sink-refused", "device or capture id not usable as a file name")
    return device, capture_id


def write_atomically(path: Path, data: bytes, mode: int = 0o640) -> None:
    """Write ``data`` to ``path`` so that readers see either nothing or all of it."""
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, mode)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    fsync_dir(path.parent)


def fsync_dir(directory: Path) -> None:
    """Make a rename in ``directory`` durable."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class DirectorySink:
    """Files each capture under ``root``; idempotent on ``(device, capture_id)``."""

    def __init__(self, root: Path | str, name: str = "directory") -> None:
        self.root = Path(root)
        self.name = name

    def store(self, capture: OpenedCaptureLike) -> str:
        """Write image then metadata (the ``.json`` last marks the capture complete)."""
        device, capture_id = _checked(capture.device, capture.capture_id)
        folder = self.root / device
        meta = folder / f"{capture_id}.json"
        ref = f"{device}/{capture_id}"
        if meta.exists():
            return ref
        try:
            folder.mkdir(mode=0o750, parents=True, exist_ok=True)
            write_atomically(folder / f"{capture_id}.jpg", bytes(capture.image))
            body = json.dumps(dict(capture.metadata), sort_keys=True, indent=1).encode()
            write_atomically(meta, body)
        except OSError as exc:
            raise SinkError("sink-unavailable", "directory sink cannot write") from exc
        return ref

    def void(self, device: str, capture_id: str) -> None:
        """Mark the capture entered-in-error with a ``.void`` marker; keep the files."""
        device, capture_id = _checked(device, capture_id)
        folder = self.root / device
        try:
            folder.mkdir(mode=0o750, parents=True, exist_ok=True)
            write_atomically(folder / f"{capture_id}.void", b"entered-in-error\n")
        except OSError as exc:
            raise SinkError("sink-unavailable", "directory sink cannot write") from exc
