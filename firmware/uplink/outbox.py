"""The station's audit events, kept until the relay has logged them (DESIGN §5).

The relay's MQTT session is clean by default, so the broker keeps nothing for a relay
that is away: the outbox re-sends each event until the relay acknowledges its
``event_id``. With an ``EventStore`` (the persistent partition) it also outlives the
process: every change is written through, and a new start re-sends what the last one
left. Events carry ids, counts, reason codes and capture ids — never PHI — and the
outbox is bounded by count and bytes: past either the oldest is given up (counted,
logged, and the count kept for an ``events-dropped`` report). Only the uplink's
delivery thread touches it; time comes from the injected clock.
"""

from __future__ import annotations

import json
import logging
import random
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from clinicam.firmware.uplink.eventstore import EventStore
from clinicam.protocol.event_acks import new_event_id

log = logging.getLogger(__name__)

NEVER = float("-inf")  # "last sent": an event restored from the store is due at once


def _size(body: dict[str, Any]) -> int:
    return len(json.dumps(body, sort_keys=True, separators=(",", ":")))


class EventOutbox:
    """Unacknowledged events by ``event_id``, each with the time it was last sent."""

    def __init__(self, *, max_events: int = 256, max_bytes: int = 256 * 1024, resend_s: float = 30.0,
                 clock: Callable[[], float] = time.monotonic,
                 rng: random.Random | None = None, store: EventStore | None = None) -> None:
        self.max_events, self.max_bytes, self.resend_s = max_events, max_bytes, resend_s
        self._clock, self._rng, self.store = clock, rng, store
        self._events: OrderedDict[str, tuple[dict[str, Any], float]] = OrderedDict()
        self._bytes = 0
        self.dropped = 0  # given up in this run
        self.unreported = 0  # given up (this run or an earlier one) and not yet reported
        self._dirty = False
        self._save_failed: str | None = None
        if store is not None:
            self._restore(store)

    def __len__(self) -> int:
        return len(self._events)

    def new_id(self) -> str:
        return new_event_id(self._rng)

    def keep(self, body: dict[str, Any]) -> dict[str, Any]:
        """Remember an event (it must carry ``event_id``) as sent now; returns it."""
        self._put(body, self._clock())
        return body

    def acked(self, event_id: str) -> bool:
        """The relay logged it: forget it. False if it was not (or no longer) kept."""
        kept = self._events.pop(event_id, None)
        if kept is None:
            return False
        self._bytes -= _size(kept[0])
        self._dirty = True
        return True

    def reported(self) -> int:
        """The drops not yet reported, now being reported: returns and clears the count."""
        count, self.unreported = self.unreported, 0
        self._dirty = self._dirty or count > 0
        return count

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

    def persist(self) -> None:
        """Write the outbox through to the store if it changed (delivery thread, after each job).

        A failed write (a full or read-only partition) is logged once per kind of failure
        and retried at the next change; the events stay in RAM meanwhile.
        """
        if self.store is None or not self._dirty:
            return
        try:
            self.store.save((body for body, _ in self._events.values()), self.unreported)
        except OSError as exc:
            if self._save_failed != type(exc).__name__:
                self._save_failed = type(exc).__name__
                log.error("events: cannot write %s (%s); undelivered events are kept in RAM only "
                          "until it can be written", self.store.path, self._save_failed)
            return
        if self._save_failed is not None:
            log.info("events: %s is written again", self.store.path)
        self._dirty, self._save_failed = False, None

    def _put(self, body: dict[str, Any], sent: float) -> None:
        old = self._events.pop(body["event_id"], None)
        if old is not None:
            self._bytes -= _size(old[0])
        self._events[body["event_id"]] = (body, sent)
        self._bytes += _size(body)
        self._dirty = True
        while len(self._events) > self.max_events or (self._bytes > self.max_bytes and len(self._events) > 1):
            _, (gone, _) = self._events.popitem(last=False)
            self._bytes -= _size(gone)
            self.dropped += 1
            self.unreported += 1
            log.warning("events: outbox full (%d events, %d bytes at most); the oldest unacknowledged "
                        "event is given up", self.max_events, self.max_bytes)

    def _restore(self, store: EventStore) -> None:
        stored = store.load()
        self.unreported = stored.dropped
        for body in stored.events:
            self._put(body, NEVER)
        self._dirty = self.dropped > 0  # a smaller bound than the last run's: write what is kept
        if stored.events or stored.dropped:
            log.info("events: %d undelivered event(s) from the last run will be sent (%d given up before)",
                     len(stored.events), stored.dropped)
