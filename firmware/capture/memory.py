"""Keep the station's memory in RAM and out of dumps, and zero buffers for real.

``harden_process`` is the first thing the station does (DESIGN §3.3):

* ``mlockall(MCL_CURRENT | MCL_FUTURE | MCL_ONFAULT)`` — nothing the process holds is
  ever swapped out. ``MCL_ONFAULT`` (Linux ≥ 4.4) locks pages as they are touched
  instead of faulting in every reserved mapping at once, which matters on a 1–2 GB Pi
  (a page that was never touched holds nothing to leak). Without it we retry plain
  ``MCL_CURRENT | MCL_FUTURE``. It needs ``CAP_IPC_LOCK`` or a large enough
  ``RLIMIT_MEMLOCK`` (the systemd unit sets ``LimitMEMLOCK=infinity``).
* ``prctl(PR_SET_DUMPABLE, 0)`` — no core dump, no ptrace attach by the same user, and
  ``/proc/<pid>/mem`` readable by root only.
* ``RLIMIT_CORE`` 0 — belt and braces should dumpable ever be set back (setuid exec).

``dont_dump`` adds ``MADV_DONTDUMP`` to the pages of a buffer (the vault's ciphertext).
:class:`Arena` carves the vault's ciphertext buffers out of one anonymous mapping, so a
wipe is one ``memset`` and a buffer given back is zeroed and reused without new faults.

Where plaintext can linger, measured (tests/security/test_memory_residue.py, which reads
``/proc/<pid>/mem`` of a child after a wipe):

* The image bytes live only in the caller's ``bytearray`` (the camera's ``BytesIO``
  buffer) and are encrypted straight from it with ``encrypt_into``, part by part; the
  sealer then overwrites it with :func:`zero`. SHA-256 and AEAD keep no copy. With the
  default allocator a 32-byte image marker in a ``BytesIO`` still is found 0 times
  after the wipe; through the drivers' ``SimulatedCamera`` (which encodes into its own
  ``bytes`` before copying into the caller's buffer) one freed copy can remain unless
  the process runs with :data:`STATION_ENV`.
* The metadata (patient id, operator id…) is Python ``str``/``bytes``: immutable, so
  it cannot be overwritten in place. Its JSON encoding in the sealer is freed at once,
  but pymalloc keeps small freed blocks as they were, and glibc leaves freed chunks as
  they were, so the id can stay readable in freed memory until reused. Measured: with
  the default allocator the id was sometimes gone after the wipe (its blocks reused)
  and sometimes still there once (the drivers' ``SimulatedCamera`` path); with
  ``PYTHONMALLOC=malloc MALLOC_PERTURB_=165`` alone it still lingered — glibc caches
  a freed small chunk in its tcache *before* perturbing it. With :data:`STATION_ENV`
  (the same plus ``GLIBC_TUNABLES=glibc.malloc.tcache_count=0``) both the marker and
  the id were found 0 times after the wipe on both paths. What remains then is only
  copies still *referenced* — the workflow's current session — which it drops on
  close and wipe. The same holds for the simulated camera's own ``bytes`` copies of a
  still (``getvalue()``), which only ``STATION_ENV`` removes.
* ``bytes`` returned by libraries (e.g. ``os.urandom`` for the content key before it
  is copied into a zeroable ``bytearray``) are treated the same way: short-lived,
  freed, then overwritten by ``MALLOC_PERTURB_``; the process is locked and non-dumpable
  so none of it reaches swap or a core file.
"""

from __future__ import annotations

import bisect
import ctypes
import logging
import mmap
import resource
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from clinicam.common.errors import MemoryHardeningError
from clinicam.common.zeroize import PAGE, dont_dump, libc, zero

log = logging.getLogger(__name__)

# The allocator settings the station must start with (systemd unit ``Environment=``):
# every object through glibc, freed chunks overwritten, and no tcache — glibc puts a
# freed small chunk into its per-thread cache *before* perturbing it, so with the
# tcache on, up to 7 freed chunks of each size keep their old contents.
STATION_ENV: dict[str, str] = {
    "PYTHONMALLOC": "malloc",
    "MALLOC_PERTURB_": "165",
    "GLIBC_TUNABLES": "glibc.malloc.tcache_count=0",
    "PYTHONDONTWRITEBYTECODE": "1",
}

