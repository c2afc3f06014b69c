"""The relay's two records: the latest status of every station and the audit log.

Both are read by people (``clinicam relay status``, a privacy officer), so both are
built from an allow-list: only the keys DESIGN §5 defines, each checked for the shape
it must have. A station bug that put free text into a status or event could otherwise
carry PHI into a file; such values are dropped and counted, never written.
"""

from __future__ import annotations

import json
import os
import re
import threading
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from clinicam.relay.sinks.directory import write_atomically

_HEX32 = re.compile(r"[0-9a-f]{32}")
_WORD = re.compile(r"[a-z0-9-]{1,32}")
_CMD_ID = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_STAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,6})?(Z|[+-]\d\d:\d\d)")
_WORD_ID = re.compile(r"[a-z0-9-]{3,64}")
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
    "relay": lambda v: v in ("online", "offline"),
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
}


def allowed(obj: Mapping[str, Any], keys: Mapping[str, Callable[[object], bool]]) -> dict[str, Any]:
    """The keys of ``obj`` that are allowed and well-formed; everything else is dropped."""
    return {k: v for k, v in obj.items() if k in keys and keys[k](v)}


def utc_stamp(at: float) -> str:
    """RFC 3339 UTC with milliseconds and ``Z``, the format of every clinicam time."""
    dt = datetime.fromtimestamp(at, UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


class StatusBoard:
    """Latest status per station plus the relay's own counters, kept in one JSON file."""

    def __init__(self, path: Path | str | None, wall: Callable[[], float] = time.time) -> None:
        self._path = Path(path) if path else None
        self._wall = wall
        self._lock = threading.Lock()
        self.stations: dict[str, dict[str, Any]] = {}
        self.counters: dict[str, int] = {}
        # who writes this file and how it is, read at every write (``clinicam relay status``)
        self.writer: Callable[[], dict[str, Any]] | None = None

    def load(self) -> int:
        """Take back the stations of a previous run's file (a relay restart forgets none).

        Only the stations, re-checked against the allow-list; counters start again.
        Returns how many were taken; an unreadable file is left to be overwritten.
        """
        if self._path is None:
            return 0
        try:
            old = json.loads(self._path.read_text(encoding="utf-8")).get("stations", {})
        except (OSError, ValueError, AttributeError):
            return 0
        if not isinstance(old, dict):
            return 0
        keys = {**STATUS_KEYS, "seen": _match(_STAMP)}
        with self._lock:
            for device, entry in old.items():
                if isinstance(device, str) and _WORD_ID.fullmatch(device) and isinstance(entry, dict):
                    kept = allowed(entry, keys)
                    if kept.get("state") == "online":  # not known any more: its next status says
                        kept["state"] = "unknown"
                    self.stations.setdefault(device, kept)
        return len(old)

    def station(self, device: str, status: Mapping[str, Any]) -> None:
        """Record a station's status (only the DESIGN §5 keys, well-formed).

        A will (``{"state": "offline"}`` alone) changes only the state: what the station
        last said about its vault stays visible.
        """
        with self._lock:
            entry = allowed(status, STATUS_KEYS)
            if set(entry) == {"state"}:
                entry = {**self.stations.get(device, {}), **entry}
            entry["seen"] = utc_stamp(self._wall())
            self.stations[device] = entry
        self.flush()

    def count(self, name: str, n: int = 1) -> None:
        with self._lock:
            self.counters[name] = self.counters.get(name, 0) + n

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {
                **({"relay": self.writer()} if self.writer else {}),
                "updated": utc_stamp(self._wall()),
                "counters": dict(sorted(self.counters.items())),
                "stations": {d: dict(s) for d, s in sorted(self.stations.items())},
            }

    def flush(self) -> None:
        """Rewrite the status file atomically (readers never see half of it)."""
        if self._path is None:
            return
        self._path.parent.mkdir(parents=True, exist_ok=True)
        body = json.dumps(self.snapshot(), indent=1, sort_keys=True).encode() + b"\n"
        write_atomically(self._path, body, mode=0o644)


class AuditLog:
    """Append-only JSON lines: station events and the relay's decisions, without PHI."""

    def __init__(self, path: Path | str | None, wall: Callable[[], float] = time.time) -> None:
        self._path = Path(path) if path else None
        self._wall = wall
        self._lock = threading.Lock()
        self.lines: list[dict[str, Any]] = []  # kept in memory too, for tests and status

    def station_event(self, device: str, event: Mapping[str, Any]) -> None:
        self._write({"source": "station", "device": device, **allowed(event, EVENT_KEYS)})

    def decision(self, device: str, capture_id: str | None, status: str, reason: str | None) -> None:
        entry = {"source": "relay", "device": device, "decision": status, "reason": reason}
        if capture_id is not None:
            entry["capture_id"] = capture_id
        self._write(entry)

    def _write(self, entry: dict[str, Any]) -> None:
        entry = {"logged": utc_stamp(self._wall()), **entry}
        with self._lock:
            self.lines.append(entry)
            if len(self.lines) > 10000:
                del self.lines[:5000]
            if self._path is None:
                return
            self._path.parent.mkdir(parents=True, exist_ok=True)
            line = (json.dumps(entry, sort_keys=True, separators=(",", ":")) + "\n").encode()
            fd = os.open(self._path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640)
            try:
                os.write(fd, line)
            finally:
                os.close(fd)
