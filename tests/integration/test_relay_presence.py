"""Relay presence on the real broker (DESIGN §5): stations know whether a relay serves
them, re-send at once when one returns, a standby takes over a dead worker's share, and
two relays with one identity back off instead of knocking each other off every second.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import pytest
from clinicam.firmware.workflow.events import CaptureRetryScheduled, CaptureSent, RelayPresenceChanged
from clinicam.protocol.topics import Topics
from test_delivery_support import (
    RelayProcess,
    audit_decisions,
    jpeg_like,
    make_core,
    make_station,
    next_json,
    relay_toml,
    start_relay,
)

T = Topics()


def presence_events(station: Any) -> list[RelayPresenceChanged]:
    return [e for e in station.seen if isinstance(e, RelayPresenceChanged)]


def retained_status(mqtt_client: Any, site: Any, device: str) -> dict[str, Any]:
    c = mqtt_client(site.admin)
    c.subscribe(T.status(device), qos=1)
    return next_json(c, T.status(device))


def test_station_without_relay_is_offline_and_resends_at_once_when_one_returns(
        site: Any, broker: Any, mqtt_client: Any, tmp_path: Path) -> None:
    archive = tmp_path / "archive"
    archive.mkdir()  # the relay checks at start that its sink's folder exists
    (archive / "station-a").write_bytes(b"")  # but station-a's folder is a file: the sink is down for it
    station = make_station(site, "station-a", broker.port, ack_timeout_s=60.0, retry_min_s=60.0,
                           retry_max_s=120.0, presence_settle_s=0.5)
    relay = None
    try:
        # no relay: the station says so (panel offline, status), and holds its captures
        station.wait_for(lambda seen: any(not e.online for e in presence_events(station)))
        assert retained_status(mqtt_client, site, "station-a")["relay"] == "offline"
        cid = station.capture(jpeg_like(40_000, seed=7))
        assert station.uplink.flush()
        station.wait_for(lambda _: station.vault.pending_count == 1)
        assert not [e for e in station.seen if isinstance(e, CaptureSent)]  # held, not sent into the void

        # a relay comes: the capture goes; its sink is down, so the station backs off (>= 30 s)
        relay = RelayProcess(relay_toml(site, broker.port, tmp_path / "r1", archive, n=1, worker=0, workers=1))
        retry = station.wait_for(lambda seen: any(isinstance(e, CaptureRetryScheduled) for e in seen))
        delay = next(e for e in retry if isinstance(e, CaptureRetryScheduled)).delay_s
        assert delay >= 30.0
        assert retained_status(mqtt_client, site, "station-a")["relay"] == "online"

        # the relay dies (its will says offline), the sink is repaired, a relay returns:
        # the capture is re-sent at once, not after its back-off
        relay.kill()
        relay = None
        station.wait_for(lambda _: [e.online for e in presence_events(station)][-1:] == [False])
        (archive / "station-a").unlink()
        relay = RelayProcess(relay_toml(site, broker.port, tmp_path / "r2", archive, n=1, worker=0, workers=1))
        back = time.monotonic()
        station.wait_stored([cid], timeout=delay / 2)
        took = time.monotonic() - back
        assert presence_events(station)[-1] == RelayPresenceChanged(True, resent=1)
    finally:
        station.uplink.stop()
        if relay is not None:
            assert relay.stop() == 0
    assert took < delay / 2, (took, delay)
    assert (archive / "station-a" / f"{cid}.jpg").exists()


def test_standby_waits_while_the_worker_lives_and_takes_over_when_it_dies(
        site: Any, broker: Any, tmp_path: Path) -> None:
    archive = tmp_path / "archive"
    worker = RelayProcess(relay_toml(site, broker.port, tmp_path / "w", archive, n=1, worker=0, workers=1))
    standby = RelayProcess(relay_toml(site, broker.port, tmp_path / "s", archive, n=2, worker=0, workers=1))
    station = make_station(site, "station-a", broker.port, ack_timeout_s=5.0, presence_settle_s=0.5)
    try:
        first = station.capture(jpeg_like(30_000, seed=1))
        station.wait_stored([first])
        assert b"relay-1; relay-2 stands by" in standby.log
        worker.kill()  # its will: offline; the standby takes the share
        station.wait_for(lambda _: any(not e.online for e in presence_events(station))
                         or b"relay-2 serves worker 0" in standby.log)
        second = station.capture(jpeg_like(30_000, seed=2))
        station.wait_stored([second])
    finally:
        station.uplink.stop()
        assert standby.stop() == 0
    assert b"relay-2 serves worker 0 of 1" in standby.log
    assert [d["capture_id"] for d in audit_decisions(tmp_path / "w" / "audit.jsonl")] == [first]
    assert [d["capture_id"] for d in audit_decisions(tmp_path / "s" / "audit.jsonl")] == [second]
    assert b"Traceback" not in standby.log


def test_two_relays_with_one_identity_back_off_instead_of_flapping(
        site: Any, broker: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="clinicam.relay.service")
    a = start_relay(site, broker.port, make_core(site, tmp_path / "a"), duplicate_backoff_s=2.0)
    b = start_relay(site, broker.port, make_core(site, tmp_path / "b"), duplicate_backoff_s=2.0)
    window = 12.0
    try:
        time.sleep(window)  # the behaviour under test is what happens over time
        station = make_station(site, "station-a", broker.port, presence_settle_s=0.5)
        cid = station.capture(jpeg_like(20_000, seed=3))
        station.wait_stored([cid])  # one of them serves
        station.uplink.stop()
    finally:
        a.stop()
        b.stop()
    lines = [r.getMessage() for r in caplog.records]
    said = [m for m in lines if "in use by another relay process" in m]
    connects = [m for m in lines if m.startswith("relay: connected to")]
    # without the back-off the two take the session from each other every ~1 s (~24 connects in 12 s);
    # with it the one pushed off notices, says so, and comes back after 2, 4, 8 s while the other serves
    assert 2 <= a.duplicates <= 4 and b.duplicates == 0, (a.duplicates, b.duplicates)
    assert len(connects) <= 2 * a.duplicates + 3, connects
    assert len(said) == a.duplicates
    assert all("relay-1" in m and "own certificate" in m and "\n" not in m for m in said)
    assert (tmp_path / "b" / "archive" / "station-a" / f"{cid}.jpg").exists()
