"""The certificate-lifecycle services' units (issue 17): the registrar on the relay host,
the broker agent next to Mosquitto. Verified by systemd itself and read for what they
promise: the shared sandbox, one writable path each, the right user."""

from __future__ import annotations

from pathlib import Path

import pytest
from appliance_support import SYSTEMD, need, parse_unit, run, unit_root

SANDBOX = SYSTEMD / "clinicam-.service.d" / "10-sandbox.conf"
UNITS = ["clinicam-registrar.service", "clinicam-broker-agent.service"]
MOSQUITTO = "[Unit]\nDescription=stand-in broker\n[Service]\nExecStart=/bin/true\n"


@pytest.mark.parametrize("unit", UNITS)
def test_verify_prints_nothing(tmp_path: Path, unit: str) -> None:
    need("systemd-analyze", "systemd")
    extra = {u: (SYSTEMD / u).read_text() for u in UNITS}
    root = unit_root(tmp_path, {**extra, "mosquitto.service": MOSQUITTO})
    result = run("systemd-analyze", "verify", f"--root={root}", unit)
    assert (result.returncode, result.stdout + result.stderr) == (0, "")


def test_registrar_writes_only_its_state_directory() -> None:
    unit = parse_unit(SYSTEMD / "clinicam-registrar.service", SANDBOX)
    assert unit["Service.ProtectSystem"] == ["strict"]
    assert unit["Service.StateDirectory"] == ["clinicam/registrar"]
    assert "Service.ReadWritePaths" not in unit
    assert unit["Service.ExecStart"] == ["/opt/clinicam/venv/bin/clinicam relay registrar --config "
                                         "/etc/clinicam/registrar.toml"]
    assert unit["Service.NoNewPrivileges"] == ["yes"] and unit["Service.LimitCORE"] == ["0", "0"]


def test_broker_agent_writes_only_the_broker_config_and_runs_as_the_broker() -> None:
    unit = parse_unit(SYSTEMD / "clinicam-broker-agent.service", SANDBOX)
    assert unit["Service.ProtectSystem"] == ["strict"]
    assert unit["Service.ReadWritePaths"] == ["/etc/mosquitto/clinicam"]
    assert unit["Service.User"] == ["mosquitto"]
    assert unit["Service.CapabilityBoundingSet"] == []  # reset: no capability at all
    assert "mosquitto.service" in " ".join(unit["Unit.BindsTo"])
