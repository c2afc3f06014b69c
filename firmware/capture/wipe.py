"""The one wipe path (DESIGN §3.4): every trigger ends here.

``Wiper.wipe`` zeroes the vault and every plaintext buffer of a capture in progress,
under the vault's lock, and returns what was undelivered. It is the one thing in the
station that does not wait in the event queue: battery-critical, tamper, the remote
command and the signals call it directly, from any thread. Its time is bounded by a
``memset`` of what is held (measured in ``bench/bench_sealing.py``).

Signals: Python runs a signal handler in the *main thread, between two bytecodes* —
not asynchronously in C. So a handler may start while the main thread is in the middle
of anything, including a vault method (hence the vault's re-entrant lock), and it
delays nothing but the main thread. The handlers here therefore do only the bounded
wipe: SIGINT and SIGPWR wipe at once and exit; SIGTERM (update, reboot) hands off to a
``clinicam-stop`` thread that runs the station's drain hook (deliver pending captures
for up to ``drain_timeout_s`` while refusing new ones), then wipes and exits. A second
SIGTERM during the drain wipes at once.

The exit after a signal wipe is ``os._exit``: a stuck camera or network thread must not
hold the process past the bound, and nothing needs flushing to disk — there is no disk
state. Standard streams are flushed first so the report reaches the journal.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from types import FrameType
from typing import Any

from clinicam.common.zeroize import zero
from clinicam.firmware.capture.vault import Vault, WipeReport

log = logging.getLogger(__name__)


@dataclass
class Guard:
    """A plaintext buffer registered while a capture is being taken and sealed.

    ``wiped`` turns true if a wipe zeroed it meanwhile: the caller must then drop the
    capture (it was wiped, and a capture sealed from a half-zeroed buffer is garbage).
    """

    buffer: Any
    wiped: bool = False


class Wiper:
    """Zeroes the vault and registered in-progress buffers; callable from any context."""

    def __init__(self, vault: Vault) -> None:
        self.vault = vault
        self._guards: dict[int, Guard] = {}
        self._listeners: list[Callable[[WipeReport], None]] = []
        self.count = 0

    @contextlib.contextmanager
    def guard(self, buffer: Any) -> Iterator[Guard]:
        """Register ``buffer`` (a ``bytearray``/``mmap`` of plaintext) for the block."""
        g = Guard(buffer)
        with self.vault.lock:
            self._guards[id(g)] = g
        try:
            yield g
        finally:
            with self.vault.lock:
                self._guards.pop(id(g), None)

    def add_listener(self, listener: Callable[[WipeReport], None]) -> None:
        """Called after each wipe, outside the lock (e.g. the uplink's wipe event)."""
        self._listeners.append(listener)

    def wipe(self, trigger: str) -> WipeReport:
        """Zero everything now; returns the undelivered ids and counts. Never raises."""
        with self.vault.lock:
            guards = list(self._guards.values())
            for g in guards:
                with contextlib.suppress(TypeError, ValueError):  # released buffer
                    zero(g.buffer)
                g.wiped = True
            report = replace(self.vault.wipe(), in_progress=len(guards), trigger=trigger)
            self.count += 1
        for listener in list(self._listeners):
            try:
                listener(report)
            except Exception:  # a broken listener must not undo or block a wipe
                log.exception("wipe listener failed")
        return report


def report_line(report: WipeReport) -> str:
    """One line without PHI: trigger, counts, bytes and the undelivered capture ids."""
    ids = ",".join(report.capture_ids) or "-"
    return (f"wiped trigger={report.trigger} count={report.count} bytes={report.bytes} "
            f"in_progress={report.in_progress} undelivered={ids}")


def _announce(report: WipeReport) -> None:
    log.warning("%s", report_line(report))


class SignalWipe:
    """Installs the wipe on SIGINT, SIGPWR and SIGTERM; ``restore()`` puts back the old ones."""

    def __init__(
        self,
        wiper: Wiper,
        *,
        drain: Callable[[], None] | None = None,
        drain_timeout_s: float = 10.0,
        announce: Callable[[WipeReport], None] = _announce,
        exit: Callable[[int], Any] = os._exit,
    ) -> None:
        self.wiper = wiper
        self.drain = drain
        self.drain_timeout_s = drain_timeout_s
        self._announce = announce
        self._exit = exit
        self._stopping = threading.Event()
        self._previous: dict[int, Any] = {}

    def install(self) -> SignalWipe:
        """Install the handlers (main thread only, as Python requires)."""
        for sig, handler in self._handlers().items():
            self._previous[sig] = signal.signal(sig, handler)
        return self

    def restore(self) -> None:
        """Put back the handlers that were there before ``install``."""
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def _handlers(self) -> dict[int, Callable[[int, FrameType | None], None]]:
        handlers: dict[int, Callable[[int, FrameType | None], None]] = {
            signal.SIGINT: self._now, signal.SIGTERM: self._term}
        if hasattr(signal, "SIGPWR"):
            handlers[signal.SIGPWR] = self._now
        return handlers

    def _now(self, signum: int, _frame: FrameType | None) -> None:
        self.finish(signal.Signals(signum).name.lower())

    def _term(self, signum: int, frame: FrameType | None) -> None:
        if self._stopping.is_set() or self.drain is None:
            self._now(signum, frame)  # no drain, or a second SIGTERM: wipe at once
            return
        self._stopping.set()
        threading.Thread(target=self._drain_then_finish, name="clinicam-stop",
                         daemon=True).start()

    def _drain_then_finish(self) -> None:
        assert self.drain is not None
        worker = threading.Thread(target=self._run_drain, name="clinicam-drain", daemon=True)
        worker.start()
        worker.join(self.drain_timeout_s)
        self.finish("sigterm")

    def _run_drain(self) -> None:
        try:
            assert self.drain is not None
            self.drain()
        except Exception:
            log.exception("drain hook failed; wiping what is left")

    def finish(self, trigger: str) -> None:
        """Wipe, announce, flush the standard streams and exit 0."""
        report = self.wiper.wipe(trigger)
        with contextlib.suppress(Exception):
            self._announce(report)
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        self._exit(0)


def install_signal_handlers(wiper: Wiper, *, drain: Callable[[], None] | None = None,
                            drain_timeout_s: float = 10.0) -> SignalWipe:
    """SIGINT/SIGPWR wipe now, SIGTERM drains (``stop_drain_s``) then wipes; main thread only."""
    return SignalWipe(wiper, drain=drain, drain_timeout_s=drain_timeout_s).install()
