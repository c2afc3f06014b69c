"""The relay's two records: the latest status of every station and the audit log.

Both are read by people (``clinicam relay status``, a privacy officer), so both are
built from an allow-list: only the keys DESIGN §5 defines, each checked for the shape
it must have (``clinicam.protocol.status.read_status`` / ``read_event``). A station bug
that put free text into a status or event could otherwise carry PHI into a file; such
values are dropped, never written.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from clinicam.protocol.ids import DEVICE_ID
from clinicam.protocol.status import read_event, read_status, utc_stamp
from clinicam.relay.sinks.directory import write_atomically


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
        return len(old)

    def station(self, device: str, status: Mapping[str, Any]) -> None:
        """Record a station's status (only the DESIGN §5 keys, well-formed).

        A will (``{"state": "offline"}`` alone) changes only the state: what the station
        last said about its vault stays visible.
        """
        with self._lock:
            entry = read_status(status)
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
        self._write({"source": "station", "device": device, **read_event(event)})

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