MCL_CURRENT = 1
MCL_FUTURE = 2
MCL_ONFAULT = 4
PR_SET_DUMPABLE = 4
PR_GET_DUMPABLE = 3

# -- one mapping for all ciphertext ---------------------------------------------------

MAP_NORESERVE = getattr(mmap, "MAP_NORESERVE", 0x4000)  # Linux value; Python < 3.13 lacks it


class Arena:
    """Buffers carved out of one anonymous mapping, so that zeroing all of them is one memset.

    Why (bench/bench_sealing.py, measured on the reference host): one ``memset`` of
    256 MB streams at ~20 GB/s, but the same bytes as thousands of 120 KiB buffers, or
    as fifty 5 MB ones, are zeroed 3–4x slower — small ``rep stosb`` runs read every
    line before writing it. And a page the process has never touched costs a fault and
    a kernel zero-fill on first write (~4 µs here, longer than sealing the page), so a
    buffer given back is zeroed at once and reused in place rather than returned to
    the OS: a vault that may fill to ``max_bytes`` must be able to hold that much
    anyway. The mapping is reserved, not committed (``MAP_NORESERVE``): only pages that
    ever held a buffer are resident; it is marked ``MADV_DONTDUMP``.

    First fit over a sorted free list, ``ALIGN``-byte granules. Not thread-safe: the
    vault calls it under its lock.
    """

    ALIGN = 64  # a cache line

    def __init__(self, size: int) -> None:
        size = -(-size // PAGE) * PAGE
        self._map = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | MAP_NORESERVE)
        dont_dump(self._map)
        self._view = memoryview(self._map)
        self.size = size
        self._free: list[tuple[int, int]] = [(0, size)]  # (offset, length), by offset
        self._used: dict[int, tuple[int, int, memoryview]] = {}  # id(buffer) -> extent

    @property
    def in_use(self) -> int:
        """Bytes handed out and not yet given back (granule-rounded)."""
        return sum(length for _, length, _ in self._used.values())

    @property
    def high_water(self) -> int:
        """Everything at or above this offset has never been written or was zeroed."""
        offset, length = self._free[-1] if self._free else (self.size, 0)
        return offset if offset + length == self.size else self.size

    def allocate(self, nbytes: int) -> memoryview | None:
        """A zero-filled buffer of ``nbytes``, or None when no free run is long enough."""
        need = max(self.ALIGN, -(-nbytes // self.ALIGN) * self.ALIGN)
        for k, (offset, length) in enumerate(self._free):
            if length >= need:
                self._free[k:k + 1] = [(offset + need, length - need)] if length > need else []
                buf = self._view[offset:offset + nbytes]
                self._used[id(buf)] = (offset, need, buf)
                return buf
        return None

    def owns(self, buf: object) -> bool:
        """Whether ``buf`` is a buffer this arena handed out and has not taken back."""
        return id(buf) in self._used and self._used[id(buf)][2] is buf

    def release(self, buf: memoryview) -> None:
        """Zero ``buf`` and take it back for reuse; ``ValueError`` if it is not ours."""
        if not self.owns(buf):
            raise ValueError("buffer was not handed out by this arena")
        offset, length, _ = self._used.pop(id(buf))
        zero(self._view[offset:offset + length])
        self._give_back(offset, length)

    def _give_back(self, offset: int, length: int) -> None:
        k = bisect.bisect(self._free, (offset, length))
        if k < len(self._free) and offset + length == self._free[k][0]:
            length += self._free.pop(k)[1]
        if k and self._free[k - 1][0] + self._free[k - 1][1] == offset:
            k -= 1
            offset, length = self._free[k][0], self._free[k][1] + length
            del self._free[k]
        self._free.insert(k, (offset, length))

    def wipe(self, held: Iterable[object]) -> int:
        """Zero and take back the ``held`` buffers (the vault's) in as few memsets as possible.

        Everything below the high-water mark is zeroed in one run, except buffers handed
        out but not held — captures still being sealed, whose owner zeroes and releases
        them — so a full vault is one memset. Returns the bytes zeroed.
        """
        top = self.high_water
        for buf in held:
            if self.owns(buf):
                del self._used[id(buf)]
        free, start = [], 0
        for offset, length in sorted((o, n) for o, n, _ in self._used.values()):
            free.append((start, offset - start))
            start = offset + length
        free.append((start, self.size - start))
        zeroed = 0
        for offset, length in free:
            run = min(offset + length, top) - offset
            if run > 0:
                zero(self._view[offset:offset + run])
                zeroed += run
        self._free = [(o, n) for o, n in free if n > 0]
        return zeroed


@dataclass(frozen=True)
class HardeningReport:
    """What ``harden_process`` achieved; ``failures`` names each step that did not."""

    mlocked: bool
    non_dumpable: bool
    no_core: bool
    failures: tuple[str, ...] = field(default=())

    @property
    def ok(self) -> bool:
        return self.mlocked and self.non_dumpable and self.no_core


def _errno_text() -> str:
    import os

    err = ctypes.get_errno()
    return f"{os.strerror(err)} (errno {err})"


def _mlockall() -> str | None:
    c = libc()
    if c.mlockall(MCL_CURRENT | MCL_FUTURE | MCL_ONFAULT) == 0:
        return None
    if c.mlockall(MCL_CURRENT | MCL_FUTURE) == 0:  # kernel without MCL_ONFAULT
        return None
    return (f"mlockall: {_errno_text()}; grant CAP_IPC_LOCK or set LimitMEMLOCK=infinity "
            f"in the systemd unit")


def _not_dumpable() -> str | None:
    if libc().prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) == 0:
        return None
    return f"prctl(PR_SET_DUMPABLE, 0): {_errno_text()}"


def _no_core() -> str | None:
    try:
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    except (OSError, ValueError) as exc:
        return f"setrlimit(RLIMIT_CORE, 0): {exc}"
    return None


def harden_process(require: bool) -> HardeningReport:
    """Lock memory, make the process non-dumpable, forbid core files; report each step.

    With ``require`` a failed step raises ``MemoryHardeningError`` (a station on real
    hardware must not run degraded); otherwise each failure is logged as a warning,
    loudly, and the report says what is missing so ``selftest`` can fail on it.
    """
    failures = {name: step() for name, step in
                (("mlockall", _mlockall), ("dumpable", _not_dumpable), ("core", _no_core))}
    report = HardeningReport(
        mlocked=failures["mlockall"] is None,
        non_dumpable=failures["dumpable"] is None,
        no_core=failures["core"] is None,
        failures=tuple(why for why in failures.values() if why),
    )
    if report.ok:
        log.info("memory hardened: locked, non-dumpable, no core files")
        return report
    if require:
        raise MemoryHardeningError(
            "memory hardening failed: " + "; ".join(report.failures)
            + " — the station refuses to run with memory that could reach disk"
        )
    for why in report.failures:
        log.warning("memory NOT hardened (simulation allows it): %s", why)
    return report


def allocator_problems(environ: Mapping[str, str]) -> list[str]:
    """Which of :data:`STATION_ENV` the environment lacks (for ``selftest`` and the log)."""
    return [f"{k}={v} is not set" for k, v in STATION_ENV.items()
            if not _has_setting(environ.get(k, ""), k, v)]


def _has_setting(current: str, key: str, wanted: str) -> bool:
    if key == "MALLOC_PERTURB_":
        return current.isdigit() and int(current) % 256 != 0
    if key == "GLIBC_TUNABLES":
        return wanted in current.split(":")
    return current == wanted


def is_dumpable() -> bool:
    """Whether the process is still dumpable (``PR_GET_DUMPABLE``)."""
    return bool(libc().prctl(PR_GET_DUMPABLE, 0, 0, 0, 0))


def locked_kib() -> int:
    """``VmLck`` of this process in KiB, from ``/proc/self/status`` (0 if unknown)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmLck:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0
