"""Selftest of the station's machine: clock, AEAD, memory probe, simulated camera, mock pins."""

from __future__ import annotations

import sys

import pytest
from clinicam.firmware.capture import memory
from clinicam.firmware.capture.memory import HardeningReport
from clinicam.firmware.clock import SimulatedClock
from clinicam.firmware.config import station_config_from
from clinicam.firmware.selftest.device import (
    check_aead,
    check_camera,
    check_clock,
    check_memory,
    check_panel,
    child_memory_probe,
)


def _config(**sections):
    return station_config_from({"hardware": {"backend": "sim"}, **sections})


@pytest.mark.parametrize(
    ("synced", "required", "status"),
    [(True, True, "PASS"), (False, True, "FAIL"), (False, False, "WARN"), (True, False, "PASS")],
)
def test_clock(synced, required, status):
    config = _config(workflow={"require_clock_sync": required})
    r = check_clock(config, SimulatedClock(synced))
    assert r.status == status
    assert ("not synchronised" in r.detail) is (not synced)
    assert bool(r.remedy) is (not synced)


def test_clock_default_in_simulation_is_the_simulated_one():
    assert check_clock(_config()).detail == "simulated clock synchronised"


def test_aead_auto_says_why():
    r = check_aead(_config())
    assert r.status == "PASS"
    assert r.detail in ("AES-256-GCM (auto: this CPU has AES instructions)",
                        "CHACHA20-POLY1305 (auto: no AES instructions in /proc/cpuinfo)")


def test_aead_forced():
    r = check_aead(_config(sealing={"aead": "CHACHA20-POLY1305"}))
    assert (r.status, r.detail) == ("PASS", "CHACHA20-POLY1305 (set by [sealing] aead)")


FAILED = HardeningReport(False, True, True, ("mlockall: Cannot allocate memory (errno 12); grant CAP_IPC_LOCK",))


@pytest.mark.parametrize(("lock", "status"), [("required", "FAIL"), ("warn", "WARN")])
def test_memory_not_lockable(lock, status):
    r = check_memory(_config(memory={"lock": lock}), lambda: FAILED)
    assert r.status == status
    assert r.detail.endswith("not hardened" + ("" if lock == "required" else " (allowed by [memory] lock)")
                             + ": mlockall: Cannot allocate memory (errno 12)")
    assert "LimitMEMLOCK=infinity" in r.remedy


def test_memory_auto_is_required_on_a_pi():
    config = station_config_from({"hardware": {"backend": "pi"}})
    assert check_memory(config, lambda: FAILED).status == "FAIL"
    assert check_memory(_config(), lambda: FAILED).status == "WARN"


def test_memory_probe_runs_in_a_child_and_leaves_this_process_alone():
    locked_before, dumpable_before = memory.locked_kib(), memory.is_dumpable()
    report = child_memory_probe()
    assert report.non_dumpable and report.no_core  # always possible for an unprivileged process
    assert report.mlocked or any(f.startswith("mlockall") for f in report.failures)
    assert (memory.locked_kib(), memory.is_dumpable()) == (locked_before, dumpable_before)
    assert dumpable_before  # a positive control: this process is dumpable, so the check above means something


def test_simulated_camera_yields_a_frame():
    r = check_camera(_config(camera={"lores_width": 640, "lores_height": 480}))
    assert (r.status, r.detail) == ("PASS", "sim: opened, a 640x480 scan frame")


def test_pi_camera_without_picamera2_fails_with_its_remedy(monkeypatch):
    # The dev venv has picamera2 for tests/picamera2_sim: hide it, as on a host without it.
    monkeypatch.setitem(sys.modules, "picamera2", None)
    r = check_camera(station_config_from({"hardware": {"backend": "pi"}}))
    assert r.status == "FAIL"
    assert r.detail.startswith("picamera2 is not importable: install python3-picamera2")


def test_panel_pins_claimed_on_the_mock_factory():
    r = check_panel(_config(power={"tamper_pin": 13}))
    assert (r.status, r.detail) == ("PASS", "sim: pins 17, 22, 23, 24, 18, 13 claimed and released")


@pytest.mark.parametrize("sections", [{"panel": {"shutter_pin": 22}}, {"power": {"mains_pin": 18}}])
def test_a_pin_used_twice_fails(sections):
    r = check_panel(_config(**sections))
    assert r.status == "FAIL"
    assert r.detail.startswith("cannot claim the GPIO pins: ")
    assert "used twice" in r.remedy
