"""The station's systemd status line says whether its broker session is up.

update-confirm (image-build/update/update-confirm) commits a trial slot only while the
station's ``STATUS=`` ends in ``; online``. The real ``clinicam station run`` process
on simulated hardware, a real Mosquitto with the site's mTLS config, and no relay: the
workflow's own "online" needs a relay (the panel shows offline), the status line's
needs the broker only. The datagrams are read from a ``NOTIFY_SOCKET`` the test binds,
as systemd would.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from clinicam.tools.demo_setup import DemoSetup

pytestmark = pytest.mark.slow


@pytest.fixture
def notify(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[socket.socket]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    path = tmp_path / "notify.sock"
    sock.bind(str(path))
    monkeypatch.setenv("NOTIFY_SOCKET", str(path))
    try:
        yield sock
    finally:
        sock.close()


def statuses_until(sock: socket.socket, want: str, timeout: float = 60.0) -> list[str]:
    """Every STATUS= received until one ends with ``want``; fails after ``timeout``."""
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        sock.settimeout(max(0.1, deadline - time.monotonic()))
        try:
            data = sock.recv(4096).decode()
        except TimeoutError:
            break
        seen += [line.removeprefix("STATUS=") for line in data.splitlines() if line.startswith("STATUS=")]
        if seen and seen[-1].endswith(want):
            return seen
    raise AssertionError(f"no status ending {want!r} within {timeout}s: {seen}")


def test_status_line_follows_the_broker_session_not_the_relay(tmp_path: Path, notify: socket.socket) -> None:
    setup = DemoSetup(tmp_path)
    try:
        setup.provision()
        setup.start_broker()  # and no relay
        setup.start_station()
        seen = statuses_until(notify, "; online")
        assert seen[-1] == "idle; 0 pending; online", seen
        assert seen[0].endswith("; offline") or len(seen) == 1  # READY may come before the session
        # The broker goes away: the status line says so (update-confirm would not commit).
        assert setup.broker is not None
        setup.broker.stop()
        assert statuses_until(notify, "; offline")[-1] == "idle; 0 pending; offline"
    finally:
        setup.close()
