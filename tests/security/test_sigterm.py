"""SIGTERM to a child holding 10 captures: vault zeroed, exit 0 within 2 s, only ids and counts."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

from clinicam.firmware.capture.memory import STATION_ENV
from station_child import expected

CHILD = Path(__file__).with_name("station_child.py")
REPORT = re.compile(r"wiped trigger=sigterm count=10 bytes=\d+ in_progress=0 "
                    r"undelivered=(?P<ids>[0-9a-f]{32}(?:,[0-9a-f]{32}){9}) "
                    r"zeroed_parts=(?P<zeroed>\d+)/(?P<parts>\d+)")


def start(mode: str, seed: int) -> tuple[subprocess.Popen[str], list[str]]:
    proc = subprocess.Popen([sys.executable, str(CHILD), mode, str(seed)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, **STATION_ENV})
    assert proc.stdout is not None
    ready = proc.stdout.readline().split()
    assert ready[0] == "ready", ready
    return proc, ready[1].split(",")


def test_sigterm_zeroes_vault_and_exits_0_within_2s() -> None:
    proc, ids = start("sigterm", 5)
    assert len(ids) == 10
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=2)
    assert proc.returncode == 0
    lines = (out + err).strip().splitlines()
    assert len(lines) == 1, lines  # one report line, nothing else
    m = REPORT.fullmatch(lines[0])
    assert m is not None, lines[0]
    assert m["ids"].split(",") == ids
    assert m["zeroed"] == m["parts"] and int(m["parts"]) >= 20
    _, patient = expected(5)
    assert patient.decode() not in out + err and "CANARY" not in out + err


def test_sigint_wipes_at_once() -> None:
    proc, ids = start("sigterm", 6)
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=2)
    assert proc.returncode == 0
    assert out.startswith("wiped trigger=sigint count=10 ") and ids[0] in out
