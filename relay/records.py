"""The relay's record of stations: their latest status, kept current and coalesced.

Both are read by people (``clinicam relay status``, a privacy officer), so both are
built from an allow-list: only the keys DESIGN §5 defines, each checked for the shape
it must have (``clinicam.protocol.status.read_status`` / ``read_event``). A station bug
that put free text into a status or event could otherwise carry PHI into a file; such
values are dropped, never written.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from clinicam.protocol.ids import DEVICE_ID
from clinicam.protocol.status import read_status, utc_stamp

log = logging.getLogger(__name__)


class StatusBoard:
    """Latest status per station, the relay's counters and health, in one JSON file.

    The station-state store of DESIGN §5 ("status handling coalesced"): ``station()``
    and ``count()`` only change memory; the file is rewritten by ``flush_due()`` (called
    by the relay's worker after every message and sweep) at most every
    ``min_interval_s`` when something changed, and at least every ``refresh_s`` anyway,
    so its counters and ``updated`` are current even when no station talks. A status
    flood therefore costs one dict update per message, not a file rewrite. The file is
    replaced atomically (readers never see half of it) and lives in the relay's state
    directory, so every station seen survives a restart and a reboot; it is fsynced at
    most every ``sync_s`` (and by ``flush(sync=True)`` at stop), never per status: a
    power cut loses at most the last ``sync_s`` of changes, which the stations' retained
    statuses bring back.
    """

    def __init__(self, path: Path | str | None, wall: Callable[[], float] = time.time, *,
                 clock: Callable[[], float] = time.monotonic, min_interval_s: float = 1.0,
                 refresh_s: float = 5.0, sync_s: float = 60.0) -> None:
        self._path = Path(path) if path else None
        self.sync_s = sync_s
        self._synced_at: float | None = None
        self.syncs = 0
        self._wall, self._clock = wall, clock
        self.min_interval_s, self.refresh_s = min_interval_s, refresh_s
        self._lock = threading.Lock()
        self.stations: dict[str, dict[str, Any]] = {}
        self.counters: dict[str, int] = {}
        self.health_of: dict[str, dict[str, Any]] = {}
        self._dirty = True
        self._flushed_at: float | None = None
        self.writes = 0
        # who writes this file and how it is, read at every write (``clinicam relay status``)
        self.writer: Callable[[], dict[str, Any]] | None = None

    def load(self, fallback: Path | str | None = None) -> int:
        """Take back the stations of a previous run's file (a relay restart forgets none).

        Only the stations, re-checked against the allow-list; counters start again.
        ``fallback`` is read when the file does not exist yet (the status file's old place
        under /run, once, after an upgrade). Returns how many were taken; an unreadable
        file is left to be overwritten.
        """
        if self._path is None:
            return 0
        source = self._path
        if fallback is not None and not source.exists():
            source = Path(fallback)
        try:
            old = json.loads(source.read_text(encoding="utf-8")).get("stations", {})
        except (OSError, ValueError, AttributeError):
            return 0
        if not isinstance(old, dict):
            return 0
        with self._lock:
            for device, entry in old.items():
                if isinstance(device, str) and DEVICE_ID.fullmatch(device) and isinstance(entry, dict):
                    kept = read_status(entry)
                    seen = entry.get("seen")
                    if isinstance(seen, str) and read_status({"cert_not_after": seen}):  # an RFC 3339 stamp
                        kept["seen"] = seen
                    if kept.get("state") == "online":  # not known any more: its next status says
                        kept["state"] = "unknown"
                    self.stations.setdefault(device, kept)
            self._dirty = True
        return len(old)

    def station(self, device: str, status: Mapping[str, Any]) -> None:
        """Record a station's status (only the DESIGN §5 keys, well-formed).

        A will (``{"state": "offline"}`` alone) changes only the state: what the station
        last said about its vault stays visible.
        """
        entry = read_status(status)
        with self._lock:
            if set(entry) == {"state"}:
                entry = {**self.stations.get(device, {}), **entry}
            entry["seen"] = utc_stamp(self._wall())
            self.stations[device] = entry
            self.counters["status-received"] = self.counters.get("status-received", 0) + 1
            self._dirty = True

    def count(self, name: str, n: int = 1) -> None:
        if n:
            with self._lock:
                self.counters[name] = self.counters.get(name, 0) + n
                self._dirty = True

    def health(self, name: str, detail: Mapping[str, Any]) -> None:
        """Set one part's health (``{"ok": bool, ...}``), e.g. ``audit``; shown as ``health``."""
        with self._lock:
            if self.health_of.get(name) != detail:
                self.health_of[name] = dict(detail)
                self._dirty = True

    @property
    def healthy(self) -> bool:
        with self._lock:
            return all(h.get("ok", True) for h in self.health_of.values())

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {
                **({"relay": self.writer()} if self.writer else {}),
                "updated": utc_stamp(self._wall()),
                "ok": all(h.get("ok", True) for h in self.health_of.values()),
                "health": {k: dict(v) for k, v in sorted(self.health_of.items())},
                "counters": dict(sorted(self.counters.items())),
                "stations": {d: dict(s) for d, s in sorted(self.stations.items())},
            }

    def flush_due(self) -> bool:
        """Rewrite the file if it is due (see the class docstring); True if written."""
        now = self._clock()
        last = self._flushed_at
        if last is not None and now - last < (self.min_interval_s if self._dirty else self.refresh_s):
            return False
        self.flush()
        return True

    def flush(self, *, sync: bool = False) -> None:
        """Rewrite the status file now, atomically (readers never see half of it); to
        disk (fsync) with ``sync`` or when the last fsync is ``sync_s`` old."""
        now = self._flushed_at = self._clock()
        if self._path is None:
            return
        body = json.dumps(self.snapshot(), indent=1, sort_keys=True).encode() + b"\n"
        with self._lock:
            self._dirty = False
        durable = sync or self._synced_at is None or now - self._synced_at >= self.sync_s
        try:
            _replace(self._path, body, durable=durable)
            self.writes += 1
        except OSError as exc:  # the status file is a view: never fail the relay over it
            log.warning("status: cannot write %s (%s)", self._path, type(exc).__name__)
            return
        if durable:
            self._synced_at, self.syncs = now, self.syncs + 1


def _replace(path: Path, data: bytes, *, durable: bool) -> None:
    """Write a temporary file and rename it over ``path``; with ``durable``, fsync the
    file before and its directory after the rename (so a power cut leaves the old file
    or the new one, not an empty one)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        if durable:
            os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    if durable:
        dirfd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(dirfd)
        finally:
            os.close(dirfd)


def __getattr__(name: str) -> Any:
    """``AuditLog`` lives in ``clinicam.relay.audit`` now; old imports keep working."""
    if name == "AuditLog":
        from clinicam.relay.audit import AuditLog

        return AuditLog
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
