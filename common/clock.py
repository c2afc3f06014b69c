"""One clock for the whole process: monotonic seconds, wall seconds, and the UTC date.

The names mean one thing everywhere: ``monotonic`` measures intervals (timeouts,
inactivity, back-off) and never dates anything; ``wall`` is seconds since the epoch
(what goes on the wire as an RFC 3339 stamp); ``utc`` is the same instant as an aware
``datetime`` (what a capture's metadata is dated with). Code takes a ``Clock`` (or one
of its bound methods) instead of calling ``time`` itself, so tests drive time exactly.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Protocol


class Clock(Protocol):
    def monotonic(self) -> float: ...
    def wall(self) -> float: ...
    def utc(self) -> datetime: ...


class SystemClock:
    """The process's real clocks."""

    def monotonic(self) -> float:
        return time.monotonic()

    def wall(self) -> float:
        return time.time()

    def utc(self) -> datetime:
        return datetime.now(UTC)


class ManualClock:
    """A clock that moves only when told to (tests, simulations): both times advance together."""

    def __init__(self, wall: float = 1_780_000_000.0, monotonic: float = 0.0) -> None:
        self._wall, self._monotonic = wall, monotonic

    def advance(self, seconds: float) -> None:
        self._wall += seconds
        self._monotonic += seconds

    def monotonic(self) -> float:
        return self._monotonic

    def wall(self) -> float:
        return self._wall

    def utc(self) -> datetime:
        return datetime.fromtimestamp(self._wall, UTC)
