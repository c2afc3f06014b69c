"""The station's story in the journal: one INFO line per lifecycle event, ids only.

Everything the station does already passes through its observer as a small record
(the ``--events-json`` stream of the demo). ``Journal`` sits in front of that observer
and writes the events an engineer needs to follow a ward round in ``journalctl -u
clinicam-station``: sessions opened and closed, captures taken, delivered, re-sent,
rejected or refused (with the reason code), expired, the vault full, remote commands
and wipes. A line carries capture ids, reason codes, counts and sizes, never a
scanned code, a session's subject or a payload (DESIGN §3.1): the records it reads
are built without them, and it reads only the keys listed here.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

log = logging.getLogger("clinicam.station.journal")

Observer = Callable[[dict[str, Any]], None]


def _ids(record: Mapping[str, Any]) -> str:
    ids = record.get("capture_ids") or []
    return " ".join(str(i) for i in ids) if ids else "none"


def _capture(r: Mapping[str, Any]) -> str | None:
    cid, status = r.get("capture_id", "?"), r.get("status")
    if status == "sealed":
        return f"captured {cid} ({r.get('bytes', '?')} bytes sealed; {r.get('pending', '?')} pending)"
    if status == "stored":
        return f"delivered {cid} ({r.get('pending', '?')} pending)"
    if status == "retry":
        return f"re-sending {cid} later ({r.get('why', '?')}, attempt {r.get('attempt', '?')})"
    if status == "rejected":
        return f"capture {cid} rejected by the relay: {r.get('reason', '?')}"
    if status == "refused":
        reason = r.get("reason", "?")
        return "vault full: capture refused" if reason == "vault-full" else f"capture refused: {reason}"
    if status == "voided":
        return f"voided {cid} (was {r.get('was', '?')})"
    return None


_LINES: dict[str, Callable[[Mapping[str, Any]], str | None]] = {
    "capture": _capture,
    "expired": lambda r: f"expired undelivered captures: {_ids(r)}",
    "command": lambda r: f"remote command {r.get('cmd', '?')} ({r.get('id', '?')})",
    "wipe": lambda r: f"wiped ({r.get('trigger', '?')}): {r.get('count', 0)} undelivered capture(s): {_ids(r)}",
    "drain": lambda r: f"draining: {r.get('pending', '?')} capture(s) still to deliver",
}

# audit events the workflow publishes (``events.Audit``): logged by name, plus ids and counts
_AUDIT_FIELDS = ("capture_id", "reason", "count")


CERT_WARN_DAYS = 30
CERT_CHECK_EVERY_S = 86400.0


def certificate_notice(not_after: datetime | None, now: datetime) -> tuple[int, str] | None:
    """A log level and line when the station's own certificate expires within 30 days."""
    if not_after is None:
        return None
    left = (not_after - now).total_seconds()
    day = not_after.date().isoformat()
    if left <= 0:
        return logging.ERROR, (f"this station's certificate expired on {day}: the broker refuses it; renew it "
                               "('clinicam provision renew' on the site, then 'clinicam provision install')")
    if left < CERT_WARN_DAYS * 86400:
        return logging.WARNING, (f"this station's certificate expires on {day} (in {left / 86400:.0f} days): "
                                 "renew it ('clinicam provision renew' on the site, then 'clinicam provision install')")
    return None


class Journal:
    """An observer that also journals; pass it where the station's observer goes."""

    def __init__(self, observer: Observer | None = None) -> None:
        self._observer = observer

    def __call__(self, record: dict[str, Any]) -> None:
        line = _LINES.get(str(record.get("kind")), lambda _r: None)(record)
        if line is not None:
            log.info("%s", line)
        if self._observer is not None:
            self._observer(record)

    def audit(self, event: Mapping[str, Any]) -> None:
        """A workflow audit event (``session-opened``, ``session-closed``, ...)."""
        name = str(event.get("event", "?")).replace("-", " ")
        extra = ", ".join(f"{k} {event[k]}" for k in _AUDIT_FIELDS if k in event)
        log.info("%s%s", name, f" ({extra})" if extra else "")
