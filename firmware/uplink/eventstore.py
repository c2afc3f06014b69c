"""Undelivered audit events on the persistent partition, so a restart does not forget them.

Why it exists: with the relay's default clean MQTT session (``[relay] session_expiry_s
= 0``; Mosquitto 2.0.11 crashes on a reload once a persistent session was away), the
broker keeps nothing for a relay that is not connected. A station stopped meanwhile —
SIGTERM's wipe report, the last events before a power cut — lost its RAM outbox with
the process. The outbox now writes its whole content here after every change
(write-through, not only at stop: a power cut leaves no time to write) and the next
start re-sends what it finds until the relay acknowledges it.

No PHI at rest: an event is written only if every key and value passes the relay's own
reader (``protocol.events.AuditEvent.from_dict``: closed-shape ids, reason codes, counts, stamps)
plus a void's base64 signature; anything else stays in RAM only and the event's name
is logged. Atomic: a temporary file, fsync, rename over ``events.json``, fsync of the
directory. The outbox bounds what is written (count and bytes, oldest given up first,
counted); the count of events given up and not yet reported is kept in the file too.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from clinicam.protocol.events import AuditEvent

log = logging.getLogger(__name__)

FILE = "events.json"
VERSION = 1
_SIG = re.compile(r"[A-Za-z0-9+/]{1,200}={0,2}")


def storable(event: dict[str, Any]) -> bool:
    """True if ``event`` holds only wire-checked values: nothing free-form reaches disk."""
    rest = {k: v for k, v in event.items() if k != "sig"}
    sig = event.get("sig")
    if sig is not None and not (isinstance(sig, str) and _SIG.fullmatch(sig)):
        return False
    return "event_id" in rest and AuditEvent.from_dict(rest).as_dict() == rest


@dataclass(frozen=True)
class Stored:
    """What a previous run left: events oldest first, and drops not yet reported."""

    events: list[dict[str, Any]]
    dropped: int


class EventStore:
    """``events.json`` in ``directory`` (on the appliance ``/var/lib/clinicam/events``)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.path = directory / FILE

    @classmethod
    def open(cls, directory: str) -> EventStore | None:
        """The store in ``directory``, or None (with one warning) where it cannot be kept.

        The directory must exist: the station never creates its parents (the unit's
        ``StateDirectory=`` makes it on the persistent partition).
        """
        if not directory:
            log.warning("events: [events] dir is empty; undelivered audit events live in RAM only "
                        "and a stop while no relay is connected loses them")
            return None
        path = Path(directory)
        if not path.is_dir() or not os.access(path, os.W_OK | os.X_OK):
            log.warning("events: %s is not a writable directory; undelivered audit events live in RAM "
                        "only: create it (the unit's StateDirectory= does) or set [events] dir", path)
            return None
        return cls(path)

    def load(self) -> Stored:
        """What the last run left; an unreadable file is reported and treated as empty."""
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return Stored([], 0)
        except OSError as exc:
            log.warning("events: %s cannot be read (%s); starting with no kept events",
                        self.path, type(exc).__name__)
            return Stored([], 0)
        try:
            doc = json.loads(raw)
            events, dropped = doc["events"], doc["dropped"]
            if doc.get("v") != VERSION or not isinstance(events, list) or not isinstance(dropped, int):
                raise ValueError
        except (ValueError, KeyError, TypeError):
            log.warning("events: %s is not an event store of version %d; starting with no kept events "
                        "(it is replaced at the next event)", self.path, VERSION)
            return Stored([], 0)
        good = [e for e in events if isinstance(e, dict) and storable(e)]
        if len(good) < len(events):
            log.warning("events: %d malformed entr(ies) in %s skipped", len(events) - len(good), self.path)
        return Stored(good, max(0, dropped) + len(events) - len(good))

    def save(self, events: Iterable[dict[str, Any]], dropped: int) -> None:
        """Replace the file atomically with ``events`` (only the storable ones)."""
        kept = []
        for event in events:
            if storable(event):
                kept.append(event)
            else:
                log.warning("events: a %r event has values the wire reader would refuse; "
                            "kept in RAM only", str(event.get("event"))[:32])
        body = json.dumps({"v": VERSION, "dropped": dropped, "events": kept},
                          sort_keys=True, separators=(",", ":")).encode()
        tmp = self.path.with_name(FILE + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            view = memoryview(body)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self.path)
        dirfd = os.open(self.directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dirfd)
        finally:
            os.close(dirfd)
