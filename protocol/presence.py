"""Relay presence (DESIGN §5): who serves which stations, on the wire, in one place.

Each relay process publishes a retained message on ``P/relay/<relay id>/status`` (its
certificate's name, ``relay-<n>``) and leaves a will that says ``lost``:

    {"state": "online" | "standby" | "offline" | "lost" | "yielded", "worker": k, "workers": N,
     "shares": [k, ...], "instance": <32 hex>, "since": <RFC 3339>}

``offline`` is a clean stop, ``lost`` the will (crash, network, or pushed off the
broker by a second process with the same identity), ``yielded`` a process that gave
its identity up to such a twin. Only ``online`` serves stations.
``shares`` are the buckets of ``device_bucket`` the process serves (its own worker plus
any ``standby_for``); ``instance`` is random per process start, so a relay can tell its
own message from another process's; ``since`` orders two claims on one share. Stations
read every relay's presence and know whether one is online for their own bucket; relays
read them to stand by while another process serves their share. Nothing here carries
PHI: ids, numbers and a time.

The stable bucket of a device lives here too, because both sides compute it.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field

from clinicam.protocol.topics import check_prefix

RELAY_ID = re.compile(r"relay[a-z0-9-]{0,59}")
INSTANCE = re.compile(r"[0-9a-f]{32}")
STATES = ("online", "standby", "offline", "lost", "yielded")


def device_bucket(device: str, workers: int) -> int:
    """The share (0..workers-1) a device belongs to, stable across processes and versions.

    SHA-256 of the id, never the built-in ``hash()`` (randomised per process).
    """
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    digest = hashlib.sha256(device.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % workers


def presence_topic(prefix: str, relay_id: str) -> str:
    """``P/relay/<relay id>/status``"""
    if not RELAY_ID.fullmatch(relay_id):
        raise ValueError(f"a relay id starts with 'relay' (its certificate's name), got {relay_id!r}")
    return f"{check_prefix(prefix)}/relay/{relay_id}/status"


def presence_filter(prefix: str) -> str:
    """The subscription that sees every relay's presence."""
    return f"{check_prefix(prefix)}/relay/+/status"


def relay_of(prefix: str, topic: str) -> str | None:
    """The relay id of a presence topic, None for any other topic."""
    head, tail = f"{prefix}/relay/", "/status"
    if not (topic.startswith(head) and topic.endswith(tail)):
        return None
    rid = topic[len(head):-len(tail)]
    return rid if RELAY_ID.fullmatch(rid) else None


@dataclass(frozen=True)
class Presence:
    """One relay process's claim, as published (or its will)."""

    state: str
    instance: str
    worker: int = 0
    workers: int = 1
    shares: tuple[int, ...] = ()
    since: str = ""

    def payload(self) -> bytes:
        body = {"state": self.state, "instance": self.instance, "worker": self.worker,
                "workers": self.workers, "shares": list(self.shares), "since": self.since}
        return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()

    def serves(self, device: str) -> bool:
        return self.state == "online" and device_bucket(device, self.workers) in self.shares

    def covers(self, share: int, workers: int) -> bool:
        return self.state == "online" and self.workers == workers and share in self.shares


def parse_presence(payload: bytes) -> Presence | None:
    """A well-formed presence message, else None (an empty retained message clears it)."""
    try:
        obj = json.loads(payload)
        state, instance = obj["state"], obj["instance"]
        worker, workers, shares = obj.get("worker", 0), obj.get("workers", 1), obj.get("shares", [])
        since = obj.get("since", "")
    except (ValueError, UnicodeDecodeError, TypeError, KeyError):
        return None
    ints = [worker, workers, *shares] if isinstance(shares, list) else None
    if (state not in STATES or not isinstance(instance, str) or not INSTANCE.fullmatch(instance)
            or ints is None or any(type(i) is not int or i < 0 for i in ints) or workers < 1
            or any(s >= workers for s in shares) or not isinstance(since, str) or len(since) > 40):
        return None
    return Presence(state, instance, worker, workers, tuple(shares), since)


@dataclass
class PresenceBoard:
    """The latest presence of every relay, as one subscriber sees it."""

    relays: dict[str, Presence] = field(default_factory=dict)

    def update(self, relay_id: str, payload: bytes) -> None:
        """Take one presence message; an unreadable or empty one forgets that relay."""
        parsed = parse_presence(payload)
        if parsed is None:
            self.relays.pop(relay_id, None)
        else:
            self.relays[relay_id] = parsed

    def serves(self, device: str) -> bool:
        """True when some relay is online for ``device``'s share."""
        return any(p.serves(device) for p in self.relays.values())

    def claims(self, share: int, workers: int, *, besides: str) -> dict[str, Presence]:
        """Other processes (instance != ``besides``) online for ``share`` of ``workers``."""
        return {r: p for r, p in self.relays.items() if p.instance != besides and p.covers(share, workers)}
