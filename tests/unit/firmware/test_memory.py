"""Memory helpers: real zeroing, MADV_DONTDUMP, hardening (in a child) and its failures."""

from __future__ import annotations

import ctypes
import json
import logging
import mmap
import os
import subprocess
import sys
from typing import Any

import pytest
from clinicam.common import zeroize
from clinicam.common.errors import ClinicamError, MemoryHardeningError
from clinicam.common.zeroize import dont_dump, is_zero, zero
from clinicam.firmware.capture import memory
from clinicam.firmware.capture.memory import STATION_ENV, allocator_problems, harden_process


def test_zero_bytearray_mmap_and_view_slices() -> None:
    ba = bytearray(b"\xff" * 10_000)
    zero(memoryview(ba)[10:20])
    assert ba[10:20] == bytes(10) and ba[9] == 0xFF and ba[20] == 0xFF
    zero(ba)
    assert is_zero(ba) and len(ba) == 10_000
    m = mmap.mmap(-1, 8192)
    m.write(b"\x01" * 8192)
    assert not is_zero(m)
    zero(m)
    assert is_zero(m)
    zero(bytearray())
    m.close()


def test_zero_refuses_immutable_bytes() -> None:
    with pytest.raises(TypeError, match="immutable"):
        zero(b"abc")


def test_is_zero_spots_any_set_byte() -> None:
    for pos in (0, 4095, 9999):
        ba = bytearray(10_000)
        ba[pos] = 1
        assert not is_zero(ba)
    assert is_zero(bytearray(3)) and is_zero(bytearray())


def _vm_flags(address: int) -> list[str]:
    with open("/proc/self/smaps") as smaps:
        inside = False
        for line in smaps:
            head = line.split()[0]
            if "-" in head and not head.endswith(":"):
                start, end = (int(x, 16) for x in head.split("-"))
                inside = start <= address < end
            elif inside and line.startswith("VmFlags:"):
                return line.split()[1:]
    return []


