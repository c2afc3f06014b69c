"""Is the system clock synchronised? A Pi has no battery clock (DESIGN §6).

A wrong date on a clinical photo is a safety problem, so by default the station refuses
to capture until the kernel says an NTP client has disciplined the clock. We ask the
kernel directly with ``adjtimex(2)`` (``ntp_adjtime``): it returns ``TIME_ERROR`` while
the clock is unsynchronised (``STA_UNSYNC``), whichever NTP client runs (systemd-timesyncd,
chrony). No D-Bus, no subprocess.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
from collections.abc import Callable
from typing import Protocol

TIME_ERROR = 5


class ClockSource(Protocol):
    def synchronised(self) -> bool: ...


class _Timex(ctypes.Structure):
    # struct timex from <sys/timex.h>: the kernel only needs room; we read the return value.
    _fields_ = [("modes", ctypes.c_uint), ("_rest", ctypes.c_byte * 204)]


# systemd-timesyncd creates this file once it has synchronised the clock (systemd >= 246).
TIMESYNCD_FLAG = "/run/systemd/timesync/synchronized"


class KernelClock:
    """The kernel's view: synchronised unless ``adjtimex`` reports ``TIME_ERROR``.

    Inside the station unit ``adjtimex`` itself is refused: ``ProtectClock=yes`` denies
    the whole ``@clock`` system call group, reads included, with ``EPERM``. Then the
    answer is systemd-timesyncd's flag file, which it creates on synchronisation.
    Without this fallback a Pi would never capture (``require_clock_sync``).
    """

    def __init__(self, adjtimex: Callable[..., int] | None = None, get_errno: Callable[[], int] | None = None,
                 flag: str = TIMESYNCD_FLAG) -> None:
        if adjtimex is None:
            libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
            adjtimex = libc.adjtimex
        self._adjtimex: Callable[..., int] = adjtimex
        self._errno = get_errno or ctypes.get_errno
        self._flag = flag

    def synchronised(self) -> bool:
        timex = _Timex()  # modes = 0: read only
        state = self._adjtimex(ctypes.byref(timex))
        if state == -1 and self._errno() == errno.EPERM:
            return os.path.exists(self._flag)
        return state not in (-1, TIME_ERROR)


class SimulatedClock:
    """A settable flag, for the simulated backend and tests."""

    def __init__(self, synced: bool = True) -> None:
        self.synced = synced

    def synchronised(self) -> bool:
        return self.synced
