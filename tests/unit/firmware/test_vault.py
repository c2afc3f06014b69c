"""The RAM vault: capacity, TTL, send order, retry, zeroization and concurrency."""

from __future__ import annotations

import ctypes
import threading
from typing import Any

import pytest
from clinicam.common.errors import VaultFull
from clinicam.common.zeroize import is_zero
from clinicam.firmware.capture.vault import Vault
from clinicam.protocol.sealing import SealedCapture, open_capture


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def capture(n: int, size: int = 1000) -> SealedCapture:
    parts = [bytearray(b"\xa5" * size), bytearray(b"\x5a" * (size // 2))]
    return SealedCapture(f"{n:032x}", b'{"m":{},"sig":""}', parts, sum(map(len, parts)))


def test_put_take_ack_in_order() -> None:
    v = Vault(clock=Clock())
    for n in range(3):
        v.put(capture(n))
    assert v.pending_count == 3 and v.ids() == [f"{n:032x}" for n in range(3)]
    assert v.pending_bytes == 3 * (1500 + 17)
    first = v.take_next()
    second = v.take_next()
    assert first is not None and second is not None
    assert (first.capture_id, second.capture_id) == (f"{0:032x}", f"{1:032x}")
    assert v.ack(first.capture_id) is True and v.ack(first.capture_id) is False
    assert all(is_zero(p) for p in first.parts)
    assert not any(is_zero(p) for p in second.parts)  # control: held ones untouched
    assert v.pending_count == 2 and v.pending_bytes == 2 * 1517


def test_in_flight_is_not_taken_twice_and_retry_waits() -> None:
    clock = Clock()
    v = Vault(clock=clock)
    v.put(capture(1))
    c = v.take_next()
    assert c is not None and v.take_next() is None
    assert v.retry(c.capture_id, clock.t + 30) is True
    assert v.take_next() is None and v.next_due() == clock.t + 30
    clock.t += 30
    again = v.take_next()
    assert again is c
    assert v.retry("f" * 32, 0) is False


def test_requeue_in_flight_after_disconnect() -> None:
    v = Vault(clock=Clock())
    v.put(capture(1))
    v.put(capture(2))
    assert v.take_next() is not None and v.take_next() is not None
    assert v.requeue_in_flight() == [f"{1:032x}", f"{2:032x}"]
    assert v.take_next() is not None


def test_full_by_count_refuses_and_keeps_the_old() -> None:
    v = Vault(max_captures=2, clock=Clock())
    v.put(capture(1))
    v.put(capture(2))
    with pytest.raises(VaultFull, match="no capture was dropped"):
        v.put(capture(3))
    assert v.ids() == [f"{1:032x}", f"{2:032x}"]


def test_full_by_bytes_refuses() -> None:
    v = Vault(max_bytes=2 * 1517, clock=Clock())
    v.put(capture(1))
    v.put(capture(2))
    with pytest.raises(VaultFull):
        v.put(capture(3, size=2))
    assert v.ack(f"{1:032x}")
    v.put(capture(3))


def test_duplicate_id_refused() -> None:
    v = Vault(clock=Clock())
    v.put(capture(1))
    with pytest.raises(ValueError, match="already"):
        v.put(capture(1))


def test_ttl_expires_and_zeroes() -> None:
    clock = Clock()
    v = Vault(ttl_s=60, clock=clock)
    old = capture(1)
    v.put(old)
    clock.t += 30
    v.put(capture(2))
    assert v.take_next() is old  # in flight expires too
    assert v.expire() == []
    clock.t += 30
    assert v.expire() == [f"{1:032x}"]
    assert all(is_zero(p) for p in old.parts)
    assert v.ids() == [f"{2:032x}"]


def test_remove_pending_for_void() -> None:
    v = Vault(clock=Clock())
    c = capture(1)
    v.put(c)
    assert v.remove(c.capture_id) and v.pending_count == 0
    assert all(is_zero(p) for p in c.parts)


def test_wipe_zeroes_every_buffer_and_reports() -> None:
    v = Vault(clock=Clock())
    held = [capture(n, size=50_000) for n in range(5)]
    for c in held:
        v.put(c)
    v.take_next()
    assert not any(is_zero(p) for c in held for p in c.parts)  # positive control
    report = v.wipe()
    assert report.capture_ids == tuple(c.capture_id for c in held)
    assert report.count == 5 and report.bytes == 5 * (75_000 + 17)
    assert all(is_zero(p) for c in held for p in c.parts)
    assert v.pending_count == 0 and v.pending_bytes == 0 and v.take_next() is None


def test_limits_must_be_positive() -> None:
    with pytest.raises(ValueError):
        Vault(max_captures=0)


def test_concurrent_put_take_ack_keep_counts_exact() -> None:
    v = Vault(max_captures=10_000, max_bytes=10**9)
    per_thread, producers = 200, 4
    acked: list[str] = []
    lock = threading.Lock()
    done = threading.Event()

    def produce(k: int) -> None:
        for n in range(per_thread):
            v.put(capture(k * per_thread + n, size=64))

    def consume() -> None:
        while not (done.is_set() and v.pending_count == 0):
            c = v.take_next()
            if c is not None and v.ack(c.capture_id):
                with lock:
                    acked.append(c.capture_id)

    consumers = [threading.Thread(target=consume) for _ in range(3)]
    threads = [threading.Thread(target=produce, args=(k,)) for k in range(producers)]
    for t in consumers + threads:
        t.start()
    for t in threads:
        t.join()
    done.set()
    for t in consumers:
        t.join()
    assert len(acked) == len(set(acked)) == per_thread * producers
    assert v.pending_count == 0 and v.pending_bytes == 0


# -- the arena: captures sealed with Sealer(buffers=vault) ---------------------------------


def arena_capture(v: Vault, n: int, sizes: tuple[int, ...] = (300, 5000, 2000)) -> SealedCapture:
    """A capture laid out as the sealer lays one out: parts back to back in one buffer."""
    storage = v.allocate(sum(sizes))
    parts, offset = [], 0
    for size in sizes:
        parts.append(storage[offset:offset + size])
        parts[-1][:] = bytes([n % 250 + 1]) * size
        offset += size
    return SealedCapture(f"{n:032x}", b'{"m":{},"sig":""}', parts, sum(sizes), storage)


def address(buf: memoryview) -> int:
    return ctypes.addressof((ctypes.c_char * len(buf)).from_buffer(buf))


def test_allocate_hands_out_arena_memory_reused_after_ack() -> None:
    v = Vault(clock=Clock())
    first = arena_capture(v, 1)
    v.put(first)
    assert v.in_arena(first.storage)
    assert first.storage is not None
    where = address(first.storage)
    assert v.ack(first.capture_id)
    assert all(is_zero(p) for p in first.parts) and v.in_use == 0
    second = arena_capture(v, 2)
    assert second.storage is not None and address(second.storage) == where


def test_wipe_zeroes_arena_and_own_buffer_captures_alike() -> None:
    v = Vault(clock=Clock())
    mine = [arena_capture(v, n) for n in range(5)]
    theirs = [capture(n) for n in range(5, 8)]
    for c in mine + theirs:
        v.put(c)
    assert not any(is_zero(p) for c in mine + theirs for p in c.parts)  # positive control
    report = v.wipe()
    assert report.count == 8 and v.pending_bytes == 0
    assert all(is_zero(p) for c in mine + theirs for p in c.parts)
    assert v.in_use == 0


def test_wipe_leaves_a_capture_being_sealed_to_its_owner() -> None:
    v = Vault(clock=Clock())
    v.put(arena_capture(v, 1))
    sealing = arena_capture(v, 2)  # allocated, not yet put
    v.wipe()
    assert not any(is_zero(p) for p in sealing.parts)  # the station discards it (guard.wiped)
    v.discard(sealing)
    assert all(is_zero(p) for p in sealing.parts)
    assert v.in_use == 0
    a, b = arena_capture(v, 3), arena_capture(v, 4)  # the books are straight: no overlap
    assert a.storage is not None and b.storage is not None
    assert abs(address(a.storage) - address(b.storage)) >= len(a.storage)


def test_refused_capture_is_discarded_back_into_the_arena() -> None:
    v = Vault(max_captures=1, clock=Clock())
    v.put(arena_capture(v, 1))
    extra = arena_capture(v, 2)
    with pytest.raises(VaultFull):
        v.put(extra)
    v.discard(extra)
    assert all(is_zero(p) for p in extra.parts) and v.pending_count == 1
    assert v.in_use == -(-7300 // 64) * 64  # only the held one


def test_no_room_in_the_arena_falls_back_to_the_heap() -> None:
    v = Vault(max_captures=1, max_bytes=4096, clock=Clock())
    big = v.allocate(1 << 20)
    assert len(big) == 1 << 20 and is_zero(big)
    assert v.in_use == 0 and not v.in_arena(big)
    big[:4] = b"\xff\xff\xff\xff"
    v.release(big)
    assert is_zero(big)


def test_what_the_vault_hands_the_uplink_is_what_the_relay_opens(
        make_sealer: Any, site_ca: Any, device: Any, recipients: Any, pki: Any) -> None:
    """The station's side of the sealed format, read by the relay's ``open_capture``."""
    v = Vault(clock=Clock())
    image = bytearray(b"\xff\xd8" + bytes(range(256)) * 40)
    sealed = make_sealer(buffers=v, chunk_size=4096).seal(image, {"patient": {"id": "P-1"}})
    v.put(sealed)
    out = v.take_next()
    assert out is sealed and v.in_arena(out.storage)
    opened = open_capture(out.manifest, {i: bytes(p) for i, p in enumerate(out.parts)},
                          topic_device=device.id, topic_capture_id=out.capture_id,
                          ca_cert=site_ca.cert, recipients=[recipients["X25519"]], now=pki.NOW)
    assert opened.image == b"\xff\xd8" + bytes(range(256)) * 40
    assert opened.metadata["patient"] == {"id": "P-1"}
    assert is_zero(image)  # the plaintext was zeroed by the sealer
