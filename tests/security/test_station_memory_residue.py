"""Memory residue of the *real* station process: scan, capture, wipe, then read its memory.

``clinicam station run`` on simulated hardware (rendered wristband and badge in front of
the simulated camera, gpiozero ``MockFactory`` pins) against the test bed's real broker
and relay, with the unit file's environment (``STATION_ENV``). It scans an operator
badge, a patient wristband and a consent card, takes a photo that the relay stores,
takes a second one, and is wiped by its tamper input; it stays alive (a tamper wipe
leaves it in ``WIPING``) while this test reads ``/proc/<pid>/mem``.

* Positive control 1: the same scan, with the session open, finds the patient and the
  operator id.
* Positive control 2: a mutant station that keeps every scanned text in a module-level
  list (injected into that run only, by a ``sitecustomize`` on its ``PYTHONPATH``)
  fails the very same check after the wipe.

The stand-in child of ``test_memory_residue.py`` stays for what this cannot do: plant a
known marker in the camera's image buffer, and compare allocators.
"""

from __future__ import annotations

import importlib.util
import os
import signal
import sys
import textwrap
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from clinicam.firmware.capture.memory import STATION_ENV
from procmem import scan

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(os.geteuid() != 0, reason="reading a non-dumpable process's memory needs root")]


def _integration_module(name: str) -> ModuleType:
    """``tests/integration/<name>.py`` (the station test bed), whatever the collection order."""
    if name not in sys.modules:
        path = Path(__file__).parents[1] / "integration" / f"{name}.py"
        spec = importlib.util.spec_from_file_location(name, path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


kit = _integration_module("station_kit")

# The mutant: what a careless debugging aid or a "recent scans" cache would do.
MUTANT = textwrap.dedent('''\
    import clinicam.firmware.codes.classify as codes

    KEPT = []
    _classify = codes.classify


    def classify(code, rules):
        KEPT.append(code.text)
        return _classify(code, rules)


    codes.classify = classify
''')


def script(who: Any) -> list[dict[str, Any]]:
    return [
        *kit.opening(who),
        *kit.press(1),
        {"wait_for": {"stored": 1}, "timeout_s": 60},
        {"mark": "in-session"},
        {"wait_s": 3},  # the test stops the process for its scan meanwhile
        *kit.press(1),
        {"wait_for": {"sealed": 2}, "timeout_s": 60},
        {"power": "tamper"},
        {"mark": "wiped"},
        {"wait_s": 600},  # alive, in WIPING, until the test has read its memory
    ]


@contextmanager
def stopped(pid: int) -> Iterator[None]:
    """SIGSTOP for a scan of a still picture of the memory; the script waits meanwhile."""
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(pid, signal.SIGCONT)


def counts(pid: int, who: Any) -> dict[str, int]:
    needles = {"patient": who.patient_a.encode(), "operator": who.operator.encode()}
    with stopped(pid):
        result = scan(pid, list(needles.values()))
    assert result.scanned_bytes > 10_000_000  # the scan did read the heap
    return {name: result.counts[n] for name, n in needles.items()}


def run_station(workdir: Path, seed: int, extra_env: dict[str, str]) -> tuple[dict[str, int], dict[str, int]]:
    """The scenario above; the needle counts in session and after the wipe."""
    who, device = kit.ids(seed), f"residue-{seed}"
    env = [f"{k}={v}" for k, v in {**STATION_ENV, **extra_env}.items()]
    with kit.Setup(workdir, device) as setup:
        station = setup.station(device, script(who), prefix=["env", *env])
        pid = kit.station_pid(station.proc)
        station.wait(lambda e: e.get("mark") == "in-session", timeout=180)
        during = counts(pid, who)
        station.wait(lambda e: e.get("mark") == "wiped", timeout=120)
        assert station.of("capture", status="stored"), station.transcript()
        after = counts(pid, who)
        station.signal_and_wait(signal.SIGINT)
    return during, after


def test_the_wiped_station_holds_no_scanned_identifier(tmp_path: Path) -> None:
    during, after = run_station(tmp_path / "station", 41, {})
    assert during["patient"] >= 1 and during["operator"] >= 1, during  # positive control 1
    assert after == {"patient": 0, "operator": 0}


def test_positive_control_a_station_that_keeps_scanned_texts_fails(tmp_path: Path) -> None:
    mutant = tmp_path / "mutant"
    mutant.mkdir()
    (mutant / "sitecustomize.py").write_text(MUTANT)
    path = os.pathsep.join(p for p in (str(mutant), os.environ.get("PYTHONPATH", "")) if p)
    _, after = run_station(tmp_path / "station", 42, {"PYTHONPATH": path})
    assert after["patient"] >= 1 and after["operator"] >= 1, after
