"""One command to many stations over one connection (``clinicam relay cmd … update``).

The broker makes the certificate's CN the MQTT client id, so two connections with one
operator identity take each other's session over: a rollout to 200 stations cannot
open one connection per station in parallel. Instead one connection subscribes to
``P/+/event`` and ``P/+/status`` (what the operator ACL lets it read) and keeps at most
``concurrency`` commands awaiting their answer; each command is stamped when it is
published, so a long rollout never sends stale ones, and a station that stays silent
for ``timeout_s`` is an :class:`Outcome` without an event, not an error. An answer
counts only on its own station's event topic. Which stations: ``clinicam.relay.rollout``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from clinicam.protocol.commands import MAX_LIFETIME_S, Command, UpdateOrder
from clinicam.relay.remote import Remote, Sent, _Session, new_command_id


@dataclass(frozen=True)
class Outcome:
    """One station: what was sent, its answer (``None``: silent in time) and, for a silent
    one, the ``state`` of its last status (``None``: no status of it known)."""

    sent: Sent
    event: dict[str, Any] | None
    last_state: str | None = None


def send_commands(remote: Remote, stations: Sequence[str], cmd: str, *, update: UpdateOrder | None = None,
                  ttl_s: float = 300.0, timeout_s: float = 30.0, concurrency: int = 10,
                  wall: Callable[[], float] = time.time, monotonic: Callable[[], float] = time.monotonic,
                  new_id: Callable[[], str] = new_command_id) -> list[Outcome]:
    """Send ``cmd`` to each of ``stations``; one :class:`Outcome` per station, in order.

    Raises ``TopicError`` for a bad station id (before anything is sent) and, like
    ``send_command``, ``BrokerUnreachable``/``BrokerRefused`` when the broker cannot be used.
    """
    if not 0 < ttl_s <= MAX_LIFETIME_S:
        raise ValueError(f"ttl must be above 0 and at most {MAX_LIFETIME_S:g} s (stations refuse longer)")
    if concurrency < 1:
        raise ValueError("concurrency must be at least 1")
    for station in stations:
        remote.topics.cmd(station)
    session = _Fanout(remote, monotonic)
    waiting: dict[str, tuple[Sent, float]] = {}  # command id -> (sent, deadline)
    done: dict[str, Outcome] = {}
    todo = list(stations)
    try:
        session.connect()
        prefix = remote.topics.prefix
        session.subscribe([f"{prefix}/+/event", f"{prefix}/+/status"])
        while todo or waiting:
            while todo and len(waiting) < concurrency:
                now = wall()
                sent = Sent(todo.pop(0), cmd, new_id(), now, now + ttl_s)
                command = Command(cmd, sent.id, sent.issued_at, sent.expires_at, update)
                session.publish(remote.topics.cmd(sent.station), command.payload(), sent)
                waiting[sent.id] = (sent, monotonic() + timeout_s)
            session.pump()
            for sent, event in session.answers(waiting):
                del waiting[sent.id]
                done[sent.station] = Outcome(sent, event)
            for cmd_id, (sent, deadline) in list(waiting.items()):
                if monotonic() >= deadline:
                    del waiting[cmd_id]
                    done[sent.station] = Outcome(sent, None, session.last_state(sent.station))
    finally:
        session.close()
    return [done[station] for station in stations]


class _Fanout(_Session):
    """``remote``'s connection, read for many stations' answers and statuses at once."""

    def __init__(self, remote: Remote, monotonic: Callable[[], float]) -> None:
        super().__init__(remote, monotonic)
        self.states: dict[str, str] = {}

    def pump(self) -> None:
        """Run the network loop once (up to 0.1 s); a lost connection is an error."""
        if self.lost is not None:
            raise self._lost_error(None)
        self.client.loop(timeout=0.1)

    def answers(self, waiting: dict[str, tuple[Sent, float]]) -> list[tuple[Sent, dict[str, Any]]]:
        """Events that answer a waiting command on its own station's topic, each taken once;
        statuses update :meth:`last_state`. Messages are consumed."""
        found: dict[str, tuple[Sent, dict[str, Any]]] = {}
        for msg in self.messages:
            head, _, kind = msg.topic.rpartition("/")
            station = head.rpartition("/")[2]
            body = _object(msg.payload)
            if kind == "status" and body is not None and isinstance(body.get("state"), str):
                self.states[station] = body["state"]
            elif kind == "event" and body is not None and body.get("cmd_id") in waiting:
                sent = waiting[body["cmd_id"]][0]
                if sent.station == station and sent.id not in found:
                    found[sent.id] = (sent, body)
        self.messages.clear()
        return list(found.values())

    def last_state(self, station: str) -> str | None:
        return self.states.get(station)


def _object(payload: bytes | bytearray) -> dict[str, Any] | None:
    try:
        obj = json.loads(payload)
    except (ValueError, UnicodeDecodeError):
        return None
    return obj if isinstance(obj, dict) else None
