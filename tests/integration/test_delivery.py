"""Delivery over the real broker: stations' uplinks, the relay, the directory sink.

Issue 5's "Must show", part 1: volume, broker and relay outages, failing sinks.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from clinicam.firmware.errors import SinkError
from clinicam.firmware.uplink_events import CaptureRetryScheduled, CaptureStored
from clinicam.relay.directory_sink import DirectorySink
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
