"""``clinicam relay run`` / ``status`` end to end: the status file shows the stations."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path
from typing import Any

from clinicam.tools.cli import main
from test_delivery_support import RelayProcess, eventually, jpeg_like, make_station, relay_toml


def test_relay_run_files_captures_and_status_shows_stations(
        site: Any, broker: Any, tmp_path: Path) -> None:
    config = relay_toml(site, broker.port, tmp_path / "state", tmp_path / "archive", n=1,
                        worker=0, workers=1)
    relay = RelayProcess(config)
    station = make_station(site, "station-a", broker.port)
    try:
        cid = station.capture(jpeg_like(100_000, seed=1))
        station.wait_stored([cid])
        status_file = tmp_path / "state" / "status.json"
        eventually(lambda: status_file.exists() and json.loads(status_file.read_text())
                   ["stations"].get("station-a", {}).get("pending") == 0)
        station.uplink.stop()
        eventually(lambda: json.loads(status_file.read_text())
                   ["stations"]["station-a"]["state"] == "offline")
    finally:
        station.uplink.stop()
        assert relay.stop() == 0
    data = json.loads(status_file.read_text())
    st = data["stations"]["station-a"]
    assert st["state"] == "offline"  # the clean stop says so (retained)
    assert set(st) <= {"state", "pending", "pending_bytes", "boot", "fw", "uptime_s",
                       "cert_not_after", "clock_synced", "relay", "renewal", "seen"}
    assert data["counters"]["stored"] == 1
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["relay", "status", "--config", str(config)]) == 2  # the relay has stopped
    assert "station-a" in out.getvalue() and "offline" in out.getvalue()
    assert "relay-1 (pid" in out.getvalue() and "stopped" in out.getvalue()
    audit = [json.loads(x) for x in (tmp_path / "state" / "audit.jsonl").read_text().splitlines()]
    assert any(a.get("decision") == "stored" and a.get("capture_id") == cid for a in audit)
    assert (tmp_path / "archive" / "station-a" / f"{cid}.jpg").exists()
    assert b"Traceback" not in relay.log
