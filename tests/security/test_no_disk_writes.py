"""No disk writes: a child that seals and vaults 20 captures writes to no file (DESIGN §9)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from clinicam.firmware.capture.memory import STATION_ENV
from strace_parse import TRACE, disk_writes

CHILD = Path(__file__).with_name("station_child.py")
pytestmark = pytest.mark.skipif(shutil.which("strace") is None, reason="needs strace")


def traced(mode: str, tmp_path: Path) -> tuple[str, str]:
    out = tmp_path / f"{mode}.trace"  # written by strace, not by the traced child
    proc = subprocess.run(
        ["strace", "-f", "-y", "-qq", "-o", str(out), "-e", f"trace={TRACE}",
         sys.executable, str(CHILD), mode, "11"],
        capture_output=True, text=True, env={**os.environ, **STATION_ENV}, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return out.read_text(), proc.stdout


def test_sealing_and_vaulting_20_captures_writes_no_file(tmp_path: Path) -> None:
    trace, stdout = traced("seal", tmp_path)
    assert stdout.strip() == "20"
    assert "write(1<pipe:" in trace  # the trace does see the child's writes …
    assert disk_writes(trace) == []  # … and none of them reaches storage


def test_positive_control_a_child_writing_a_file_is_caught(tmp_path: Path) -> None:
    trace, _ = traced("writefile", tmp_path)
    found = "\n".join(disk_writes(trace))
    for call in ("openat(", "write(", "rename(", "unlink("):
        assert call in found and "clinicam-positive-control" in found


SAMPLE = """\
100 openat(AT_FDCWD</>, "/etc/ld.so.cache", O_RDONLY|O_CLOEXEC) = 3</etc/ld.so.cache>
100 openat(AT_FDCWD</>, "/var/x", O_WRONLY|O_CREAT, 0600) = -1 EACCES (Permission denied)
100 write(1<pipe:[1]>, "ok", 2) = 2
100 write(2</dev/pts/0>, "ok", 2) = 2
100 write(5<socket:[9]>, "ok", 2) = 2
100 write(6</dev/null>, "ok", 2) = 2
100 write(7</proc/self/attr/current>, "x", 1) = 1
101 write(4</var/lib/clinicam/a>, "data", 4 <unfinished ...>
101 <... write resumed>) = 4
102 pwrite64(8</tmp/t>, "x", 1, 0) = 1
103 openat(AT_FDCWD</>, "/tmp/n", O_RDWR|O_CREAT|O_CLOEXEC, 0600) = 9</tmp/n>
104 renameat2(AT_FDCWD</>, "/tmp/a", AT_FDCWD</>, "/tmp/b", 0) = 0
105 memfd_create("x", MFD_CLOEXEC) = 10</memfd:x (deleted)>
106 write(3, "no annotation", 13) = 13
"""


def test_parser_on_known_lines() -> None:
    found = disk_writes(SAMPLE)
    assert [line.split()[0] for line in found] == ["101", "102", "103", "104", "105", "106"]
