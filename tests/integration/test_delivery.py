"""Delivery over the real broker: stations' uplinks, the relay, the directory sink.

Issue 5's "Must show", part 1: volume, broker and relay outages, failing sinks.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from clinicam.firmware.workflow.events import CaptureRetryScheduled, CaptureStored
from clinicam.protocol.reasons import SinkError
from clinicam.relay.sinks.directory import DirectorySink
from test_delivery_support import (
    Station,
    archived,
    jpeg_like,
    make_core,
    make_station,
    start_relay,
)

MB = 1_000_000


@pytest.fixture
def stations(site: Any, broker: Any) -> Iterator[dict[str, Station]]:
    made = {n: make_station(site, n, broker.port) for n in ("station-a", "station-b")}
    yield made
    for s in made.values():
        s.uplink.stop()


@pytest.fixture
def relay_core(site: Any, tmp_path: Path) -> Any:
    return make_core(site, tmp_path)


@pytest.fixture
def relay(site: Any, broker: Any, relay_core: Any) -> Iterator[Any]:
    r = start_relay(site, broker.port, relay_core)
    yield r
    r.stop()


def test_fifty_captures_from_two_stations_stored_exactly_once(
        stations: dict[str, Station], relay: Any, tmp_path: Path) -> None:
    # 50 captures: six of 1..6 MB (the range) and 44 of 50..200 kB, to keep the
    # run to seconds on two shared cores; the large ones span up to 50 parts each.
    sizes = [k * MB for k in range(1, 7)] + [50_000 + 3_500 * i for i in range(44)]
    taken: dict[str, list[str]] = {"station-a": [], "station-b": []}
    for i, size in enumerate(sizes):
        name = "station-a" if i % 2 == 0 else "station-b"
        taken[name].append(stations[name].capture(jpeg_like(size, seed=i)))
    for name, ids in taken.items():
        stations[name].wait_stored(ids)
    files = archived(tmp_path / "archive")
    assert sorted(files) == sorted(taken["station-a"] + taken["station-b"])
    assert all(exts == [".jpg", ".json"] for exts in files.values())
    for name, st in stations.items():
        assert sorted(st.stored()) == sorted(taken[name])  # each acknowledged once
        assert st.vault.pending_count == 0
    stored = [d for d in relay.core.audit.lines if d.get("decision") == "stored"]
    assert len(stored) == 50


def test_broker_killed_mid_capture_then_restarted_stored_once(
        site: Any, broker: Any, tmp_path: Path) -> None:
    relay = start_relay(site, broker.port, make_core(site, tmp_path), reconnect_max_s=2)
    station = make_station(site, "station-a", broker.port)
    killed = threading.Event()
    publish = station.uplink.engine._publish
    parts_out = 0

    def crash_after_some_parts(topic: str, payload: Any, response: Any) -> int:
        nonlocal parts_out
        if "/part/" in topic and not killed.is_set():
            parts_out += 1
            if parts_out == 10:  # of 42: the capture is half on the wire
                broker.kill()
                killed.set()
        return publish(topic, payload, response)

    station.uplink.engine._publish = crash_after_some_parts
    try:
        cid = station.capture(jpeg_like(5 * MB, seed=99))
        assert killed.wait(30)
        broker.start()
        station.wait_stored([cid])
        assert archived(tmp_path / "archive") == {cid: [".jpg", ".json"]}
        assert station.stored() == [cid]
        assert station.vault.pending_count == 0
        assert (tmp_path / "archive" / "station-a" / f"{cid}.jpg").read_bytes() == \
            jpeg_like(5 * MB, seed=99)
    finally:
        station.uplink.stop()
        relay.stop()


def test_relay_down_captures_wait_in_vault_then_delivered(
        site: Any, broker: Any, tmp_path: Path) -> None:
    station = make_station(site, "station-a", broker.port, ack_timeout_s=1.0)
    try:
        ids = [station.capture(jpeg_like(200_000, seed=i)) for i in range(3)]
        # nobody answers: each capture times out and backs off, staying in RAM
        station.wait_for(lambda seen: {e.capture_id for e in seen
                                       if isinstance(e, CaptureRetryScheduled)} >= set(ids))
        assert station.vault.pending_count == 3 and station.stored() == []
        relay = start_relay(site, broker.port, make_core(site, tmp_path))
        try:
            station.wait_stored(ids)
        finally:
            relay.stop()
        assert sorted(archived(tmp_path / "archive")) == sorted(ids)
        assert station.vault.pending_count == 0
    finally:
        station.uplink.stop()


class FailingTwice:
    """A record system that is down for the first two attempts."""

    def __init__(self, root: Path) -> None:
        self.name = "flaky"
        self.inner = DirectorySink(root)
        self.calls = 0
        self.writes = 0

    def store(self, capture: Any) -> str:
        self.calls += 1
        if self.calls <= 2:
            raise SinkError("sink-unavailable")
        self.writes += 1
        return self.inner.store(capture)

    def void(self, device: str, capture_id: str) -> None:
        self.inner.void(device, capture_id)


def test_sink_failing_twice_then_stored_once_after_retries(
        site: Any, broker: Any, tmp_path: Path) -> None:
    sink = FailingTwice(tmp_path / "archive")
    relay = start_relay(site, broker.port, make_core(site, tmp_path, sinks=[sink]))
    station = make_station(site, "station-a", broker.port)
    try:
        cid = station.capture(jpeg_like(300_000, seed=5))
        station.wait_stored([cid])
        retries = [e for e in station.seen if isinstance(e, CaptureRetryScheduled)]
        assert [(e.capture_id, e.why) for e in retries] == [(cid, "retry")] * 2
        assert [e.capture_id for e in station.seen if isinstance(e, CaptureStored)] == [cid]
        assert sink.calls == 3 and sink.writes == 1
        assert archived(tmp_path / "archive") == {cid: [".jpg", ".json"]}
        decisions = [(d["decision"], d["reason"]) for d in relay.core.audit.lines
                     if d.get("source") == "relay"]
        assert decisions == [("retry", "sink-unavailable")] * 2 + [("stored", None)]
    finally:
        station.uplink.stop()
        relay.stop()