def test_dont_dump_marks_whole_pages_of_a_bytearray() -> None:
    ba = bytearray(5 * memory.PAGE)
    window = (ctypes.c_char * len(ba)).from_buffer(ba)
    inner = -(-ctypes.addressof(window) // memory.PAGE) * memory.PAGE
    del window
    assert dont_dump(ba) is True
    assert "dd" in _vm_flags(inner)
    assert dont_dump(bytearray(100)) is False  # no whole page inside


def test_dont_dump_on_mmap() -> None:
    m = mmap.mmap(-1, 4 * memory.PAGE)
    address = ctypes.addressof(ctypes.c_char.from_buffer(m))
    assert "dd" not in _vm_flags(address)  # control: a fresh mapping is dumpable
    assert dont_dump(m) is True
    assert "dd" in _vm_flags(address)
    m.close()


def test_allocator_problems() -> None:
    assert allocator_problems(STATION_ENV) == []
    assert allocator_problems({**STATION_ENV, "MALLOC_PERTURB_": "0"}) == [
        "MALLOC_PERTURB_=165 is not set"]
    assert allocator_problems({**STATION_ENV, "GLIBC_TUNABLES": "glibc.malloc.arena_max=2:"
                               "glibc.malloc.tcache_count=0"}) == []
    assert len(allocator_problems({})) == len(STATION_ENV)


HARDEN = """
import json, resource
from clinicam.firmware.capture.memory import harden_process, is_dumpable, locked_kib
before = is_dumpable()
r = harden_process(require=True)
blob = bytearray(8 << 20)  # MCL_FUTURE: touched later, locked too
for i in range(0, len(blob), 4096):
    blob[i] = 1
print(json.dumps({"ok": r.ok, "before": before, "dumpable": is_dumpable(),
                  "core": resource.getrlimit(resource.RLIMIT_CORE), "vmlck": locked_kib()}))
"""


@pytest.mark.skipif(os.geteuid() != 0, reason="mlockall of a whole interpreter needs root")
def test_harden_process_in_a_child() -> None:
    out = subprocess.run([sys.executable, "-c", HARDEN], capture_output=True, text=True,
                         check=True, timeout=60).stdout
    got = json.loads(out)
    assert got["before"] is True  # control: a fresh process is dumpable
    assert got["ok"] is True and got["dumpable"] is False and got["core"] == [0, 0]
    assert got["vmlck"] >= 8 * 1024


class FakeLibc:
    def __init__(self, mlockall: int = 0, prctl: int = 0) -> None:
        self._m, self._p = mlockall, prctl
        self.calls: list[tuple[str, Any]] = []

    def mlockall(self, flags: int) -> int:
        self.calls.append(("mlockall", flags))
        return self._m

    def prctl(self, *args: int) -> int:
        self.calls.append(("prctl", args))
        return self._p


@pytest.fixture
def fake_process(monkeypatch: pytest.MonkeyPatch) -> Any:
    limits: list[Any] = []
    monkeypatch.setattr(memory.resource, "setrlimit", lambda *a: limits.append(a))

    def install(libc: FakeLibc) -> list[Any]:
        monkeypatch.setattr(zeroize, "_libc", libc)
        return limits
    return install


def test_harden_calls_each_step(fake_process: Any) -> None:
    libc = FakeLibc()
    limits = fake_process(libc)
    report = harden_process(require=True)
    assert report.ok and report.failures == ()
    assert libc.calls == [("mlockall", 1 | 2 | 4), ("prctl", (4, 0, 0, 0, 0))]
    assert limits == [(memory.resource.RLIMIT_CORE, (0, 0))]


def test_required_hardening_failure_raises(fake_process: Any) -> None:
    fake_process(FakeLibc(mlockall=-1))
    with pytest.raises(MemoryHardeningError, match="LimitMEMLOCK") as info:
        harden_process(require=True)
    assert isinstance(info.value, ClinicamError)


def test_optional_hardening_failure_warns_and_reports(fake_process: Any,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    libc = FakeLibc(mlockall=-1, prctl=-1)
    fake_process(libc)
    with caplog.at_level(logging.WARNING, logger="clinicam.firmware.capture.memory"):
        report = harden_process(require=False)
    assert not report.ok and not report.mlocked and not report.non_dumpable and report.no_core
    assert len(report.failures) == 2
    assert [c[1] for c in libc.calls if c[0] == "mlockall"] == [7, 3]  # ONFAULT, then without
    assert sum("memory NOT hardened" in r.message for r in caplog.records) == 2


# -- Arena ---------------------------------------------------------------------------


def _fill(buf: memoryview, byte: int) -> None:
    buf[:] = bytes([byte]) * len(buf)


def test_arena_buffers_are_zeroed_disjoint_and_reused_in_place() -> None:
    arena = memory.Arena(64 * 1024)
    a, b = arena.allocate(1000), arena.allocate(3000)
    assert a is not None and b is not None and len(a) == 1000 and len(b) == 3000
    assert is_zero(a) and is_zero(b) and arena.owns(a) and arena.owns(b)
    _fill(a, 0x11)
    _fill(b, 0x22)
    assert bytes(b) == b"\x22" * 3000  # writing a did not touch b: disjoint
    where = ctypes.addressof((ctypes.c_char * len(a)).from_buffer(a))
    arena.release(a)
    assert not arena.owns(a) and is_zero(a)  # zeroed on the way back
    again = arena.allocate(900)
    assert again is not None
    assert ctypes.addressof((ctypes.c_char * len(again)).from_buffer(again)) == where
    assert bytes(b) == b"\x22" * 3000


def test_arena_coalesces_neighbours_and_reports_exhaustion() -> None:
    arena = memory.Arena(16 * 1024)
    bufs = [arena.allocate(4096) for _ in range(4)]
    assert all(buf is not None for buf in bufs) and arena.allocate(1) is None
    assert arena.in_use == 16 * 1024 and arena.high_water == 16 * 1024
    for buf in (bufs[1], bufs[2]):
        assert buf is not None
        arena.release(buf)
    assert arena.allocate(8192) is not None  # two freed neighbours make one run
    assert arena.allocate(1) is None


def test_arena_refuses_a_buffer_it_did_not_hand_out() -> None:
    arena = memory.Arena(8192)
    with pytest.raises(ValueError, match="not handed out"):
        arena.release(memoryview(bytearray(10)))
    buf = arena.allocate(10)
    assert buf is not None
    arena.release(buf)
    with pytest.raises(ValueError, match="not handed out"):
        arena.release(buf)  # twice


def test_arena_wipe_zeroes_held_and_free_space_and_leaves_lent_buffers() -> None:
    arena = memory.Arena(64 * 1024)
    held = [arena.allocate(5000) for _ in range(3)]
    lent = arena.allocate(2000)  # a capture still being sealed
    tail = arena.allocate(700)
    assert lent is not None and tail is not None and all(h is not None for h in held)
    for k, buf in enumerate([*held, lent, tail]):
        assert buf is not None
        _fill(buf, 0xA0 + k)
    assert not any(is_zero(h) for h in held if h is not None)  # positive control
    zeroed = arena.wipe([*held, tail])
    assert all(is_zero(h) for h in held if h is not None) and is_zero(tail)
    assert bytes(lent) == b"\xa3" * 2000  # its owner zeroes and releases it
    assert zeroed >= 3 * 5000 + 700 and arena.owns(lent) and not arena.owns(tail)
    assert arena.in_use == 2048 and not any(arena.owns(h) for h in held)
    arena.release(lent)
    assert is_zero(lent) and arena.in_use == 0 and arena.high_water == 0


def test_arena_mapping_is_not_dumped() -> None:
    arena = memory.Arena(1 << 20)
    buf = arena.allocate(10)
    assert buf is not None
    start = ctypes.addressof((ctypes.c_char * len(buf)).from_buffer(buf))
    with open("/proc/self/smaps", encoding="ascii") as smaps:
        lines = smaps.read().splitlines()
    for k, line in enumerate(lines):
        lo, _, hi = line.split(" ", 1)[0].partition("-")
        if hi and all(c in "0123456789abcdef" for c in lo + hi) and int(lo, 16) <= start < int(hi, 16):
            flags = next(x for x in lines[k + 1:] if x.startswith("VmFlags:"))
            assert " dd" in flags
            return
    pytest.fail("the arena's mapping is not in /proc/self/smaps")
