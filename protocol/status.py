"""The station's retained status and audit events, as DESIGN §5 spells them.

Kept apart from the MQTT code so the exact keys are easy to read and test: the relay
files only these keys, and nothing here may ever carry PHI.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

STATUS_KEYS = ("state", "pending", "pending_bytes", "boot", "fw", "uptime_s",
               "cert_not_after", "clock_synced")
EVENT_KEYS = frozenset({"capture_id", "capture_ids", "session", "reason", "count", "cmd_id",
                        "event_id"})


def utc_stamp(at: float) -> str:
    """RFC 3339 UTC with milliseconds and ``Z``."""
    dt = datetime.fromtimestamp(at, UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


def status_payload(*, state: str, pending: int, pending_bytes: int, boot: str, fw: str,
                   uptime_s: float, cert_not_after: str | None, clock_synced: bool) -> dict[str, Any]:
    """The retained ``P/D/status`` object (the will is ``{"state": "offline"}``)."""
    return {
        "state": state,
        "pending": pending,
        "pending_bytes": pending_bytes,
        "boot": boot,
        "fw": fw,
        "uptime_s": int(uptime_s),
        "cert_not_after": cert_not_after,
        "clock_synced": clock_synced,
    }


def event_payload(event: str, at: float, **fields: Any) -> dict[str, Any]:
    """An audit event for ``P/D/event``; refuses keys DESIGN §5 does not define."""
    unknown = set(fields) - EVENT_KEYS
    if unknown:
        raise ValueError(f"event keys must be among {sorted(EVENT_KEYS)}, got {sorted(unknown)}")
    return {"event": event, "at": utc_stamp(at), **{k: v for k, v in fields.items() if v is not None}}
