from __future__ import annotations

import pytest
from clinicam.relay.partition import Partition, device_bucket

DEVICES = [f"station-{i:03d}" for i in range(200)]


def test_bucket_is_stable_known_answer() -> None:
    # SHA-256 based: the same in every process (Python's hash() is not).
    assert [device_bucket(d, 4) for d in ("station-a", "station-b")] == [
        device_bucket("station-a", 4),
        device_bucket("station-b", 4),
    ]
    import hashlib

    expected = int.from_bytes(hashlib.sha256(b"station-a").digest()[:8], "big") % 3
    assert device_bucket("station-a", 3) == expected


def test_workers_split_every_device_exactly_once() -> None:
    workers = [Partition(k, 3) for k in range(3)]
    for d in DEVICES:
        assert sum(w.owns(d) for w in workers) == 1
    assert all(any(w.owns(d) for d in DEVICES) for w in workers)


def test_standby_covers_dead_workers_share() -> None:
    standby = Partition(worker=1, workers=2, standby_for=(0,))
    assert all(standby.owns(d) for d in DEVICES)


def test_bad_partition_refused() -> None:
    with pytest.raises(ValueError):
        Partition(worker=2, workers=2)
    with pytest.raises(ValueError):
        Partition(worker=0, workers=2, standby_for=(5,))
