"""In-memory reassembly of a capture's parts and manifest (DESIGN §5).

Parts may arrive before or after their manifest, and a station that re-sends a
capture sends byte-identical parts (they were sealed once), so a later copy of a part
simply replaces the earlier one. Nothing here touches disk: an incomplete capture is
ciphertext the relay cannot use yet, and it is bounded in bytes and in age. What is
dropped is counted, never silently lost: the station keeps the capture in its vault
and re-sends it when no acknowledgement comes.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from clinicam.protocol.reasons import OpenError

Key = tuple[str, str]  # (device, capture_id)


class CapacityExceeded(Exception):
    """The reassembly buffer is full: the capture was dropped and should be re-sent."""


@dataclass
class _Pending:
    first_seen: float
    parts: dict[int, bytes] = field(default_factory=dict)
    manifest: bytes | None = None
    expected: int | None = None
    nbytes: int = 0


@dataclass(frozen=True)
class Complete:
    """Every part and the manifest of one capture, ready to be opened."""

    device: str
    capture_id: str
    manifest: bytes
    parts: dict[int, bytes]


@dataclass(frozen=True)
class Dropped:
    """An incomplete capture given up on because it grew too old."""

    device: str
    capture_id: str
    had_manifest: bool


class Reassembler:
    """Collects parts per ``(device, capture_id)`` within byte, count and age bounds.

    ``max_part_bytes`` refuses a single oversize part (``too-large``), ``max_parts``
    refuses an index no capture may have (``parts``), ``max_bytes`` bounds the whole
    buffer and ``max_age_s`` the time an incomplete capture may wait.
    """

    def __init__(
        self,
        *,
        max_bytes: int = 256 * 1024 * 1024,
        max_age_s: float = 120.0,
        max_part_bytes: int = 1024 * 1024,
        max_parts: int = 1024,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_bytes = max_bytes
        self.max_age_s = max_age_s
        self.max_part_bytes = max_part_bytes
        self.max_parts = max_parts
        self._clock = clock
        self._pending: dict[Key, _Pending] = {}
        self._bytes = 0
        self.dropped_timeout = 0
        self.dropped_overflow = 0

    @property
    def buffered_bytes(self) -> int:
        return self._bytes

    def __len__(self) -> int:
        return len(self._pending)

    def add_part(self, device: str, capture_id: str, index: int, payload: bytes) -> Complete | None:
        """Store one part; return the capture when this part completed it.

        Raises ``OpenError('too-large')`` for an oversize part, ``OpenError('parts')``
        for an index beyond the manifest's count, and ``CapacityExceeded`` when the
        buffer is full (the capture is dropped in each case).
        """
        key = (device, capture_id)
        if len(payload) > self.max_part_bytes:
            self.discard(key)
            raise OpenError("too-large", "part larger than the relay accepts")
        pending = self._entry(key)
        limit = pending.expected if pending.expected is not None else self.max_parts
        if not 0 <= index < limit:
            self.discard(key)
            raise OpenError("parts", "part index out of range")
        self._reserve(key, pending, len(payload) - len(pending.parts.get(index, b"")))
        pending.parts[index] = payload
        return self._complete(key, pending)

    def add_manifest(
        self, device: str, capture_id: str, payload: bytes, parts: int
    ) -> Complete | None:
        """Store the manifest, which says how many parts to expect (already parsed)."""
        key = (device, capture_id)
        if not 1 <= parts <= self.max_parts:
            self.discard(key)
            raise OpenError("parts", "manifest part count out of range")
        pending = self._entry(key)
        if any(i >= parts for i in pending.parts):
            self.discard(key)
            raise OpenError("parts", "more parts than the manifest lists")
        old = len(pending.manifest or b"")
        self._reserve(key, pending, len(payload) - old)
        pending.manifest, pending.expected = payload, parts
        return self._complete(key, pending)

    def discard(self, key: Key) -> None:
        """Forget a capture (rejected, completed or dropped) and free its bytes."""
        pending = self._pending.pop(key, None)
        if pending is not None:
            self._bytes -= pending.nbytes

    def sweep(self) -> list[Dropped]:
        """Drop and return the incomplete captures older than ``max_age_s``."""
        now = self._clock()
        old = [k for k, p in self._pending.items() if now - p.first_seen > self.max_age_s]
        dropped = []
        for key in old:
            dropped.append(Dropped(key[0], key[1], self._pending[key].manifest is not None))
            self.discard(key)
        self.dropped_timeout += len(dropped)
        return dropped

    def _entry(self, key: Key) -> _Pending:
        pending = self._pending.get(key)
        if pending is None:
            pending = self._pending[key] = _Pending(first_seen=self._clock())
        return pending

    def _reserve(self, key: Key, pending: _Pending, delta: int) -> None:
        if self._bytes + delta > self.max_bytes:
            self.discard(key)
            self.dropped_overflow += 1
            raise CapacityExceeded("reassembly buffer full")
        pending.nbytes += delta
        self._bytes += delta

    def _complete(self, key: Key, pending: _Pending) -> Complete | None:
        if pending.manifest is None or len(pending.parts) != pending.expected:
            return None
        self.discard(key)
        return Complete(key[0], key[1], pending.manifest, pending.parts)
