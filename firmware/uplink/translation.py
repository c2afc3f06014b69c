"""The station's side of the uplink: uplink events → workflow events and observer records.

The uplink calls this from its own threads (paho's network loop, its delivery loop),
so it never touches workflow state: it only posts events onto the station's queue,
bumps the station's delivery counts and reports to the observer — captures by id,
failures by code, never PHI. ``FaultReported`` and ``Identify`` are the two events it
posts that the station loop handles itself rather than the workflow.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from clinicam.firmware.uplink import events as up
from clinicam.firmware.workflow import events as ev

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FaultReported:
    """Something only an engineer can fix (a part too large for the broker, a dead camera)."""

    reason: str


@dataclass(frozen=True)
class Identify:
    """A remote ``identify`` command: show the station on its panel."""


class UplinkTranslator:
    """The uplink's ``on_event`` callback: translate, count, observe, never block."""

    def __init__(
        self,
        post: Callable[[Any], None],
        observe: Callable[[dict[str, Any]], None],
        counts: dict[str, int],
        pending: Callable[[], int],
    ) -> None:
        self._post, self._observe, self._counts, self._pending = post, observe, counts, pending

    def __call__(self, event: up.UplinkEvent) -> None:
        if isinstance(event, up.UplinkConnected):
            self._post(ev.UplinkConnected())
            self._observe({"kind": "uplink", "status": "connected"})
        elif isinstance(event, up.UplinkLost):
            self._post(ev.UplinkLost())
            self._observe({"kind": "uplink", "status": "lost"})
        elif isinstance(event, up.CaptureStored):
            self._counts["stored"] += 1
            self._post(ev.CaptureStored(event.capture_id))
            self._observe(
                {
                    "kind": "capture",
                    "status": "stored",
                    "capture_id": event.capture_id,
                    "ref": event.ref,
                    "pending": self._pending(),
                }
            )
        elif isinstance(event, up.CaptureRejected):
            self._counts["rejected"] += 1
            self._post(ev.CaptureRejected(event.capture_id, event.reason))
            self._observe(
                {"kind": "capture", "status": "rejected", "capture_id": event.capture_id, "reason": event.reason}
            )
        elif isinstance(event, up.CaptureRetryScheduled):
            self._observe(
                {
                    "kind": "capture",
                    "status": "retry",
                    "capture_id": event.capture_id,
                    "why": event.why,
                    "attempt": event.attempt,
                }
            )
        elif isinstance(event, up.CapturesExpired):  # the uplink expires the vault and reports it
            log.warning("expired %d undelivered captures: %s", len(event.capture_ids), ",".join(event.capture_ids))
            self._observe({"kind": "expired", "capture_ids": list(event.capture_ids)})
        elif isinstance(event, up.UplinkMisconfigured):
            log.error("uplink misconfigured: %s", event.reason)
            self._post(FaultReported(event.reason))
        elif isinstance(event, up.CommandReceived):
            self._observe({"kind": "command", "cmd": event.cmd, "id": event.id})
            if event.cmd == "wipe":
                self._post(ev.WipeRequested("remote"))
            elif event.cmd == "identify":
                self._post(Identify())
