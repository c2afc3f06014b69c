"""``clinicam demo --json`` agrees with what the relay filed (issue 6, "Must show" 6).

The demo is run as a user runs it (its own broker, relay and station processes); its
JSON summary is then checked against the relay's directory, file by file.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from clinicam.tools.demo import DEVICE, demo_ids

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess[str], Path]:
    workdir = tmp_path_factory.mktemp("e2e-demo")
    proc = subprocess.run(
        [sys.executable, "-m", "clinicam.tools.cli", "demo", "--json", "--workdir", str(workdir)],
        capture_output=True, text=True, timeout=300,
    )
    return proc, workdir


def summary(demo: tuple[subprocess.CompletedProcess[str], Path]) -> dict[str, Any]:
    proc, _ = demo
    assert proc.returncode == 0, proc.stderr[-3000:]
    out: dict[str, Any] = json.loads(proc.stdout)
    return out


def test_the_demo_exits_0_with_five_captured_five_delivered_one_no_patient(demo: Any) -> None:
    s = summary(demo)
    assert (s["ok"], s["station_exit"], s["script_error"]) == (True, 0, None)
    assert (s["captured"], s["delivered"], s["refused"]) == (5, 5, ["no_patient"])


def test_the_json_matches_the_relay_directory(demo: Any) -> None:
    s, workdir = summary(demo), demo[1]
    folder = workdir / "relay" / "captures" / DEVICE
    assert Path(s["relay_directory"]) == folder.parent
    on_disk = {p.stem for p in folder.glob("*.json")}
    assert {c["capture_id"] for c in s["captures"]} == on_disk and len(on_disk) == 5
    for c in s["captures"]:
        meta = json.loads((folder / f"{c['capture_id']}.json").read_text())
        assert Path(c["image"]) == folder / f"{c['capture_id']}.jpg" and Path(c["image"]).is_file()
        assert c["device"] == DEVICE == meta["device"]["id"]
        assert c["patient"] == "…" + meta["patient"]["id"][-4:]
        assert c["operator"] == "…" + meta["operator"]["id"][-4:]
        site = (meta["body_site"] or {}).get("display")
        assert (c["purpose"], c["body_site"], c["laterality"], c["consent"]) == (
            meta["purpose"], site, meta["laterality"], meta["consent"])
        assert c["session_index"] == meta["session"]["index"]


def test_the_demo_prints_no_full_identifier_and_leaves_no_station_files(demo: Any) -> None:
    proc, workdir = demo
    who = demo_ids()
    full = [who.patient_a, who.patient_b, who.operator]
    filed = b"".join(p.read_bytes() for p in (workdir / "relay" / "captures").glob("*/*.json"))
    assert all(i.encode() in filed for i in full)  # positive control: the relay has them all
    assert not [i for i in full if i in proc.stdout or i in proc.stderr]
    assert not (workdir / "stations").exists()  # the station's identity went with it
