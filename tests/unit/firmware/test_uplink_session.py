"""The delivery state machine, driven by hand: no broker, no threads, no sleeps."""

from __future__ import annotations

import random

import pytest
from clinicam.firmware.capture.vault import Vault
from clinicam.firmware.uplink.delivery import DeliveryEngine, publish_packet_size
from clinicam.firmware.workflow.events import (
    CaptureRejected,
    CaptureRetryScheduled,
    CaptureSent,
    CaptureStored,
    FaultReported,
)
from clinicam.protocol.acks import Ack
from clinicam.protocol.sealing import SealedCapture
from clinicam.protocol.topics import Topics

T = Topics()
CID1 = f"{1:032x}"


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


class Harness:
    def __init__(self, caps: list[SealedCapture], **kw: object) -> None:
        self.clock = Clock()
        self.vault = Vault(clock=self.clock)
        for c in caps:
            self.vault.put(c)
        self.sent: list[tuple[int, str, tuple[str, bytes] | None]] = []
        self.events: list[object] = []
        self.connected = True
        self.engine = DeliveryEngine(vault=self.vault, device="station-a", publish=self.publish,
                                     emit=self.events.append, clock=self.clock,
                                     rng=random.Random(7), **kw)  # type: ignore[arg-type]

    def publish(self, topic: str, payload: bytes | bytearray,
                response: tuple[str, bytes] | None) -> int:
        if not self.connected:
            raise ConnectionError("down")
        self.sent.append((len(self.sent) + 1, topic, response))
        return len(self.sent)

    def inflight(self) -> list[int]:
        return sorted(self.engine.inflight)

    def ack_all(self, code: int = 0) -> None:
        while self.engine.inflight:
            self.engine.puback(min(self.engine.inflight), code)


def cap(n: int, parts: int = 3, size: int = 10) -> SealedCapture:
    return SealedCapture(f"{n:032x}", b'{"m":1}', [bytearray(b"p" * size) for _ in range(parts)],
                         parts * size)


def ack(cid: str, status: str, reason: str | None = None, ref: dict | None = None) -> bytes:
    """An ack as the relay builds it (the protocol's own builder, not a copy of the format)."""
    return Ack("station-a", cid, status, reason, ref).payload()


def test_window_is_min_of_receive_maximum_and_configured() -> None:
    h = Harness([cap(1, parts=20)], max_inflight=8)
    h.engine.connected_with(receive_maximum=3, max_packet=None)
    assert len(h.inflight()) == 3
    h.engine.puback(1, 0)
    assert len(h.inflight()) == 3 and len(h.sent) == 4


def test_manifest_last_with_response_topic_then_stored() -> None:
    h = Harness([cap(1)])
    h.engine.connected_with(20, None)
    h.ack_all()
    topics = [t for _, t, _ in h.sent]
    assert topics == [T.part("station-a", CID1, i) for i in range(3)] + [T.manifest("station-a", CID1)]
    assert h.sent[-1][2] == (T.ack("station-a"), bytes.fromhex(CID1))
    parsed = [T.parse(t) for t in topics]  # what the relay understands of them
    assert [(p.device, p.kind, p.capture_id, p.part) for p in parsed] == [
        *(("station-a", "part", f"{1:032x}", i) for i in range(3)),
        ("station-a", "manifest", f"{1:032x}", None)]
    assert CaptureSent(f"{1:032x}") in h.events
    h.engine.ack(ack(f"{1:032x}", "stored", ref={"dir": "x"}))
    assert h.vault.pending_count == 0
    assert h.events[-1] == CaptureStored(f"{1:032x}", {"dir": "x"})


def test_denied_puback_is_not_delivery_and_manifest_never_sent() -> None:
    h = Harness([cap(1)])
    h.engine.connected_with(20, None)
    h.engine.puback(1, 135)  # not authorized
    h.ack_all()
    assert not any(t.endswith("manifest") for _, t, _ in h.sent)
    assert isinstance(h.events[-1], CaptureRetryScheduled)
    assert h.events[-1].why == "publish-refused"


def test_rejected_removes_with_reason() -> None:
    h = Harness([cap(1)])
    h.engine.connected_with(20, None)
    h.ack_all()
    h.engine.ack(ack(f"{1:032x}", "rejected", reason="identity"))
    assert h.vault.pending_count == 0
    assert h.events[-1] == CaptureRejected(f"{1:032x}", "identity")


def test_ack_for_unknown_capture_or_malformed_is_ignored() -> None:
    h = Harness([cap(1)])
    h.engine.connected_with(20, None)
    h.ack_all()
    h.engine.ack(ack(f"{2:032x}", "stored"))
    h.engine.ack(b"not json")
    h.engine.ack(ack(f"{1:032x}", "stored", reason="free text with PHI"))
    assert h.vault.ids() == [f"{1:032x}"]


