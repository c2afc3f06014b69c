"""The relay's records of stations: their latest status, and the audit allow-lists.

Both are read by people (``clinicam relay status``, a privacy officer), so both are
built from an allow-list: only the keys DESIGN §5 defines, each checked for the shape
it must have. A station bug that put free text into a status or event could otherwise
carry PHI into a file; such values are dropped and counted, never written.
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

_HEX32 = re.compile(r"[0-9a-f]{32}")
_WORD = re.compile(r"[a-z0-9-]{1,32}")
_CMD_ID = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_STAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,6})?(Z|[+-]\d\d:\d\d)")
_FW = re.compile(r"[A-Za-z0-9_.+-]{1,40}")


def _is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def _is_number(v: object) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and v >= 0


def _match(pattern: re.Pattern[str]) -> Callable[[object], bool]:
    return lambda v: isinstance(v, str) and pattern.fullmatch(v) is not None


STATUS_KEYS: dict[str, Callable[[object], bool]] = {
    "state": _match(_WORD),
    "pending": _is_int,
    "pending_bytes": _is_int,
    "boot": _match(_HEX32),
    "fw": _match(_FW),
    "uptime_s": _is_number,
    "cert_not_after": _match(_STAMP),
    "clock_synced": lambda v: isinstance(v, bool),
    "renewal": lambda v: _is_renewal(v),
}


def _is_renewal(v: object) -> bool:
    """The station's certificate renewal state (issue 17): ``{"state", "at", "reason"}``."""
    if not isinstance(v, dict) or set(v) != {"state", "at", "reason"}:
        return False
    return (_match(_WORD)(v["state"]) and (v["at"] is None or _match(_STAMP)(v["at"]))
            and (v["reason"] is None or _match(_WORD)(v["reason"])))

EVENT_KEYS: dict[str, Callable[[object], bool]] = {
    "event": _match(_WORD),
    "at": _match(_STAMP),
    "capture_id": _match(_HEX32),
    "capture_ids": lambda v: isinstance(v, list) and all(_match(_HEX32)(x) for x in v),
    "session": _match(_HEX32),
    "reason": _match(_WORD),
    "count": _is_int,
    "cmd_id": _match(_CMD_ID),
    "event_id": _match(re.compile(r"[0-9a-f]{16}")),
}


def allowed(obj: Mapping[str, Any], keys: Mapping[str, Callable[[object], bool]]) -> dict[str, Any]:
    """The keys of ``obj`` that are allowed and well-formed; everything else is dropped."""
    return {k: v for k, v in obj.items() if k in keys and keys[k](v)}


def utc_stamp(at: float) -> str:
    """RFC 3339 UTC with milliseconds and ``Z``, the format of every clinicam time."""
    dt = datetime.fromtimestamp(at, UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


class StatusBoard:
    """Latest status per station, the relay's counters and health, in one JSON file.

    The station-state store of DESIGN §5 ("status handling coalesced"): ``station()``
    and ``count()`` only change memory; the file is rewritten by ``flush_due()`` (called
    by the relay's worker after every message and sweep) at most every
    ``min_interval_s`` when something changed, and at least every ``refresh_s`` anyway,
    so its counters and ``updated`` are current even when no station talks. A status
    flood therefore costs one dict update per message, not a file rewrite; the file is
    replaced atomically but not fsynced (it lives in /run and is rebuilt at start).
    """

    def __init__(self, path: Path | str | None, wall: Callable[[], float] = time.time, *,
                 clock: Callable[[], float] = time.monotonic, min_interval_s: float = 1.0,
                 refresh_s: float = 5.0) -> None:
        self._path = Path(path) if path else None
        self._wall, self._clock = wall, clock
        self.min_interval_s, self.refresh_s = min_interval_s, refresh_s
        self._lock = threading.Lock()
        self.stations: dict[str, dict[str, Any]] = {}
        self.counters: dict[str, int] = {}
        self.health_of: dict[str, dict[str, Any]] = {}
        self._dirty = True
        self._flushed_at: float | None = None
        self.writes = 0

    def station(self, device: str, status: Mapping[str, Any]) -> None:
        """Record a station's status (only the DESIGN §5 keys, well-formed)."""
        entry = allowed(status, STATUS_KEYS)
        entry["seen"] = utc_stamp(self._wall())
        with self._lock:
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

    def flush(self) -> None:
        """Rewrite the status file now, atomically (readers never see half of it)."""
        self._flushed_at = self._clock()
        if self._path is None:
            return
        body = json.dumps(self.snapshot(), indent=1, sort_keys=True).encode() + b"\n"
        with self._lock:
            self._dirty = False
        try:
            _replace(self._path, body)
            self.writes += 1
        except OSError as exc:  # the status file is a view: never fail the relay over it
            log.warning("status: cannot write %s (%s)", self._path, type(exc).__name__)


def _replace(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
    finally:
        os.close(fd)
    os.replace(tmp, path)


def __getattr__(name: str) -> Any:
    """``AuditLog`` lives in ``clinicam.relay.audit`` now; old imports keep working."""
    if name == "AuditLog":
        from clinicam.relay.audit import AuditLog

        return AuditLog
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
