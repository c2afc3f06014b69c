from __future__ import annotations

import pytest
from clinicam.protocol.reasons import OpenError
from clinicam.relay.reassembly import (
    CAPTURE_OVERHEAD,
    PART_OVERHEAD,
    CapacityExceeded,
    Reassembler,
)

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
    assert r.buffered_bytes == CAPTURE_OVERHEAD + PART_OVERHEAD + 3


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


ONE = CAPTURE_OVERHEAD + PART_OVERHEAD  # a capture with one part, payload aside


def test_byte_bound_drops_and_counts() -> None:
    r = Reassembler(max_bytes=ONE + 10)
    r.add_part("station-a", CID, 0, b"x" * 8)
    with pytest.raises(CapacityExceeded):
        r.add_part("station-a", CID, 1, b"y" * 8)
    assert r.dropped_overflow == 1
    assert r.buffered_bytes == 0  # the capture that overflowed is dropped whole


def test_zero_byte_parts_are_charged_and_bounded_per_station() -> None:
    r = Reassembler(max_bytes=10**6, max_station_bytes=100 * PART_OVERHEAD)
    refused = 0
    for i in range(1000):
        try:
            r.add_part("flooder", f"{i:032x}", 0, b"")
        except CapacityExceeded:
            refused += 1
    assert r.station_bytes("flooder") <= 100 * PART_OVERHEAD
    assert refused > 900
    # the flooder's budget is its own: another station still gets in
    r.add_part("control", CID, 0, b"abc")
    assert r.station_bytes("control") == ONE + 3


def test_full_buffer_evicts_the_hog_for_a_station_under_its_fair_share() -> None:
    clock = Clock()
    r = Reassembler(max_bytes=10 * ONE, clock=clock)
    for i in range(10):
        clock.t += 1
        r.add_part("flooder", f"{i:032x}", 0, b"")
    with pytest.raises(CapacityExceeded):  # the hog itself is refused
        r.add_part("flooder", "ff" * 16, 0, b"")
    r.add_part("control", CID, 0, b"")
    evicted = r.take_evicted()
    assert [(d.device, d.capture_id) for d in evicted] == [("flooder", f"{0:032x}")]
    assert r.dropped_evicted == 1 and r.take_evicted() == []
    assert r.buffered_bytes <= r.max_bytes


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


def test_manifest_with_parts_missing_past_the_grace_is_dropped_early() -> None:
    clock = Clock()
    r = Reassembler(max_age_s=300, manifest_grace_s=15, clock=clock)
    r.add_part("station-a", CID, 0, b"a")
    r.add_manifest("station-a", CID, b"m", parts=3)  # part 1 and 2 were lost on the way
    r.add_part("station-b", CID, 0, b"b")  # no manifest yet: waits for max_age_s
    clock.t += 10
    assert r.sweep() == []
    clock.t += 6
    (dropped,) = r.sweep()
    assert (dropped.device, dropped.had_manifest) == ("station-a", True)
    assert len(r) == 1
