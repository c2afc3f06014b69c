"""Remote commands on ``P/D/cmd`` and why a stale one must do nothing (DESIGN §5).

A command (:class:`Command`: ``payload()`` for the relay, ``parse()`` for the station) is
``{"cmd": "identify"|"wipe"|"ping"|"update", "id", "issued_at", "expires_at"}``
with RFC 3339 UTC times; ``update`` adds ``url`` (https only), ``sha256`` (the bundle's,
64 lowercase hex), ``version`` (the bundle's manifest version) and, optionally,
``allow_downgrade`` (a JSON boolean): :class:`UpdateOrder`. The station acts only on a
command that is live now, was not delivered as a retained message and was not seen
before: a ``wipe`` retained on the broker, or replayed after its expiry, would otherwise
erase fresh captures on the next reconnect, and a replayed ``update`` could take a
station back to a bundle the site has since withdrawn.

Every field is parsed strictly (exact key set, no duplicate keys, each value's grammar):
the station hands an ``update`` on to a root service, so nothing loose may pass.
"""

from __future__ import annotations

import json
import re
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from clinicam.protocol.status import utc_stamp

COMMANDS = frozenset({"identify", "wipe", "ping", "update"})
_ID = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_KEYS = frozenset({"cmd", "id", "issued_at", "expires_at"})
_UPDATE_KEYS = frozenset({"url", "sha256", "version"})  # plus the optional "allow_downgrade"
# https only; a host name or IPv6 literal, an optional port, a path and query without
# spaces, quotes, credentials (no "@" before the host) or a fragment. Bundle URLs need no more.
_URL_CHARS = r"A-Za-z0-9._~%/:@+=,&-"
UPDATE_URL = re.compile(rf"https://(?:[A-Za-z0-9](?:[A-Za-z0-9.-]{{0,252}})|\[[0-9A-Fa-f:.]{{2,45}}\])"
                        rf"(?::[0-9]{{1,5}})?(?:/[{_URL_CHARS}]*)?(?:\?[{_URL_CHARS}?]*)?")
MAX_URL = 1024
SHA256_HEX = re.compile(r"[0-9a-f]{64}")
# A bundle version that is also a status "fw" and an argument that never looks like an option.
VERSION = re.compile(r"[A-Za-z0-9][A-Za-z0-9.+-]{0,39}")
MAX_LIFETIME_S = 3600.0  # the longest command a station accepts; relays issue shorter ones


class CommandRefused(Exception):
    """The command must be ignored; ``why`` says which rule refused it (no payload)."""

    def __init__(self, why: str) -> None:
        self.why = why
        super().__init__(f"command ignored: {why}")


@dataclass(frozen=True)
class UpdateOrder:
    """What an ``update`` command asks for: fetch ``url``, check ``sha256``, install ``version``.

    The station does not install anything itself: it hands these four values to a root
    service (``update-request``), which checks them again and runs ``update-fetch``.
    """

    url: str
    sha256: str
    version: str
    allow_downgrade: bool = False

    def fields(self) -> dict[str, object]:
        return {"url": self.url, "sha256": self.sha256, "version": self.version,
                "allow_downgrade": self.allow_downgrade}

    @classmethod
    def from_fields(cls, obj: dict[str, Any]) -> UpdateOrder:
        """Check each value's grammar; ``CommandRefused('malformed')`` names no value."""
        url, digest, version = obj["url"], obj["sha256"], obj["version"]
        allow = obj.get("allow_downgrade", False)
        if not (isinstance(url, str) and len(url) <= MAX_URL and UPDATE_URL.fullmatch(url)
                and isinstance(digest, str) and SHA256_HEX.fullmatch(digest)
                and isinstance(version, str) and VERSION.fullmatch(version) and isinstance(allow, bool)):
            raise CommandRefused("malformed")
        return cls(url, digest, version, allow)


@dataclass(frozen=True)
class Command:
    """One command; times are epoch seconds. Built by the relay, parsed by the station.

    ``update`` is set exactly when ``cmd`` is ``"update"``.
    """

    cmd: str
    id: str
    issued_at: float
    expires_at: float
    update: UpdateOrder | None = None

    def payload(self) -> bytes:
        """The command as a relay sends it; refuses (``CommandRefused('malformed')``) what
        :meth:`parse` would refuse, so the two cannot drift."""
        body: dict[str, object] = {"cmd": self.cmd, "id": self.id, "issued_at": utc_stamp(self.issued_at),
                                   "expires_at": utc_stamp(self.expires_at)}
        if self.update is not None:
            body.update(self.update.fields())
        payload = json.dumps(body).encode()
        Command.parse(payload)
        return payload

    @classmethod
    def parse(cls, payload: bytes) -> Command:
        """Strictly parse a command message; raise ``CommandRefused('malformed')``."""
        try:
            obj = json.loads(payload, object_pairs_hook=_no_duplicates)
        except (ValueError, UnicodeDecodeError) as exc:
            raise CommandRefused("malformed") from exc
        if not isinstance(obj, dict) or not _KEYS.issubset(obj):
            raise CommandRefused("malformed")
        cmd, cid = obj["cmd"], obj["id"]
        if cmd not in COMMANDS or not isinstance(cid, str) or not _ID.fullmatch(cid):
            raise CommandRefused("malformed")
        extra = set(obj) - _KEYS
        update = None
        if cmd == "update":
            if not (_UPDATE_KEYS <= extra <= _UPDATE_KEYS | {"allow_downgrade"}):
                raise CommandRefused("malformed")
            update = UpdateOrder.from_fields(obj)
        elif extra:
            raise CommandRefused("malformed")
        return cls(cmd, cid, parse_time(obj["issued_at"]), parse_time(obj["expires_at"]), update)


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object hook: a key given twice is malformed (which one would count?)."""
    obj = dict(pairs)
    if len(obj) != len(pairs):
        raise ValueError("duplicate key")
    return obj


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
