"""In-memory reassembly of a capture's parts and manifest (DESIGN §5).

Parts may arrive before or after their manifest, and a station that re-sends a
capture sends byte-identical parts (they were sealed once), so a later copy of a part
simply replaces the earlier one. Nothing here touches disk: an incomplete capture is
ciphertext the relay cannot use yet, and it is bounded in bytes and in age. What is
dropped is counted, never silently lost: the station keeps the capture in its vault
and re-sends it when no acknowledgement comes.

Fairness (DESIGN §5): the buffer has a total budget and a smaller budget per station,
and every part (and every capture) is charged at least a fixed overhead, so a flood of
zero-byte parts fills its sender's budget like real bytes would. A station over its
own budget is refused (``CapacityExceeded``) and only it; when the *total* is full, a
station still under its fair share (total / stations buffering) makes room by evicting
the oldest incomplete capture of the station holding the most, which is reported
through ``take_evicted()`` like a timed-out capture.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from clinicam.protocol.reasons import OpenError

Key = tuple[str, str]  # (device, capture_id)

# What an empty part or a new capture really costs in RAM (bytes object, dict slot,
# key tuple, bookkeeping), measured on CPython 3.11 with a margin: charged on top of
# the payload so zero-byte parts cannot grow the relay past its budget.
PART_OVERHEAD = 512
CAPTURE_OVERHEAD = 2048


class CapacityExceeded(Exception):
    """The reassembly buffer is full: the capture was dropped and should be re-sent."""


@dataclass
class _Pending:
    first_seen: float
    manifest_at: float | None = None
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
        max_station_bytes: int | None = None,
        manifest_grace_s: float = 15.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_bytes = max_bytes
        self.max_station_bytes = min(max_bytes, max_station_bytes or max_bytes)
        self.manifest_grace_s = manifest_grace_s
        self.max_age_s = max_age_s
        self.max_part_bytes = max_part_bytes
        self.max_parts = max_parts
        self._clock = clock
        self._pending: dict[Key, _Pending] = {}
        self._bytes = 0
        self._station_bytes: dict[str, int] = {}
        self._evicted: list[Dropped] = []
        self.dropped_timeout = 0
        self.dropped_overflow = 0
        self.dropped_evicted = 0

    @property
    def buffered_bytes(self) -> int:
        """What the buffer holds, overheads included (what the budgets count)."""
        return self._bytes

    def station_bytes(self, device: str) -> int:
        return self._station_bytes.get(device, 0)

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
        old = pending.parts.get(index)
        delta = len(payload) - (len(old) if old is not None else -PART_OVERHEAD)
        self._reserve(key, pending, delta)
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
        old = len(pending.manifest) if pending.manifest is not None else -PART_OVERHEAD
        self._reserve(key, pending, len(payload) - old)
        pending.manifest, pending.expected = payload, parts
        if pending.manifest_at is None:
            pending.manifest_at = self._clock()
        return self._complete(key, pending)

    def discard(self, key: Key) -> None:
        """Forget a capture (rejected, completed or dropped) and free its bytes."""
        pending = self._pending.pop(key, None)
        if pending is not None:
            self._bytes -= pending.nbytes
            left = self._station_bytes.get(key[0], 0) - pending.nbytes
            if left > 0:
                self._station_bytes[key[0]] = left
            else:
                self._station_bytes.pop(key[0], None)

    def take_evicted(self) -> list[Dropped]:
        """The captures evicted to make room for other stations since the last call."""
        evicted, self._evicted = self._evicted, []
        return evicted

    def sweep(self) -> list[Dropped]:
        """Drop and return the incomplete captures older than ``max_age_s``, and those
        whose manifest came more than ``manifest_grace_s`` ago with parts still missing.

        A station publishes a capture's parts before its manifest on one connection, so
        parts still missing well after the manifest were lost on the way (the broker or
        the inbox dropped them under a flood): answering ``retry`` then lets the station
        re-send at once instead of after its ack timeout (60 s by default).
        """
        now = self._clock()
        old = [k for k, p in self._pending.items() if now - p.first_seen > self.max_age_s
               or (p.manifest_at is not None and now - p.manifest_at > self.manifest_grace_s)]
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
            self._reserve(key, pending, CAPTURE_OVERHEAD)
        return pending

    def _reserve(self, key: Key, pending: _Pending, delta: int) -> None:
        device = key[0]
        if self.station_bytes(device) + delta > self.max_station_bytes:
            self._refuse(key, "station budget")
        while self._bytes + delta > self.max_bytes:
            if not self._evict_for(device, delta):
                self._refuse(key, "buffer")
        self._charge(device, pending, delta)

    def _charge(self, device: str, pending: _Pending, delta: int) -> None:
        pending.nbytes += delta
        self._bytes += delta
        self._station_bytes[device] = self._station_bytes.get(device, 0) + delta

    def _refuse(self, key: Key, what: str) -> None:
        self.discard(key)
        self.dropped_overflow += 1
        raise CapacityExceeded(f"reassembly {what} full")

    def _evict_for(self, device: str, delta: int) -> bool:
        """Free room for ``device`` if it is under its fair share; False if it may not."""
        fair = self.max_bytes // max(1, len(self._station_bytes | {device: 0}))
        hog = max(self._station_bytes, key=self._station_bytes.__getitem__, default=None)
        if hog is None or hog == device or self.station_bytes(device) + delta > fair:
            return False
        victim = min((k for k in self._pending if k[0] == hog),
                     key=lambda k: self._pending[k].first_seen)
        self._evicted.append(Dropped(victim[0], victim[1], self._pending[victim].manifest is not None))
        self.discard(victim)
        self.dropped_evicted += 1
        return True

    def _complete(self, key: Key, pending: _Pending) -> Complete | None:
        if pending.manifest is None or len(pending.parts) != pending.expected:
            return None
        self.discard(key)
        return Complete(key[0], key[1], pending.manifest, pending.parts)
