"""The relay's metrics, read through prometheus_client's own registry (no network)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from clinicam.relay.config import relay_config_from
from clinicam.relay.metrics import RelayMetrics, TimedSink, provisioned_stations
from clinicam.relay.records import StatusBoard
from prometheus_client import generate_latest

ARCHIVE = {"type": "directory", "name": "archive", "path": "/tmp/x"}


def sample(m: RelayMetrics, name: str, **labels: str) -> float | None:
    return m.registry.get_sample_value(name, labels)


def test_decisions_count_by_status_and_reason() -> None:
    m = RelayMetrics()
    for status, reason in [("stored", None), ("retry", "sink-unavailable"), ("retry", "sink-unavailable"),
                           ("rejected", "signature"), ("retry", None), ("voided", None)]:
        m.decision(status, reason)
    assert sample(m, "clinicam_relay_captures_stored_total") == 1
    assert sample(m, "clinicam_relay_captures_retried_total", reason="sink-unavailable") == 2
    assert sample(m, "clinicam_relay_captures_retried_total", reason="none") == 1
    assert sample(m, "clinicam_relay_captures_rejected_total", reason="signature") == 1
    assert sample(m, "clinicam_relay_captures_rejected_total", reason="malformed") is None
    assert sample(m, "clinicam_relay_voids_total") == 1


def test_station_gauges_from_the_board_and_inventory(tmp_path: Path) -> None:
    board = StatusBoard(None, wall=lambda: 1_700_000_000.0)
    board.station("ward-1", {"state": "online", "pending": 3, "pending_bytes": 900, "fw": "1.2.3",
                             "cert_not_after": "2030-01-01T00:00:00Z", "clock_synced": True})
    board.station("ward-2", {"state": "offline"})
    m = RelayMetrics()
    m.stations(board, lambda: ["ward-1", "ward-2", "ward-9"])
    assert sample(m, "clinicam_station_up", station="ward-1") == 1
    assert sample(m, "clinicam_station_up", station="ward-2") == 0
    assert sample(m, "clinicam_station_pending_captures", station="ward-1") == 3
    assert sample(m, "clinicam_station_last_seen_timestamp_seconds", station="ward-1") == 1_700_000_000.0
    assert sample(m, "clinicam_station_certificate_expiry_timestamp_seconds", station="ward-1") == 1893456000.0
    assert sample(m, "clinicam_station_firmware_info", station="ward-1", version="1.2.3") == 1
    assert sample(m, "clinicam_station_pending_captures", station="ward-2") is None
    assert sample(m, "clinicam_station_provisioned", station="ward-9") == 1
    assert sample(m, "clinicam_station_last_seen_timestamp_seconds", station="ward-9") is None


def test_inventory_from_the_register(tmp_path: Path) -> None:
    reg = tmp_path / "register.json"
    reg.write_text(json.dumps({"site": "x", "certificates": [
        {"id": "ward-1", "kind": "device"}, {"id": "relay-1", "kind": "relay"},
        {"id": "ward-2", "kind": "device", "revoked_at": "2026-01-01T00:00:00+00:00"}]}))
    assert provisioned_stations(reg) == ["ward-1"]
    reg.write_text("{")
    assert provisioned_stations(reg) == []  # unreadable: no inventory, not a failed scrape


def test_timed_sink_observes_outcomes() -> None:
    class Flaky:
        name = "pacs"
        calls = 0

        def store(self, capture: object) -> str:
            self.calls += 1
            if self.calls == 1:
                raise OSError("down")
            return "ref"

        def void(self, device: str, capture_id: str) -> None: ...

        def check_patient(self, capture: object) -> None: ...

    m, ticks = RelayMetrics(), iter([0.0, 0.5, 1.0, 1.25])
    sink = TimedSink(Flaky(), m, clock=lambda: next(ticks))
    with pytest.raises(OSError):
        sink.store(object())
    assert sink.store(object()) == "ref"
    assert sample(m, "clinicam_relay_sink_seconds_sum", sink="pacs", outcome="error") == 0.5
    assert sample(m, "clinicam_relay_sink_seconds_sum", sink="pacs", outcome="stored") == 0.25
    assert callable(sink.check_patient)  # extras pass through


def test_endpoint_is_off_by_default() -> None:
    config = relay_config_from({"sinks": [ARCHIVE]})
    assert config.metrics.listen == ""
    on = relay_config_from({"sinks": [ARCHIVE], "metrics": {"listen": "127.0.0.1:9464"}})
    assert on.metrics.listen == "127.0.0.1:9464"
    assert b"clinicam_relay_captures_stored_total" in generate_latest(RelayMetrics().registry)


def test_certificate_expiries_of_the_relay_and_the_stations_renewal() -> None:
    m = RelayMetrics()
    m.certificates([("relay", "relay-1", 1_800_000_000.0), ("site-ca", "Site CA", 2_000_000_000.0),
                    ("issuing-ca", "Issuing CA", 1_900_000_000.0), ("issuing-ca", "Issuing CA", 1_850_000_000.0)])
    name = "clinicam_relay_certificate_expiry_timestamp_seconds"
    assert sample(m, name, certificate="relay", subject="relay-1") == 1_800_000_000.0
    assert sample(m, name, certificate="site-ca", subject="Site CA") == 2_000_000_000.0
    assert sample(m, name, certificate="issuing-ca", subject="Issuing CA") == 1_850_000_000.0  # the first to end
    board = StatusBoard(None)
    failed = {"state": "failed", "at": "2026-12-01T00:00:00Z", "reason": "rate-limited"}
    board.station("ward-1", {"state": "online", "renewal": failed})
    board.station("ward-2", {"state": "online", "renewal": {"state": "installed", "at": None, "reason": None}})
    board.station("ward-3", {"state": "online"})
    m.stations(board)
    assert sample(m, "clinicam_station_certificate_renewal_failed", station="ward-1") == 1
    assert sample(m, "clinicam_station_certificate_renewal_failed", station="ward-2") == 0
    assert sample(m, "clinicam_station_certificate_renewal_failed", station="ward-3") is None
