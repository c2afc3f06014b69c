"""Remote commands on ``P/D/cmd`` and why a stale one must do nothing (DESIGN §5).

A command (:class:`Command`: ``payload()`` for the relay, ``parse()`` for the station) is
``{"cmd": "identify"|"wipe"|"ping", "id", "issued_at", "expires_at"}``
with RFC 3339 UTC times. The station acts only on a command that is live now, was not
delivered as a retained message and was not seen before: a ``wipe`` retained on the
broker, or replayed after its expiry, would otherwise erase fresh captures on the
next reconnect.
"""

from __future__ import annotations

import json
import re
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime

from clinicam.protocol.fields import utc_stamp

COMMANDS = frozenset({"identify", "wipe", "ping"})
_ID = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_KEYS = frozenset({"cmd", "id", "issued_at", "expires_at"})
MAX_LIFETIME_S = 3600.0  # the longest command a station accepts; relays issue shorter ones


class CommandRefused(Exception):
    """The command must be ignored; ``why`` says which rule refused it (no payload)."""

    def __init__(self, why: str) -> None:
        self.why = why
        super().__init__(f"command ignored: {why}")


@dataclass(frozen=True)
class Command:
    """One command; times are epoch seconds. Built by the relay, parsed by the station."""

    cmd: str
    id: str
    issued_at: float
    expires_at: float

    def payload(self) -> bytes:
        """The command as a relay sends it; refuses (``CommandRefused('malformed')``) what
        :meth:`parse` would refuse, so the two cannot drift."""
        payload = json.dumps({"cmd": self.cmd, "id": self.id, "issued_at": utc_stamp(self.issued_at),
                              "expires_at": utc_stamp(self.expires_at)}).encode()
        Command.parse(payload)
        return payload

    @classmethod
    def parse(cls, payload: bytes) -> Command:
        """Strictly parse a command message; raise ``CommandRefused('malformed')``."""
        try:
            obj = json.loads(payload)
        except (ValueError, UnicodeDecodeError) as exc:
            raise CommandRefused("malformed") from exc
        if not isinstance(obj, dict) or set(obj) != _KEYS:
            raise CommandRefused("malformed")
        cmd, cid = obj["cmd"], obj["id"]
        if cmd not in COMMANDS or not isinstance(cid, str) or not _ID.fullmatch(cid):
            raise CommandRefused("malformed")
        return cls(cmd, cid, parse_time(obj["issued_at"]), parse_time(obj["expires_at"]))


def parse_time(value: object) -> float:
    """Seconds since the epoch of an RFC 3339 time that names its offset."""
    if not isinstance(value, str):
        raise CommandRefused("malformed")
    try:
        dt = datetime.fromisoformat(value)
    except ValueError as exc:
        raise CommandRefused("malformed") from exc
    if dt.tzinfo is None:
        raise CommandRefused("malformed")
    return dt.timestamp()


class CommandGate:
    """Decides whether a received command is acted on: live, not retained, not a repeat.

    ``skew_s`` tolerates a relay clock slightly ahead of ours; ``max_lifetime_s``
    refuses a command valid for so long that a replay would still be live.
    """

    def __init__(self, *, skew_s: float = 120.0, max_lifetime_s: float = MAX_LIFETIME_S,
                 remember: int = 256) -> None:
        self.skew_s = skew_s
        self.max_lifetime_s = max_lifetime_s
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._remember = remember

    def admit(self, payload: bytes, *, retained: bool, now: float) -> Command:
        """Return the command to run, or raise ``CommandRefused`` with the rule."""
        if retained:
            raise CommandRefused("retained")
        command = Command.parse(payload)
        if command.expires_at <= now:
            raise CommandRefused("expired")
        if command.issued_at > now + self.skew_s:
            raise CommandRefused("not-yet-valid")
        if command.expires_at - command.issued_at > self.max_lifetime_s:
            raise CommandRefused("lifetime")
        if command.id in self._seen:
            raise CommandRefused("repeated")
        self._seen[command.id] = None
        while len(self._seen) > self._remember:
            self._seen.popitem(last=False)
        return command
