"""The relay's audit log: append-only JSON lines that never block delivery (DESIGN §5).

Station events and the relay's decisions, without PHI (``protocol.status.read_event`` keeps only
the DESIGN §5 keys). Three rules, each from a measured failure (issue 13):

- **Writing never fails the caller.** A log that cannot be written (a full disk, a
  directory in its place, wrong permissions) is a *health fault* — one error line when
  it starts, ``health()`` for the status file and the metrics, one line when it ends —
  and never an exception: acks for photos the ledger has durably recorded go out
  regardless. Lines are kept in RAM meanwhile and written, in order, once the file is
  writable again (``retry()`` is called by every relay sweep).
- **Bounded, and fair at the bound.** At most ``max_pending`` unwritten lines are kept.
  When that bound is reached the *oldest line of the device holding the most* is
  dropped, so one station's noise never pushes out another's events; every drop is
  counted per device and written as an ``audit-lines-dropped`` line on recovery.
- **Rate-limited per device.** A token bucket per device (``rate_per_s``, ``burst``)
  over station events and decisions, except a capture's first ``stored`` and a
  ``voided`` (``decision(..., limited=False)``); lines over it are counted and
  summarised as one ``audit-suppressed`` line per device at the next sweep (``retry()``).

Rotation: when the file reaches ``rotate_bytes`` or its first line is older than
``rotate_age_s``, it is renamed ``audit.jsonl.<UTC stamp>`` and a new one started;
the newest ``keep`` rotated files are kept (0 keeps all: archiving is then the site's).
"""

from __future__ import annotations

import heapq
import itertools
import json
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from clinicam.protocol.status import read_event, utc_stamp
from clinicam.relay.ratelimit import Buckets

log = logging.getLogger(__name__)


