"""Token buckets per station: how the relay says "this much, and no more" per sender.

Used for a station's events (``inbox``), audit lines (``audit``), acknowledgements
(``service``) and log lines about its rejected messages (``core``): a flooding station
exhausts its own bucket and nobody else's. Keys are device ids, which the broker ties
to certificates, so a flooder cannot mint new buckets.
"""

from __future__ import annotations

import time
from collections.abc import Callable


class Buckets:
    """``rate`` tokens per second per key, at most ``burst`` saved up; starts full."""

    def __init__(self, rate: float, burst: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate, self.burst, self._clock = rate, burst, clock
        self._state: dict[str, tuple[float, float]] = {}  # key -> (tokens, at)

    def take(self, key: str) -> bool:
        """Spend one token of ``key``; False (and nothing spent) when it has none."""
        now = self._clock()
        tokens, at = self._state.get(key, (self.burst, now))
        tokens = min(self.burst, tokens + (now - at) * self.rate)
        ok = tokens >= 1.0
        self._state[key] = (tokens - 1.0 if ok else tokens, now)
        return ok
