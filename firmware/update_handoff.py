"""Handing a remote ``update`` to root, and hearing how it ended (image-build/README.md, "Updates").

The station runs unprivileged in its sandbox: it cannot download into ``/run``, stop
itself, run RAUC or reboot. On a live ``update`` command it only writes the order to
``update-request.json`` in its own RuntimeDirectory (``/run/clinicam``, from systemd's
``$RUNTIME_DIRECTORY``), atomically (a temporary file, then ``rename``): the
``update-request.path`` unit sees the file and starts ``update-request.service`` (root),
which checks the order again, removes the file and runs ``update-fetch``. The keys are
``id, url, sha256, version, allow_downgrade``: the command's, nothing about patients.

``update-request`` leaves its outcome, when the station is still running to hear it, in
``/run/clinicam-update/request-result.json`` (root-owned, readable by the station's
group): ``{"id", "version", "exit", "at"}`` with ``update-fetch``'s exit status. The
station polls it with its housekeeping and turns it into one audit event (:data:`OUTCOMES`).
The station's RuntimeDirectory is not used for the answer: it is removed whenever the
station stops, which ``update-install`` does before installing.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from clinicam.common.errors import ClinicamError
from clinicam.protocol.commands import VERSION, UpdateOrder

REQUEST_NAME = "update-request.json"
DEFAULT_RUN = Path("/run/clinicam-update")
RESULT_NAME = "request-result.json"
_ID = re.compile(r"[A-Za-z0-9_.-]{1,64}")
# A result written this long before the station started was reported by the one before.
RESULT_GRACE_S = 120.0

# update-fetch's exit status -> the audit event and its reason. "refused": nothing was
# changed (the station keeps running its image); "failed": it was tried and did not work.
OUTCOMES: Mapping[int, tuple[str, str]] = {
    2: ("update-refused", "invalid"),   # the request or its arguments (usage)
    3: ("update-refused", "bundle"),    # signature, compatible, downgrade or SHA-256
    4: ("update-refused", "busy"),      # the station was not idle within --wait-idle
    5: ("update-failed", "install"),    # rauc install failed; the station was restarted
    6: ("update-failed", "download"),   # the update server could not be reached or read
    7: ("update-refused", "server"),    # not the update server recorded at provisioning
}
UNKNOWN_OUTCOME = ("update-failed", "error")


class UpdateUnavailable(ClinicamError):
    """This station cannot hand an update to root (not under systemd, or /run not writable)."""


@dataclass(frozen=True)
class UpdateOutcome:
    """One ``update-request`` result: the event to publish and its fields (no PHI)."""

    event: str
    reason: str
    cmd_id: str | None
    version: str | None
    exit: int


class UpdateHandoff:
    """Writes update orders for root and reads back their outcome (never blocks for long)."""

    def __init__(self, runtime_dir: Path | None, run_dir: Path = DEFAULT_RUN, *, started_at: float) -> None:
        self.runtime_dir, self.result_path = runtime_dir, run_dir / RESULT_NAME
        self._started_at = started_at
        self._reported: tuple[int, int] | None = None

    @classmethod
    def from_environment(cls, environ: Mapping[str, str], *, started_at: float) -> UpdateHandoff:
        """systemd's ``$RUNTIME_DIRECTORY`` (absent: not under the station unit, no hand-off);
        ``$CLINICAM_UPDATE_RUN`` overrides ``/run/clinicam-update`` as for the root scripts."""
        runtime = environ.get("RUNTIME_DIRECTORY", "").split(":")[0]
        run = environ.get("CLINICAM_UPDATE_RUN") or str(DEFAULT_RUN)
        return cls(Path(runtime) if runtime else None, Path(run), started_at=started_at)

    def request(self, cmd_id: str, order: UpdateOrder) -> Path:
        """Write the order for ``update-request.path``; the newest order replaces an unread one."""
        if self.runtime_dir is None:
            raise UpdateUnavailable("no RuntimeDirectory (not started by clinicam-station.service): "
                                    "remote updates need the appliance image")
        body = json.dumps({"id": cmd_id, **order.fields()}, sort_keys=True).encode()
        final = self.runtime_dir / REQUEST_NAME
        temp = self.runtime_dir / f".{REQUEST_NAME}.{os.getpid()}"
        try:
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
            try:
                os.write(fd, body)
            finally:
                os.close(fd)
            os.replace(temp, final)  # the path unit sees a complete file or none
        except OSError as exc:
            raise UpdateUnavailable(f"{final}: cannot be written ({exc.strerror})") from exc
        return final

    def outcome(self) -> UpdateOutcome | None:
        """A result not reported yet by this process (and not older than its start), or None."""
        try:
            stat = self.result_path.stat()
            text = self.result_path.read_bytes()[:4096]
        except OSError:
            return None
        key = (stat.st_ino, stat.st_mtime_ns)
        if key == self._reported or stat.st_mtime < self._started_at - RESULT_GRACE_S:
            return None
        self._reported = key
        return parse_outcome(text)


def parse_outcome(text: bytes) -> UpdateOutcome | None:
    """The result ``update-request`` wrote, checked like anything read: None if malformed."""
    try:
        obj = json.loads(text)
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(obj, dict):
        return None
    code, cmd_id, version = obj.get("exit"), obj.get("id"), obj.get("version")
    if not isinstance(code, int) or isinstance(code, bool) or code == 0:
        return None  # 0: installed and rebooting; "updated" comes from update-confirm
    cmd_id = cmd_id if isinstance(cmd_id, str) and _ID.fullmatch(cmd_id) else None
    version = version if isinstance(version, str) and VERSION.fullmatch(version) else None
    event, reason = OUTCOMES.get(code, UNKNOWN_OUTCOME)
    return UpdateOutcome(event, reason, cmd_id, version, code)