class AuditLog:
    """Append-only, rate-limited, rotated JSON lines; see the module docstring."""

    def __init__(self, path: Path | str | None, wall: Callable[[], float] = time.time, *,
                 clock: Callable[[], float] = time.monotonic, rate_per_s: float = 20.0,
                 burst: float = 200.0, max_pending: int = 20000,
                 rotate_bytes: int = 64 * 1024 * 1024, rotate_age_s: float = 7 * 86400.0,
                 keep: int = 52, retry_s: float = 1.0) -> None:
        self._path = Path(path) if path else None
        self._wall, self._clock = wall, clock
        self.rate_per_s, self.burst, self.max_pending = rate_per_s, burst, max_pending
        self.rotate_bytes, self.rotate_age_s, self.keep = rotate_bytes, rotate_age_s, keep
        self._retry_s = retry_s
        self._lock = threading.RLock()
        self.lines: deque[dict[str, Any]] = deque(maxlen=10000)  # recent, for tests and status
        self._pending: dict[str, deque[tuple[int, bytes]]] = {}
        self._npending = 0
        self._seq = itertools.count()
        self._buckets = Buckets(rate_per_s, burst, clock)
        self._suppressed: dict[str, int] = {}
        self._dropped: dict[str, int] = {}
        self._fault: str | None = None
        self._fault_since: float | None = None
        self._next_try = 0.0
        self.faults = 0
        self.suppressed_total = 0
        self.dropped_total = 0
        self._born: float | None = self._file_started()

    # -- what the relay records ----------------------------------------------------------
    def station_event(self, device: str, event: Mapping[str, Any]) -> None:
        self._add(device, {"source": "station", "device": device, **read_event(event)})

    def decision(self, device: str, capture_id: str | None, status: str, reason: str | None, *,
                 limited: bool = True) -> None:
        """A relay decision. ``limited=False`` for a capture filed (or voided) for the first
        time: it needed a validly signed capture that every sink took, so such lines come
        no faster than the relay really files, and a photo in the record keeps its line."""
        entry: dict[str, Any] = {"source": "relay", "device": device, "decision": status,
                                 "reason": reason}
        if capture_id is not None:
            entry["capture_id"] = capture_id
        self._add(device, entry, limited=limited)

    def suppressed(self, device: str, count: int) -> None:
        """``count`` events of ``device`` were refused before reaching us (its rate limit)."""
        if count:
            with self._lock:
                self._suppressed[device] = self._suppressed.get(device, 0) + count
                self.suppressed_total += count

    def retry(self) -> None:
        """Summarise suppressed lines and write what is kept (called by each sweep)."""
        with self._lock:
            suppressed, self._suppressed = self._suppressed, {}
            for device, count in sorted(suppressed.items()):
                self._keep(device, {"source": "relay", "device": device,
                                    "decision": "audit-suppressed", "reason": "rate-limit",
                                    "count": count})
            if suppressed:  # one line per sweep, however many stations
                log.warning("audit: %d line(s) over the per-station rate limit were not logged "
                            "(%d station(s); summarised in the log)", sum(suppressed.values()),
                            len(suppressed))
            self._flush(force=True)

    def health(self) -> dict[str, Any]:
        """For the status file and the metrics: ``ok`` is False while lines cannot be written."""
        with self._lock:
            return {"ok": self._fault is None, "fault": self._fault, "faults": self.faults,
                    "since": utc_stamp(self._fault_since) if self._fault_since else None,
                    "pending_lines": self._npending, "dropped_lines": self.dropped_total,
                    "suppressed_lines": self.suppressed_total}

    @property
    def healthy(self) -> bool:
        return self._fault is None

    # -- keeping lines -------------------------------------------------------------------
    def _add(self, device: str, entry: dict[str, Any], limited: bool = True) -> None:
        with self._lock:
            if limited and not self._buckets.take(device):
                self._suppressed[device] = self._suppressed.get(device, 0) + 1
                self.suppressed_total += 1
                return
            self._keep(device, entry)
            self._flush(force=False)

    def _keep(self, device: str, entry: dict[str, Any]) -> None:
        entry = {"logged": utc_stamp(self._wall()), **entry}
        self.lines.append(entry)
        line = (json.dumps(entry, sort_keys=True, separators=(",", ":")) + "\n").encode()
        self._pending.setdefault(device, deque()).append((next(self._seq), line))
        self._npending += 1
        while self._npending > self.max_pending:
            self._drop_oldest_of_largest()

    def _drop_oldest_of_largest(self) -> None:
        device = max(self._pending, key=lambda d: len(self._pending[d]))
        self._pending[device].popleft()
        if not self._pending[device]:
            del self._pending[device]
        self._npending -= 1
        self._dropped[device] = self._dropped.get(device, 0) + 1
        self.dropped_total += 1

    # -- writing -------------------------------------------------------------------------
    def _flush(self, *, force: bool) -> None:
        if self._path is None:
            self._pending.clear()
            self._npending = 0
            return
        if not self._npending or (self._fault and not force and self._clock() < self._next_try):
            return
        try:
            self._rotate_if_due()
            self._write(self._path)
        except OSError as exc:
            self._failed(exc)
            return
        self._recovered()

    def _write(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        ordered = heapq.merge(*self._pending.values())
        data = b"".join(line for _, line in ordered)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
        finally:
            os.close(fd)
        self._pending.clear()
        self._npending = 0
        if self._born is None:
            self._born = self._wall()

    def _failed(self, exc: OSError) -> None:
        self._next_try = self._clock() + self._retry_s
        if self._fault is None:
            self._fault, self._fault_since = type(exc).__name__, self._wall()
            self.faults += 1
            log.error("audit: cannot write %s (%s): keeping up to %d lines in memory; acks "
                      "continue. Fix the file or its directory; lines are written once it is "
                      "writable", self._path, self._fault, self.max_pending)

    def _recovered(self) -> None:
        if self._fault is None and not self._dropped:
            return
        dropped, self._dropped = self._dropped, {}
        log.warning("audit: %s writable again (%d line(s) were dropped at the bound)",
                    self._path, sum(dropped.values()))
        self._fault = self._fault_since = None
        for device, count in sorted(dropped.items()):
            self._keep(device, {"source": "relay", "device": device,
                                "decision": "audit-lines-dropped", "reason": "bound",
                                "count": count})
        try:
            assert self._path is not None
            self._write(self._path)
        except OSError as exc:
            self._failed(exc)

    # -- rotation ------------------------------------------------------------------------
    def _rotate_if_due(self) -> None:
        assert self._path is not None
        try:
            size = self._path.stat().st_size
        except FileNotFoundError:
            self._born = None
            return
        old = self._born is not None and self._wall() - self._born >= self.rotate_age_s
        if size == 0 or (size < self.rotate_bytes and not old):
            return
        stamp = datetime.fromtimestamp(self._wall(), UTC).strftime("%Y%m%dT%H%M%S%fZ")
        os.rename(self._path, self._path.with_name(f"{self._path.name}.{stamp}"))
        self._born = None
        log.info("audit: rotated %s (%d bytes)", self._path, size)
        if self.keep:
            rotated = sorted(self._path.parent.glob(f"{self._path.name}.*"))
            for stale in rotated[:-self.keep]:
                stale.unlink(missing_ok=True)

    def _file_started(self) -> float | None:
        """When the current file was started: its first line's ``logged`` time."""
        if self._path is None:
            return None
        try:
            with self._path.open("rb") as f:
                first = json.loads(f.readline() or b"null")
            return datetime.fromisoformat(first["logged"]).timestamp()
        except (OSError, ValueError, TypeError, KeyError):
            return None
