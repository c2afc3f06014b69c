"""A station without an identity waits for one instead of crash-looping (DESIGN §6).

The real ``clinicam station run`` process on simulated hardware: it says it is
unprovisioned, stays up (systemd sees it ready, the panel shows ``fault``), and exits
with EX_TEMPFAIL (75) once ``clinicam provision install`` has put an identity in place,
so systemd restarts it into service. A stop while waiting is a clean exit 0.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import pytest
from clinicam.firmware.station_cli import EX_TEMPFAIL
from clinicam.tools.demo_setup import CLI, DemoSetup, to_toml

pytestmark = pytest.mark.slow


def start(setup: DemoSetup, device: str) -> subprocess.Popen[str]:
    identity = setup.stations_dir / device / "identity"
    config = setup.workdir / f"{device}.toml"
    config.write_text(to_toml({"hardware": {"backend": "sim"}, "identity": {"dir": str(identity)},
                               "memory": {"lock": "warn"}}))
    return subprocess.Popen([*CLI, "station", "run", "--config", str(config), "--events-json"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def first_event(proc: subprocess.Popen[str]) -> dict:
    assert proc.stdout is not None
    return json.loads(proc.stdout.readline())


@pytest.fixture
def setup(tmp_path: Path) -> DemoSetup:
    s = DemoSetup(tmp_path)
    s.provision()  # the site only; the stations below have no identity yet
    return s


def test_waits_for_an_identity_then_exits_to_be_restarted(setup: DemoSetup):
    proc = start(setup, "cart-new")
    try:
        event = first_event(proc)
        assert (event["kind"], event["reason"]) == ("unprovisioned", "ProvisioningError")
        time.sleep(1.0)
        assert proc.poll() is None  # no crash loop: it stays up
        setup.identity_dir("cart-new")  # key, CSR, signed, bundled, installed
        assert proc.wait(timeout=20) == EX_TEMPFAIL
    finally:
        proc.kill()
    _out, err = proc.communicate()
    assert "not provisioned" in err and "identity installed" in err


def test_a_stop_while_unprovisioned_is_a_clean_exit(setup: DemoSetup):
    proc = start(setup, "cart-other")
    try:
        assert first_event(proc)["kind"] == "unprovisioned"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
    finally:
        proc.kill()
