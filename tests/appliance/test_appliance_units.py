"""The systemd units: verified by systemd itself, scored, and read for the promises the
design makes (notify + watchdog, memory locking, no core, no writable disk path, only
the devices the camera and GPIO need, shutdown while the network is still up)."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
from appliance_support import SYSTEMD, parse_unit, run, unit_root

UNITS = ["clinicam-station.service", "clinicam-relay.service"]
SANDBOX = SYSTEMD / "clinicam-.service.d" / "10-sandbox.conf"
EXPOSURE = re.compile(r"Overall exposure level for (\S+): (\d+\.\d+)")
# The goal for the station; the relay must pass the same --threshold=20.
STATION_EXPOSURE_GOAL = 2.0


def station() -> dict[str, list[str]]:
    return parse_unit(SYSTEMD / "clinicam-station.service", SANDBOX)


@pytest.mark.parametrize("unit", [*UNITS, "persist-clinicam.service"])
def test_verify_prints_nothing(analyze_root: Path, unit: str) -> None:
    # verify exits 0 even on a misspelt key, so any output at all is a failure.
    result = run("systemd-analyze", "verify", f"--root={analyze_root}", unit)
    assert (result.returncode, result.stdout + result.stderr) == (0, "")


def test_verify_reports_a_misspelt_key(tmp_path: Path) -> None:
    # Positive control: the same call does complain about a typo in the sandbox.
    root = unit_root(tmp_path)
    dropin = root / "usr/lib/systemd/system/clinicam-.service.d/10-sandbox.conf"
    dropin.write_text(dropin.read_text().replace("ProtectProc=", "ProtectProx="))
    result = run("systemd-analyze", "verify", f"--root={root}", "clinicam-station.service")
    assert "Unknown key 'ProtectProx'" in result.stdout + result.stderr


@pytest.mark.parametrize("unit", UNITS)
def test_security_exposure_within_threshold(analyze_root: Path, unit: str) -> None:
    result = run(
        "systemd-analyze",
        "security",
        "--offline=true",
        "--threshold=20",
        f"--root={analyze_root}",
        "--no-pager",
        unit,
    )
    match = EXPOSURE.search(result.stdout)
    assert match, result.stdout + result.stderr
    score = float(match.group(2))
    print(f"systemd-analyze security: {unit} exposure {score}")
    assert result.returncode == 0, result.stdout
    if unit == "clinicam-station.service":
        assert score <= STATION_EXPOSURE_GOAL


def test_sandbox_dropin_applies_by_prefix(analyze_root: Path) -> None:
    # Without the clinicam-.service.d drop-in the station scores far worse: proof that
    # systemd really merges it (and that the score above measures the sandbox).
    bare = analyze_root.parent / "bare"
    shutil.copytree(analyze_root, bare, symlinks=True)
    shutil.rmtree(bare / "usr/lib/systemd/system/clinicam-.service.d")
    result = run(
        "systemd-analyze",
        "security",
        "--offline=true",
        f"--root={bare}",
        "--no-pager",
        "clinicam-station.service",
    )
    match = EXPOSURE.search(result.stdout)
    assert match and float(match.group(2)) > 5.0, result.stdout


def test_station_is_a_watched_notify_service() -> None:
    unit = station()
    assert unit["Service.Type"] == ["notify"]
    assert unit["Service.NotifyAccess"] == ["main"]
    assert unit["Service.WatchdogSec"]
    assert unit["Service.Restart"] == ["on-failure"]
    assert unit["Unit.StartLimitBurst"] and unit["Unit.StartLimitIntervalSec"]
    assert unit["Service.ExecStart"][0].split()[1:3] == ["station", "run"]


def test_station_memory_never_leaves_ram() -> None:
    unit = station()
    assert unit["Service.LimitMEMLOCK"] == ["infinity"]
    assert unit["Service.LimitCORE"][-1] == "0"
    assert unit["Service.MemorySwapMax"] == ["0"]
    env = " ".join(unit["Service.Environment"]).split()
    assert "PYTHONMALLOC=malloc" in env
    assert any(e.startswith("MALLOC_PERTURB_=") and e != "MALLOC_PERTURB_=0" for e in env)


def test_station_runs_with_the_allocator_settings_the_residue_tests_proved() -> None:
    """tests/security measured that only memory.STATION_ENV leaves no patient id behind."""
    from clinicam.firmware.capture.memory import allocator_problems

    env = dict(e.split("=", 1) for e in " ".join(station()["Service.Environment"]).split())
    assert allocator_problems(env) == []
    assert allocator_problems({"PYTHONMALLOC": "malloc"})  # control: a partial setting is caught


def test_station_writes_to_disk_only_its_event_directory() -> None:
    from clinicam.firmware.config import EventsSection

    unit = station()
    assert unit["Service.ProtectSystem"] == ["strict"]
    assert "Service.ReadWritePaths" not in unit
    # the undelivered audit events (no PHI), on the persistent partition, where the
    # station's configuration looks for them
    assert unit["Service.StateDirectory"] == ["clinicam/events"]
    assert "/var/lib/" + unit["Service.StateDirectory"][0] == EventsSection().dir
    assert unit["Service.StateDirectoryMode"] == ["0700"]
    assert "Service.LogsDirectory" not in unit
    assert unit["Service.RuntimeDirectory"] == ["clinicam"]
    assert unit["Service.UMask"] == ["0077"]
    assert unit["Service.PrivateTmp"] == ["yes"]
    assert "/var/tmp" in unit["Service.InaccessiblePaths"]


def test_station_starts_in_its_runtime_directory_for_lgpio() -> None:
    # lgpio makes its notify FIFO at import in $LG_WD or the working directory; a unit
    # starts in "/", read-only under ProtectSystem=strict: both must be the tmpfs.
    unit = station()
    runtime = "/run/" + unit["Service.RuntimeDirectory"][-1]
    assert unit["Service.WorkingDirectory"] == [runtime]
    env = " ".join(unit["Service.Environment"]).split()
    assert f"LG_WD={runtime}" in env


def test_station_privileges_devices_and_network() -> None:
    unit = station()
    assert unit["Service.User"] == ["clinicam"]
    assert unit["Service.CapabilityBoundingSet"] == []
    assert unit["Service.NoNewPrivileges"] == ["yes"]
    assert unit["Service.DevicePolicy"] == ["closed"]
    assert sorted(a.split()[0] for a in unit["Service.DeviceAllow"]) == [
        "char-dma_heap",
        "char-gpiochip",
        "char-media",
        "char-video4linux",
    ]
    assert unit["Service.RestrictAddressFamilies"] == ["AF_INET AF_INET6 AF_UNIX"]
    assert unit["Service.IPAddressDeny"] == ["any"]
    assert unit["Service.ProtectProc"] == ["invisible"]
    # gpiozero reads /proc/cpuinfo and /proc/device-tree.
    assert "Service.ProcSubset" not in unit
    assert unit["Service.MemoryDenyWriteExecute"] == ["yes"]
    assert unit["Service.SystemCallFilter"][0] == "@system-service"


def test_station_stops_before_the_network_goes() -> None:
    # Stop order is the reverse of start order: After=network-online.target means the
    # station drains, wipes and reports while the network is still up.
    unit = station()
    after = " ".join(unit["Unit.After"]).split()
    assert "network-online.target" in after
    assert unit["Service.KillMode"] == ["mixed"]
    timeout = unit["Service.TimeoutStopSec"][0]
    assert int(timeout.rstrip("s")) > 10  # stop_drain_s defaults to 10 s


def test_relay_writes_only_its_sink_directory() -> None:
    unit = parse_unit(SYSTEMD / "clinicam-relay.service", SANDBOX)
    assert unit["Service.ProtectSystem"] == ["strict"]
    assert unit["Service.StateDirectory"] == ["clinicam-relay"]
    assert "Service.ReadWritePaths" not in unit
    assert unit["Service.User"] == ["clinicam-relay"]


def test_hid_scanner_dropin_only_reads_input_devices() -> None:
    unit = parse_unit(SYSTEMD / "optional" / "20-hid-scanner.conf")
    assert unit["Service.DeviceAllow"] == ["char-input r"]


def test_persist_unit_unlocks_before_the_mount_and_outside_the_sandbox() -> None:
    # The clinicam-.service.d sandbox applies by name prefix and would deny block
    # devices and dm-crypt: this unit must not match it.
    assert not "persist-clinicam.service".startswith("clinicam-")
    unit = parse_unit(SYSTEMD / "persist-clinicam.service")
    assert unit["Service.Type"] == ["oneshot"] and unit["Service.RemainAfterExit"] == ["yes"]
    assert unit["Service.ExecStart"] == ["/opt/clinicam/venv/bin/clinicam persist unlock"]
    assert unit["Service.ExecStop"] == ["/opt/clinicam/venv/bin/clinicam persist lock"]
    assert "var-lib-clinicam.mount" in unit["Unit.Before"]
    assert unit["Unit.Requires"] == [r"dev-disk-by\x2dlabel-clinicam.device"]
    # The key file the CLI defaults to is on the mount the unit requires.
    from clinicam.provisioning.persist.keys import DEFAULT_KEY_FILE

    assert DEFAULT_KEY_FILE.is_relative_to(Path(unit["Unit.RequiresMountsFor"][0]))
    assert unit["Service.PrivateNetwork"] == ["yes"] and unit["Service.LimitCORE"] == ["0"]


def test_persist_unit_name_escapes_the_label_as_systemd_does() -> None:
    escape = shutil.which("systemd-escape")
    if escape is None:
        pytest.skip("systemd-escape not installed (apt-get install systemd)")
    expected = run(escape, "--path", "--suffix=device", "/dev/disk/by-label/clinicam").stdout.strip()
    assert parse_unit(SYSTEMD / "persist-clinicam.service")["Unit.After"][0] == expected


def test_station_applies_the_recorded_addresses_before_each_start() -> None:
    # "+" runs it as root outside the sandbox; it replaces the image's IPAddressAllow
    # list with the broker addresses recorded at provisioning (provisioning/netallow.py).
    assert station()["Service.ExecStartPre"] == ["+/opt/clinicam/venv/bin/clinicam provision apply-network"]
