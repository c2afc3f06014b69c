"""The station's audit events, kept in RAM until the relay has logged them (DESIGN §5).

The relay also keeps a persistent broker session, but the broker forgets it when it
restarts and drops messages past its queue bounds; the outbox covers both while the
station runs. Events carry ids, counts, reason codes and capture ids — never PHI — and
the outbox is bounded: at ``max_events`` the oldest is given up (counted, logged).
Only the uplink's delivery thread touches it; time comes from the injected clock.
"""

from __future__ import annotations

import logging
import random
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from clinicam.protocol.event_acks import new_event_id

log = logging.getLogger(__name__)


class EventOutbox:
    """Unacknowledged events by ``event_id``, each with the time it was last sent."""

    def __init__(self, *, max_events: int = 256, resend_s: float = 30.0,
                 clock: Callable[[], float] = time.monotonic,
                 rng: random.Random | None = None) -> None:
        self.max_events, self.resend_s = max_events, resend_s
        self._clock, self._rng = clock, rng
        self._events: OrderedDict[str, tuple[dict[str, Any], float]] = OrderedDict()
        self.dropped = 0

    def __len__(self) -> int:
        return len(self._events)

    def new_id(self) -> str:
        return new_event_id(self._rng)

    def keep(self, body: dict[str, Any]) -> dict[str, Any]:
        """Remember an event (it must carry ``event_id``) as sent now; returns it."""
        self._events[body["event_id"]] = (body, self._clock())
        while len(self._events) > self.max_events:
            self._events.popitem(last=False)
            self.dropped += 1
            log.warning("events: outbox full (%d); the oldest unacknowledged event is given up",
                        self.max_events)
        return body

    def acked(self, event_id: str) -> bool:
        """The relay logged it: forget it. False if it was not (or no longer) kept."""
        return self._events.pop(event_id, None) is not None

    def due(self, *, everything: bool = False) -> list[dict[str, Any]]:
        """Events to send again (all of them after a reconnect), oldest first; marked sent."""
        now = self._clock()
        out = [body for body, sent in self._events.values()
               if everything or now - sent >= self.resend_s]
        for body in out:
            self._events[body["event_id"]] = (body, now)
        return out

    def next_due_in(self) -> float | None:
        """Seconds until the next re-send, None when nothing is kept."""
        if not self._events:
            return None
        oldest = min(sent for _, sent in self._events.values())
        return max(0.0, oldest + self.resend_s - self._clock())
