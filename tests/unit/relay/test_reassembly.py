from __future__ import annotations

import pytest
from clinicam.protocol.reasons import OpenError
from clinicam.relay.reassembly import CapacityExceeded, Reassembler

CID = "ab" * 16


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_parts_before_and_after_manifest_complete_once() -> None:
    r = Reassembler()
    assert r.add_part("station-a", CID, 2, b"c") is None
    assert r.add_manifest("station-a", CID, b"{m}", parts=3) is None
    assert r.add_part("station-a", CID, 0, b"a") is None
    done = r.add_part("station-a", CID, 1, b"b")
    assert done is not None
    assert done.parts == {0: b"a", 1: b"b", 2: b"c"}
    assert done.manifest == b"{m}"
    assert len(r) == 0 and r.buffered_bytes == 0


def test_resent_part_replaces_without_double_counting() -> None:
    r = Reassembler()
    r.add_part("station-a", CID, 0, b"xyz")
    r.add_part("station-a", CID, 0, b"xyz")
    assert r.buffered_bytes == 3


def test_same_capture_id_from_two_devices_is_two_captures() -> None:
    r = Reassembler()
    r.add_part("station-a", CID, 0, b"a")
    assert r.add_manifest("station-b", CID, b"m", parts=1) is None
    assert len(r) == 2


def test_oversize_part_is_too_large() -> None:
    r = Reassembler(max_part_bytes=4)
    with pytest.raises(OpenError) as exc:
        r.add_part("station-a", CID, 0, b"12345")
    assert exc.value.reason == "too-large"


def test_index_beyond_manifest_is_parts() -> None:
    r = Reassembler()
    r.add_manifest("station-a", CID, b"m", parts=2)
    with pytest.raises(OpenError) as exc:
        r.add_part("station-a", CID, 2, b"x")
    assert exc.value.reason == "parts"
    assert len(r) == 0


def test_manifest_fewer_parts_than_received_is_parts() -> None:
    r = Reassembler()
    r.add_part("station-a", CID, 5, b"x")
    with pytest.raises(OpenError) as exc:
        r.add_manifest("station-a", CID, b"m", parts=3)
    assert exc.value.reason == "parts"


def test_byte_bound_drops_and_counts() -> None:
    r = Reassembler(max_bytes=10)
    r.add_part("station-a", CID, 0, b"x" * 8)
    with pytest.raises(CapacityExceeded):
        r.add_part("station-b", CID, 0, b"y" * 8)
    assert r.dropped_overflow == 1
    assert r.buffered_bytes == 8


def test_age_bound_drops_and_counts() -> None:
    clock = Clock()
    r = Reassembler(max_age_s=60, clock=clock)
    r.add_manifest("station-a", CID, b"m", parts=2)
    clock.t += 30
    r.add_part("station-b", CID, 0, b"x")
    clock.t += 31
    dropped = r.sweep()
    assert [(d.device, d.had_manifest) for d in dropped] == [("station-a", True)]
    assert r.dropped_timeout == 1 and len(r) == 1