def test_timeout_then_backoff_resends_whole_capture() -> None:
    h = Harness([cap(1)], ack_timeout_s=10, retry_min_s=4, retry_max_s=100)
    h.engine.connected_with(20, None)
    h.ack_all()
    h.clock.t = 10.0
    wait = h.engine.tick()
    retry = h.events[-1]
    assert isinstance(retry, CaptureRetryScheduled) and retry.why == "ack-timeout"
    assert 2.0 <= retry.delay_s <= 4.0 and wait == pytest.approx(retry.delay_s)
    before = len(h.sent)
    h.clock.t += retry.delay_s
    h.engine.tick()
    h.ack_all()
    assert len(h.sent) - before == 4  # three parts and the manifest again


def test_backoff_grows_exponentially_with_jitter_and_ceiling() -> None:
    h = Harness([cap(1)], ack_timeout_s=1, retry_min_s=2, retry_max_s=10)
    h.engine.connected_with(20, None)
    delays = []
    for _ in range(6):
        h.ack_all()
        h.engine.ack(ack(f"{1:032x}", "retry", reason="sink-unavailable"))
        delays.append(h.events[-1].delay_s)  # type: ignore[attr-defined]
        h.clock.t += 1000
        h.engine.tick()
    ceilings = [2, 4, 8, 10, 10, 10]
    assert all(c / 2 <= d <= c for d, c in zip(delays, ceilings, strict=True))


def test_disconnect_mid_capture_puts_it_back_and_reconnect_resends() -> None:
    h = Harness([cap(1, parts=5)], max_inflight=2)
    h.engine.connected_with(20, None)
    h.engine.puback(1, 0)
    h.connected = False
    h.engine.disconnected()
    assert h.vault.next_due() == h.clock.t  # due again at once, whole
    h.connected = True
    h.engine.connected_with(20, None)
    h.ack_all()
    h.engine.ack(ack(f"{1:032x}", "stored"))
    assert h.vault.pending_count == 0


def test_part_too_big_for_broker_is_config_error_not_loop() -> None:
    h = Harness([cap(1, size=500), cap(2, parts=1)])
    limit = publish_packet_size(T.part("station-a", CID1, 1), 500) - 1
    h.engine.connected_with(20, max_packet=limit)
    assert FaultReported("too-large", f"{1:032x}") in h.events
    assert all(f"{1:032x}" not in t for _, t, _ in h.sent)
    h.ack_all()
    assert h.engine.misconfigured
    for _ in range(3):
        h.clock.t += 1000
        h.engine.tick()
    assert sum(isinstance(e, FaultReported) for e in h.events) == 1
    # a connection with a larger limit sends it
    h.engine.disconnected()
    h.engine.connected_with(20, max_packet=None)
    h.ack_all()
    assert any(f"{1:032x}" in t for _, t, _ in h.sent)


def test_wipe_mid_send_never_publishes_the_manifest() -> None:
    h = Harness([cap(1, parts=4)], max_inflight=2)
    h.engine.connected_with(20, None)
    h.vault.wipe()  # from another thread, any time
    h.ack_all()
    assert not any(t.endswith("manifest") for _, t, _ in h.sent)
    h.engine.reset()  # what Uplink.wiped() posts
    assert h.engine.tick() is None


def test_tick_reports_the_next_deadline() -> None:
    h = Harness([cap(1)], ack_timeout_s=30)
    h.engine.connected_with(20, None)
    h.ack_all()
    h.clock.t = 10.0
    assert h.engine.tick() == pytest.approx(20.0)


def test_held_without_relay_then_resend_now_when_one_returns() -> None:
    h = Harness([cap(1)], ack_timeout_s=60, retry_min_s=30, retry_max_s=100)
    h.engine.connected_with(20, None)
    h.ack_all()  # capture 1 sent whole, awaiting its ack
    h.engine.hold(True)  # the relay went away
    h.vault.put(cap(2))
    h.engine.pump()
    assert {t.split("/")[4] for _, t, _ in h.sent} == {f"{1:032x}"}  # capture 2 not started while held
    assert h.engine.tick() == pytest.approx(60.0)  # no busy loop on the due capture 2
    h.clock.t = 5.0
    h.engine.hold(False)
    due = h.engine.resend_now()  # back: 1 again at once, not after 55 s more
    h.ack_all()
    assert due == [f"{1:032x}"]
    assert sum(t.endswith(f"{2:032x}/manifest") for _, t, _ in h.sent) == 1  # and 2 goes too
    assert sum(t.endswith(f"{1:032x}/manifest") for _, t, _ in h.sent) == 2
    h.engine.ack(ack(f"{1:032x}", "stored", None, {"a": "x"}))  # a late ack is still taken
    assert isinstance(h.events[-1], CaptureStored)
