"""The RAM vault: sealed captures waiting for the relay's acknowledgement (DESIGN §3.6).

It holds ciphertext only (the station cannot open it), never touches disk, and lets a
capture go only on ``ack`` (stored / rejected), ``remove`` (void of a pending
capture), ``expire`` (TTL) or ``wipe``; every buffer it lets go is overwritten with
zeros first. A full vault refuses a new capture with ``VaultFull`` and never evicts an
older one silently.

Memory: the ciphertext of captures sealed for this vault (the sealer takes its buffers
from :meth:`Vault.allocate`) lives in one :class:`~clinicam.firmware.capture.memory.Arena`, so a
wipe of a full vault is one ``memset`` and an acknowledged capture's buffer is zeroed
and reused in place. Captures whose parts are buffers of their own (tests, tools) are
held too and zeroed part by part. When the arena cannot be mapped, or has no run long
enough left, buffers come from the heap: slower to wipe, never refused for that.

Locking: one re-entrant lock guards everything, and nothing under it does I/O, calls
out or waits, so any holder lets go within a bounded time. It is re-entrant because the
wipe may run from a signal handler, which Python runs in the main thread between two
bytecodes — possibly while that same thread is inside a vault method; a plain lock
would deadlock there. ``clinicam.firmware.capture.wipe`` takes this same lock.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from clinicam.common.errors import VaultFull
from clinicam.common.zeroize import PAGE, dont_dump, zero
from clinicam.firmware.capture.memory import Arena
from clinicam.protocol.sealing import SealedCapture

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WipeReport:
    """What a wipe destroyed: undelivered capture ids, their count and bytes."""

    capture_ids: tuple[str, ...]
    count: int
    bytes: int
    in_progress: int = 0  # plaintext buffers of captures being taken, zeroed too
    trigger: str = ""  # sigint, sigpwr, sigterm, tamper, battery, command…


@dataclass
class _Entry:
    sealed: SealedCapture
    stored_at: float
    not_before: float
    in_flight: bool = False


def _physical_memory() -> int:
    try:
        return os.sysconf("SC_PHYS_PAGES") * PAGE
    except (OSError, ValueError):
        return 1 << 30


class Vault:
    """Sealed captures in RAM, bounded in count, bytes and time; thread-safe."""

    def __init__(
        self,
        max_captures: int = 500,
        max_bytes: int = 256 * 2**20,
        ttl_s: float = 7 * 24 * 3600.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_captures < 1 or max_bytes < 1 or ttl_s <= 0:
            raise ValueError("vault limits must be positive")
        self.max_captures = max_captures
        self.max_bytes = max_bytes
        self.ttl_s = ttl_s
        self._clock = clock
        self.lock = threading.RLock()
        self._entries: dict[str, _Entry] = {}
        self._bytes = 0
        # Room for max_bytes of ciphertext plus one granule of slack per capture, but
        # never more address space than the machine has RAM (max_bytes may be huge).
        self._arena_size = min(max_bytes + max_captures * Arena.ALIGN, _physical_memory())
        self._arena: Arena | None = None
        self._arena_failed = False

    @property
    def pending_count(self) -> int:
        """Captures held (waiting or in flight)."""
        return len(self._entries)

    @property
    def pending_bytes(self) -> int:
        """Bytes held: ciphertext parts plus manifests."""
        return self._bytes

    @property
    def in_use(self) -> int:
        """Bytes of the locked arena handed out and not yet given back (0 without an arena)."""
        with self.lock:
            return self._arena.in_use if self._arena is not None else 0

    def in_arena(self, buf: object) -> bool:
        """True if ``buf`` (from :meth:`allocate`) is arena memory, not a heap fallback."""
        with self.lock:
            return self._arena is not None and self._arena.owns(buf)

    def ids(self) -> list[str]:
        """Capture ids held, oldest first."""
        with self.lock:
            return list(self._entries)

    def allocate(self, nbytes: int) -> memoryview:
        """A zero-filled buffer for one capture's ciphertext (``Sealer(buffers=vault)``).

        Whoever takes it gives it back: through the vault once the capture is ``put``,
        else with :meth:`discard` (refused, or wiped while it was being sealed).
        """
        with self.lock:
            arena = self._get_arena()
            buf = arena.allocate(nbytes) if arena is not None else None
        return buf if buf is not None else memoryview(bytearray(nbytes))

    def release(self, buf: memoryview) -> None:
        """Zero a buffer from :meth:`allocate` and take it back."""
        with self.lock:
            if self._arena is not None and self._arena.owns(buf):
                self._arena.release(buf)
            else:
                zero(buf)

    def discard(self, sealed: SealedCapture) -> None:
        """Zero a capture that never entered the vault and give its buffer back."""
        with self.lock:
            self._scrub(sealed)

    def _get_arena(self) -> Arena | None:
        if self._arena is None and not self._arena_failed:
            try:
                self._arena = Arena(self._arena_size)
            except (OSError, ValueError, OverflowError) as exc:
                self._arena_failed = True  # say it once; the heap still works
                log.warning("vault arena of %d bytes not mapped (%s): ciphertext goes to the heap, "
                            "wipes are slower", self._arena_size, type(exc).__name__)
        return self._arena

    def _in_arena(self, sealed: SealedCapture) -> bool:
        return self._arena is not None and self._arena.owns(sealed.storage)

    def _scrub(self, sealed: SealedCapture) -> None:
        storage = sealed.storage
        if storage is not None and self._arena is not None and self._arena.owns(storage):
            self._arena.release(storage)
        else:
            sealed.scrub()

    def put(self, sealed: SealedCapture) -> None:
        """Hold a new capture, or raise ``VaultFull`` (the caller tells the operator)."""
        with self.lock:
            if sealed.capture_id in self._entries:
                raise ValueError("capture id already in the vault")
            if (len(self._entries) >= self.max_captures
                    or self._bytes + sealed.nbytes > self.max_bytes):
                raise VaultFull(
                    f"vault full ({len(self._entries)} captures, {self._bytes} bytes held): "
                    "no capture was dropped; wait for delivery or check the uplink")
            now = self._clock()
            self._entries[sealed.capture_id] = _Entry(sealed, now, now)
            self._bytes += sealed.nbytes
            in_arena = self._in_arena(sealed)
        if not in_arena:  # a second layer; the process is non-dumpable anyway
            for buf in [sealed.storage] if sealed.storage is not None else sealed.parts:
                if len(buf) >= 2 * PAGE:
                    dont_dump(buf)

    def take_next(self) -> SealedCapture | None:
        """The oldest capture due for sending, now marked in flight; None if none is due."""
        with self.lock:
            now = self._clock()
            for entry in self._entries.values():
                if not entry.in_flight and entry.not_before <= now:
                    entry.in_flight = True
                    return entry.sealed
            return None

    def next_due(self) -> float | None:
        """Clock time at which a waiting capture becomes due (None when none waits)."""
        with self.lock:
            due = [e.not_before for e in self._entries.values() if not e.in_flight]
            return min(due, default=None)

    def retry(self, capture_id: str, not_before: float) -> bool:
        """Put an in-flight capture back to wait until ``not_before`` (clock time)."""
        with self.lock:
            entry = self._entries.get(capture_id)
            if entry is None:
                return False
            entry.in_flight, entry.not_before = False, not_before
            return True

    def requeue_in_flight(self) -> list[str]:
        """Make every in-flight capture due again (the connection dropped)."""
        with self.lock:
            now, ids = self._clock(), []
            for cid, entry in self._entries.items():
                if entry.in_flight:
                    entry.in_flight, entry.not_before = False, now
                    ids.append(cid)
            return ids

    def ack(self, capture_id: str) -> bool:
        """The relay answered ``stored`` or ``rejected``: let the capture go, zeroed."""
        return self._drop(capture_id)

    def remove(self, capture_id: str) -> bool:
        """A pending capture was voided: let it go, zeroed, without sending it."""
        return self._drop(capture_id)

    def _drop(self, capture_id: str) -> bool:
        with self.lock:
            entry = self._entries.pop(capture_id, None)
            if entry is None:
                return False
            self._bytes -= entry.sealed.nbytes
            self._scrub(entry.sealed)
            return True

    def expire(self) -> list[str]:
        """Drop (zeroed) every capture older than ``ttl_s``; returns their ids to report."""
        with self.lock:
            limit = self._clock() - self.ttl_s
            old = [cid for cid, e in self._entries.items() if e.stored_at <= limit]
            for cid in old:
                self._drop(cid)
        if old:
            log.warning("vault expired %d undelivered capture(s)", len(old))
        return old

    def wipe(self) -> WipeReport:
        """Zero and drop everything; bounded by a memset of what is held (one, in the arena)."""
        with self.lock:
            entries, self._entries = self._entries, {}
            held, self._bytes = self._bytes, 0
            own = [e.sealed for e in entries.values() if self._in_arena(e.sealed)]
            for entry in entries.values():
                if not self._in_arena(entry.sealed):
                    entry.sealed.scrub()
            if self._arena is not None:
                self._arena.wipe([sealed.storage for sealed in own])
        return WipeReport(tuple(entries), len(entries), held)
