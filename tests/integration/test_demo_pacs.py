"""``make demo DEMO_ARGS=--pacs`` without a terminal on stdin (a script, CI): the PACS
stays up after the round, the demo says how to stop it, and SIGTERM stops it and every
process the demo started. Also: Ctrl-C during the round is a message and status 130."""

from __future__ import annotations

import base64
import json
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pytest
from clinicam.tools.orthanc import orthanc_available

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not orthanc_available(), reason="needs Debian's orthanc")]

DEMO = [sys.executable, "-m", "clinicam.tools.cli", "demo"]


def read_until(proc: subprocess.Popen[str], pattern: str, timeout_s: float = 300) -> tuple[re.Match[str], str]:
    assert proc.stdout is not None
    seen, deadline = "", time.monotonic() + timeout_s
    for line in proc.stdout:
        seen += line
        found = re.search(pattern, line)
        if found:
            return found, seen
        assert time.monotonic() < deadline, seen
    raise AssertionError(f"the demo ended without {pattern!r}:\n{seen}")


def port_open(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_pacs_stays_up_without_a_terminal_until_sigterm() -> None:
    proc = subprocess.Popen([*DEMO, "--pacs", "--quiet"], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        found, seen = read_until(proc, r"the PACS keeps running at (http://127\.0\.0\.1:(\d+)\S*): (.*)")
        url, port, how = found.group(1), int(found.group(2)), found.group(3)
        assert f"kill {proc.pid}" in how and "Ctrl-C" in how
        user, password = _credentials(seen)
        time.sleep(1)  # it really stays up: before, without a terminal, the PACS stopped at once
        assert proc.poll() is None and port_open(port)
        auth = base64.b64encode(f"{user}:{password}".encode()).decode()
        request = urllib.request.Request(f"http://127.0.0.1:{port}/instances",
                                         headers={"Authorization": f"Basic {auth}"})
        with urllib.request.urlopen(request, timeout=10) as response:
            assert len(json.load(response)) == 5  # the round's photos, viewable
        assert url.startswith(f"http://127.0.0.1:{port}")
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err[-2000:]
    assert "stopping the PACS" in out and "Traceback" not in err
    assert not port_open(port)


def _credentials(text: str) -> tuple[str, str]:
    found = re.search(r"\(user (\S+), password (\S+)\)$", text, re.M)
    assert found, text
    return found.group(1), found.group(2)


def test_ctrl_c_during_the_round_stops_everything_with_130() -> None:
    proc = subprocess.Popen([*DEMO], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        found, _ = read_until(proc, r"broker on 127\.0\.0\.1:(\d+)")
        port = int(found.group(1))
        assert port_open(port)  # positive control: the demo's broker is up
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 130, err[-2000:]
    assert "interrupted" in err and "Traceback" not in err
    assert not port_open(port)  # its broker was stopped with it
