"""The fair inbox: round-robin service, coalesced status, per-station and total bounds."""

from __future__ import annotations

from clinicam.protocol.topics import Topics
from clinicam.relay.inbox import MESSAGE_OVERHEAD, FairInbox

T = Topics()
P = T.prefix
CID = "ab" * 16


def _drain(inbox: FairInbox) -> list[str]:
    out = []
    while (msg := inbox.get(timeout=0)) is not None:
        out.append(msg.topic)
    return out


def test_a_flooder_does_not_delay_another_station_by_more_than_one_turn() -> None:
    inbox = FairInbox(P)
    for i in range(1000):
        inbox.put(T.part("flooder", f"{i:032x}", 0), b"")
    for i in range(3):
        inbox.put(T.part("control", CID, i), b"x")
    order = _drain(inbox)
    control = [n for n, t in enumerate(order) if "/control/" in t]
    assert control == [1, 3, 5]  # interleaved, not behind the 1000
    assert inbox.nbytes == 0 and len(inbox) == 0


def test_status_is_coalesced_to_the_latest_per_station() -> None:
    inbox = FairInbox(P)
    for i in range(50_000):
        inbox.put(T.status("flooder"), b'{"pending":%d}' % i, retained=True)
    inbox.put(T.status("control"), b"{}")
    msgs = []
    while (m := inbox.get(timeout=0)) is not None:
        msgs.append(m)
    assert [m.topic for m in msgs] == [T.status("flooder"), T.status("control")]
    assert msgs[0].payload == b'{"pending":49999}' and msgs[0].retained


def test_zero_byte_messages_are_bounded_per_station_and_counted() -> None:
    inbox = FairInbox(P, station_bytes=100 * (MESSAGE_OVERHEAD + 60), station_messages=10**6)
    accepted = sum(inbox.put(T.part("flooder", f"{i:032x}", 0), b"") for i in range(10_000))
    assert accepted < 200
    assert inbox.take_dropped() == {"flooder": 10_000 - accepted}
    assert inbox.put(T.manifest("control", CID), b"{}")
    assert inbox.take_dropped() == {}


def test_when_the_total_is_full_the_largest_station_makes_room() -> None:
    cost = len(b"x" * 1000) + len(T.part("flooder", f"{0:032x}", 0)) + MESSAGE_OVERHEAD
    inbox = FairInbox(P, station_bytes=10**9, total_bytes=20 * cost)
    for i in range(20):
        assert inbox.put(T.part("flooder", f"{i:032x}", 0), b"x" * 1000)
    assert not inbox.put(T.part("flooder", f"{99:032x}", 0), b"x" * 1000)
    assert inbox.put(T.part("control", CID, 0), b"y" * 1000)
    assert inbox.take_dropped() == {"flooder": 2}
    assert inbox.nbytes <= inbox.total_bytes
    assert T.part("control", CID, 0) in _drain(inbox)


def test_close_wakes_the_worker() -> None:
    inbox = FairInbox(P)
    inbox.close()
    assert inbox.get(timeout=5) is None


def test_events_over_a_stations_rate_are_counted_not_queued() -> None:
    t = [0.0]
    inbox = FairInbox(P, event_rate_per_s=10, event_burst=50, clock=lambda: t[0])
    taken = sum(inbox.put(T.event("noisy"), b"{}") for _ in range(1000))
    assert taken == 50 and inbox.take_dropped_events() == {"noisy": 950}
    assert inbox.put(T.event("quiet"), b"{}")  # another station's bucket is its own
    t[0] += 1.0
    assert sum(inbox.put(T.event("noisy"), b"{}") for _ in range(100)) == 10


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_a_station_over_its_message_rate_is_dropped_before_the_worker_sees_it() -> None:
    """A flood the worker keeps up with still costs the worker (and the GIL the network
    thread needs): past ``station_rate_per_s`` (burst ``station_messages``) it is dropped
    at once, even with its queue empty; another station is not touched."""
    clock = Clock()
    inbox = FairInbox(P, station_messages=100, station_rate_per_s=10.0, clock=clock)
    handled = 0
    for i in range(500):  # the worker takes each one at once: the queue never fills
        if inbox.put(T.part("flooder", f"{i:032x}", 100_000 + i), b""):
            handled += inbox.get(timeout=0) is not None
    assert handled == 100 and inbox.take_dropped() == {"flooder": 400}
    assert inbox.put(T.part("control", CID, 0), b"x")  # its own budget
    assert inbox.put(T.status("flooder"), b"{}")  # statuses are coalesced instead
    clock.t += 1.0
    accepted = sum(inbox.put(T.part("flooder", f"{i:032x}", 0), b"") for i in range(50))
    assert accepted == 10  # ten a second after the burst
