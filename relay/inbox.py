"""The relay's inbox: bounded, and fair across stations (DESIGN §5 "Fairness").

paho's network thread puts every message here and must never block (keepalives and
acks share its socket), and one worker takes them out. A single FIFO let one flooding
station delay every other station's capture by seconds to minutes (issue 13), so:

- each station has its own queue, and the worker serves the stations **round-robin**,
  one message per turn: a station with one capture waits behind at most one message
  of each other station, however many the flooder sent;
- a station's **status is coalesced**: only its latest status waits (a status flood
  costs one slot, not one queue entry per message);
- a station's **events are rate-limited** here, before any parsing (a token bucket per
  station, ``event_rate_per_s``/``event_burst``): the excess is counted per station
  (``take_dropped_events``) and the audit log records the count, never the events;
- a station's **other messages are rate-limited** too (``station_rate_per_s``, 1000 a
  second, with a burst of ``station_messages``): far above what a real station sends
  (a 5 MB photo is 43 messages), and it keeps the worker from spending the process's
  one GIL on a flooder's junk while paho's network thread needs it to keep reading.
  Measured: a flood of parts the relay must reject kept the worker busy beside the
  network thread, which then read slower than the flooder published; the broker's
  queue for the relay filled and the control station's messages waited behind it.
  The excess is dropped here, before a ``Message`` is made, and counted with the
  inbox's other drops;
- the inbox is bounded **per station** (``station_bytes``, ``station_messages``) and
  **in total** (``total_bytes``); every message counts its payload and topic plus a
  fixed overhead, so zero-byte messages are bounded too. A station over its own bound
  loses its *new* messages; when the total is full, the station holding the most loses
  its newest queued message to make room for a station under its share. A dropped part
  leaves its capture incomplete and the station re-sends it after its ack timeout; the
  flooder is the one that waits. Drops are counted per station (``take_dropped``) and
  logged once per sweep by the service.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from clinicam.relay.ratelimit import Buckets

# Python's own cost of one queued message beyond its payload and topic (the tuple,
# two bytes objects, the deque slot), with a margin.
MESSAGE_OVERHEAD = 256


@dataclass(frozen=True)
class Message:
    """One MQTT message as paho delivered it."""

    topic: str
    payload: bytes
    retained: bool = False

    @property
    def cost(self) -> int:
        return len(self.payload) + len(self.topic) + MESSAGE_OVERHEAD


class FairInbox:
    """Per-station queues served round-robin, bounded per station and in total."""

    def __init__(self, prefix: str, *, station_bytes: int = 32 * 1024 * 1024,
                 station_messages: int = 4096, total_bytes: int = 128 * 1024 * 1024,
                 event_rate_per_s: float = 50.0, event_burst: float = 500.0,
                 station_rate_per_s: float = 1000.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.prefix = prefix if prefix.endswith("/") else prefix + "/"
        self.station_bytes, self.station_messages = station_bytes, station_messages
        self.total_bytes = total_bytes
        self._clock = clock
        self._cond = threading.Condition()
        self._queues: dict[str, deque[Message]] = {}
        self._status: dict[str, Message] = {}
        self._bytes: dict[str, int] = {}
        self._ring: deque[str] = deque()  # stations with something waiting, in turn
        self._in_ring: set[str] = set()
        self._total = 0
        self._closed = False
        self._dropped: dict[str, int] = {}
        self._events = Buckets(event_rate_per_s, event_burst, clock)
        self._messages = Buckets(station_rate_per_s, float(station_messages), clock)
        self._dropped_events: dict[str, int] = {}
        self.peak_bytes = 0

    # -- paho's side: never blocks ---------------------------------------------------------
    def put(self, topic: str, payload: bytes, retained: bool = False) -> bool:
        """Queue a message; False if it (or another of its station's) was dropped."""
        device, leaf = self._station(topic)
        with self._cond:
            if leaf == "event":
                if not self._events.take(device):
                    self._dropped_events[device] = self._dropped_events.get(device, 0) + 1
                    return False
            elif leaf != "status" and not self._messages.take(device):
                self._count_drop(device)  # over its message rate: dropped before any work
                return False
            msg = Message(topic, payload, retained)
            if leaf == "status":
                old = self._status.pop(device, None)
                if old is not None:
                    self._charge(device, -old.cost)
            elif not self._room_for(device, msg.cost):
                self._count_drop(device)
                return False
            self._add(device, msg, leaf == "status")
            self._cond.notify()
            return True

    def _room_for(self, device: str, cost: int) -> bool:
        if (self._bytes.get(device, 0) + cost > self.station_bytes
                or len(self._queues.get(device, ())) >= self.station_messages):
            return False
        while self._total + cost > self.total_bytes:
            hog = max(self._bytes, key=self._bytes.__getitem__, default=None)
            if hog is None or hog == device or not self._queues.get(hog):
                return False
            evicted = self._queues[hog].pop()  # its newest: the flooder waits
            self._charge(hog, -evicted.cost)
            self._count_drop(hog)
        return True

    def _add(self, device: str, msg: Message, status: bool) -> None:
        if device not in self._in_ring:
            self._ring.append(device)
            self._in_ring.add(device)
        if status:
            self._status[device] = msg
        else:
            self._queues.setdefault(device, deque()).append(msg)
        self._charge(device, msg.cost)
        self.peak_bytes = max(self.peak_bytes, self._total)

    def _charge(self, device: str, delta: int) -> None:
        self._total += delta
        left = self._bytes.get(device, 0) + delta
        if left > 0:
            self._bytes[device] = left
        else:
            self._bytes.pop(device, None)

    def _count_drop(self, device: str) -> None:
        self._dropped[device] = self._dropped.get(device, 0) + 1

    # -- the worker's side -------------------------------------------------------------------
    def get(self, timeout: float | None = None) -> Message | None:
        """The next message in turn; None on timeout or once closed."""
        deadline = None if timeout is None else self._clock() + timeout
        with self._cond:
            while not self._ring and not self._closed:
                remaining = None if deadline is None else deadline - self._clock()
                if remaining is not None and remaining <= 0:
                    return None
                self._cond.wait(remaining)
            if self._closed:
                return None
            device = self._ring.popleft()
            msg = self._status.pop(device, None)
            if msg is None:
                msg = self._queues[device].popleft()
            self._charge(device, -msg.cost)
            if self._queues.get(device):
                self._ring.append(device)
            else:
                self._in_ring.discard(device)
                self._queues.pop(device, None)
            return msg

    def close(self) -> None:
        """Wake the worker and make ``get`` return None from now on."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def take_dropped(self) -> dict[str, int]:
        """Messages dropped per station since the last call."""
        with self._cond:
            dropped, self._dropped = self._dropped, {}
            return dropped

    def take_dropped_events(self) -> dict[str, int]:
        """Events over their station's rate, per station, since the last call."""
        with self._cond:
            dropped, self._dropped_events = self._dropped_events, {}
            return dropped

    @property
    def nbytes(self) -> int:
        """What the inbox holds now, overheads included (what the bounds count)."""
        return self._total

    def __len__(self) -> int:
        with self._cond:
            return sum(len(q) for q in self._queues.values()) + len(self._status)

    def _station(self, topic: str) -> tuple[str, str]:
        """(device, leaf) of a topic under the prefix; ("", "") for anything else."""
        if not topic.startswith(self.prefix):
            return "", ""
        parts = topic[len(self.prefix):].split("/")
        return parts[0], parts[1] if len(parts) == 2 else ""
