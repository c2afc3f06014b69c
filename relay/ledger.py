"""What the relay has already filed: the memory behind idempotent acknowledgements.

A station re-sends a capture whenever an ack is lost, so the relay must answer a
repeat with the references it gave the first time, and refuse a *different* manifest
under a known ``(device, capture_id)`` as ``duplicate-conflict`` (DESIGN §5). The
ledger keeps, per filed capture, the SHA-256 of the manifest message, the sink
references and the device certificate (to verify a later signed ``void``). None of
that is PHI. With a ``path`` it is an append-only JSON-lines file, reloaded on start,
so a restarted relay still recognises what it filed.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Filed:
    """One capture every sink confirmed."""

    device: str
    capture_id: str
    manifest_sha256: str
    refs: dict[str, str]
    cert_pem: str


class Ledger:
    """Filed captures by ``(device, capture_id)``, optionally persisted to ``path``."""

    def __init__(self, path: Path | str | None = None) -> None:
        self._path = Path(path) if path is not None else None
        self._filed: dict[tuple[str, str], Filed] = {}
        self._lock = threading.Lock()
        if self._path is not None and self._path.exists():
            self._load(self._path)

    def __len__(self) -> int:
        return len(self._filed)

    def get(self, device: str, capture_id: str) -> Filed | None:
        with self._lock:
            return self._filed.get((device, capture_id))

    def record(self, filed: Filed) -> None:
        """Remember a filed capture (and append it to the file, fsynced)."""
        with self._lock:
            self._filed[(filed.device, filed.capture_id)] = filed
            if self._path is not None:
                self._append(self._path, filed)

    @staticmethod
    def _append(path: Path, filed: Filed) -> None:
        line = json.dumps(filed.__dict__, sort_keys=True, separators=(",", ":")) + "\n"
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640)
        try:
            os.write(fd, line.encode())
            os.fsync(fd)
        finally:
            os.close(fd)

    def _load(self, path: Path) -> None:
        bad = 0
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                filed = Filed(**json.loads(line))
            except (ValueError, TypeError):
                bad += 1  # a torn last line after a crash: that capture will be re-sent
                continue
            self._filed[(filed.device, filed.capture_id)] = filed
        if bad:
            log.warning("ledger: skipped %d unreadable line(s) in %s", bad, path)
