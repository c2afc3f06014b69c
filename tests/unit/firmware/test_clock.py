"""KernelClock: adjtimex's answer, and timesyncd's flag where the unit's ProtectClock=
refuses adjtimex itself (EPERM for the whole @clock group, reads included)."""

from __future__ import annotations

import errno

from clinicam.firmware.clock import TIME_ERROR, KernelClock


def test_real_adjtimex_answers_on_this_host():
    # Positive control: outside a sandbox the call works and returns a clock state.
    assert KernelClock().synchronised() in (True, False)


def test_time_error_is_unsynchronised(tmp_path):
    flag = tmp_path / "synchronized"
    flag.touch()  # the flag is not consulted when adjtimex answers
    assert KernelClock(lambda _t: TIME_ERROR, lambda: 0, str(flag)).synchronised() is False
    assert KernelClock(lambda _t: 0, lambda: 0, str(flag)).synchronised() is True


def test_refused_by_seccomp_falls_back_to_timesyncd_flag(tmp_path):
    flag = tmp_path / "synchronized"
    clock = KernelClock(lambda _t: -1, lambda: errno.EPERM, str(flag))
    assert clock.synchronised() is False
    flag.touch()
    assert clock.synchronised() is True


def test_other_failures_stay_unsynchronised(tmp_path):
    flag = tmp_path / "synchronized"
    flag.touch()
    assert KernelClock(lambda _t: -1, lambda: errno.EINVAL, str(flag)).synchronised() is False
