"""The one wipe path: vault and in-progress buffers, listeners, signal handlers."""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator

import pytest
from clinicam.common.zeroize import is_zero
from clinicam.firmware.capture.vault import Vault, WipeReport
from clinicam.firmware.capture.wipe import SignalWipe, Wiper, report_line
from clinicam.protocol.sealing import SealedCapture


def capture(n: int) -> SealedCapture:
    parts = [bytearray(b"\x11" * 100), bytearray(b"\x22" * 300)]
    return SealedCapture(f"{n:032x}", b"{}", parts, 400)


@pytest.fixture
def wiper() -> Wiper:
    vault = Vault(clock=lambda: 0.0)
    for n in range(3):
        vault.put(capture(n))
    return Wiper(vault)


def test_wipe_zeroes_vault_and_guarded_plaintext(wiper: Wiper) -> None:
    plain = bytearray(b"\xff" * 4096)
    held = [c for c in (wiper.vault.take_next(),) if c is not None]
    with wiper.guard(plain) as g:
        assert not is_zero(plain) and not g.wiped  # positive control
        report = wiper.wipe("command")
        assert g.wiped
    assert is_zero(plain) and all(is_zero(p) for p in held[0].parts)
    assert report.count == 3 and report.in_progress == 1 and report.trigger == "command"
    assert report.bytes == 3 * 402
    assert wiper.vault.pending_count == 0 and wiper.count == 1


def test_guard_unregisters_on_exit(wiper: Wiper) -> None:
    plain = bytearray(b"\xff" * 10)
    with wiper.guard(plain) as g:
        pass
    report = wiper.wipe("tamper")
    assert not g.wiped and not is_zero(plain) and report.in_progress == 0


def test_listeners_get_the_report_and_cannot_break_the_wipe(wiper: Wiper) -> None:
    seen: list[WipeReport] = []

    def broken(_: WipeReport) -> None:
        raise RuntimeError("listener bug")

    wiper.add_listener(broken)
    wiper.add_listener(seen.append)
    report = wiper.wipe("battery")
    assert seen == [report]


def test_report_line_names_only_counts_and_ids() -> None:
    r = WipeReport(("a" * 32, "b" * 32), 2, 800, 1, "sigterm")
    assert report_line(r) == (f"wiped trigger=sigterm count=2 bytes=800 in_progress=1 "
                              f"undelivered={'a' * 32},{'b' * 32}")
    assert report_line(WipeReport((), 0, 0)).endswith("undelivered=-")


def test_wipe_from_another_thread_while_lock_is_held_waits_then_runs(wiper: Wiper) -> None:
    result: list[WipeReport] = []
    with wiper.vault.lock:
        t = threading.Thread(target=lambda: result.append(wiper.wipe("tamper")))
        t.start()
        t.join(0.05)
        assert result == []  # it waits for the lock …
    t.join()
    assert result[0].count == 3  # … and then wipes


def test_wipe_reenters_the_lock_from_the_same_thread(wiper: Wiper) -> None:
    # What a signal handler does when the main thread is inside a vault method.
    with wiper.vault.lock:
        assert wiper.wipe("sigint").count == 3


@pytest.fixture
def exits() -> Iterator[list[int]]:
    codes: list[int] = []
    yield codes


def test_sigint_wipes_and_exits(wiper: Wiper, exits: list[int]) -> None:
    reports: list[WipeReport] = []
    handlers = SignalWipe(wiper, announce=reports.append, exit=exits.append).install()
    try:
        signal.raise_signal(signal.SIGINT)
    finally:
        handlers.restore()
    assert exits == [0] and reports[0].trigger == "sigint" and reports[0].count == 3
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_sigpwr_wipes(wiper: Wiper, exits: list[int]) -> None:
    reports: list[WipeReport] = []
    handlers = SignalWipe(wiper, announce=reports.append, exit=exits.append).install()
    try:
        os.kill(os.getpid(), signal.SIGPWR)
    finally:
        handlers.restore()
    assert reports[0].trigger == "sigpwr" and exits == [0]


def test_sigterm_drains_then_wipes(wiper: Wiper) -> None:
    finished = threading.Event()
    order: list[str] = []

    def drain() -> None:
        c = wiper.vault.take_next()
        assert c is not None
        wiper.vault.ack(c.capture_id)
        order.append("drained")

    def announce(r: WipeReport) -> None:
        order.append(f"wiped {r.count}")

    handlers = SignalWipe(wiper, drain=drain, announce=announce,
                          exit=lambda code: finished.set()).install()
    try:
        signal.raise_signal(signal.SIGTERM)
        assert finished.wait(5)
    finally:
        handlers.restore()
    assert order == ["drained", "wiped 2"]


def test_sigterm_drain_is_bounded(wiper: Wiper) -> None:
    finished = threading.Event()
    stuck = threading.Event()
    handlers = SignalWipe(wiper, drain=stuck.wait, drain_timeout_s=0.01,
                          announce=lambda r: None, exit=lambda c: finished.set()).install()
    try:
        signal.raise_signal(signal.SIGTERM)
        assert finished.wait(5)
    finally:
        handlers.restore()
        stuck.set()
    assert wiper.vault.pending_count == 0
