"""Stop, drain, power and tamper (issue 6, "Must show" 3; DESIGN §3.4).

- SIGTERM drains: a press during the drain is refused, pending captures keep being
  delivered (the relay comes back during the drain), then the station exits 0 with
  nothing left; with the broker down the drain ends after ``stop_drain_s`` and the
  wipe reports the undelivered ids.
- Battery-critical and tamper wipe the vault and the session at once; the undelivered
  ids go out on the event topic while connected (the broker is up, the relay is not,
  so the captures are still pending).
- Loss of mains closes the session and warns, and pending captures are still delivered.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator

import pytest
from station_kit import FAST_UPLINK, Setup, Station, Watcher, ids, opening, press

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def module_setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    with Setup(tmp_path_factory.mktemp("e2e-power"), "e2e-power") as s:
        yield s


@pytest.fixture
def setup(module_setup: Setup) -> Setup:
    module_setup.ensure_running()
    return module_setup


@pytest.fixture
def watcher(setup: Setup) -> Iterator[Watcher]:
    w = Watcher(setup)
    yield w
    w.close()


def pending_session(setup: Setup, device: str, seed: int, n: int, after: list[dict[str, object]],
                    **overrides: dict[str, object]) -> Station:
    """A station with ``n`` captures sealed (and not acknowledged), then ``after``."""
    steps = [*opening(ids(seed)), *press(n), {"wait_for": {"sealed": n}, "timeout_s": 60}, *after]
    return setup.station(device, steps, uplink=FAST_UPLINK, **overrides)


def test_sigterm_with_the_broker_up_refuses_new_captures_delivers_pending_ones_then_exits_0(setup: Setup) -> None:
    device = "e2e-drain"
    setup.stop_relay()
    late = [{"wait_s": 4.0}, {"mark": "late press"}, *press()]  # SIGTERM lands in these 4 s
    station = pending_session(setup, device, 4, 3, late, workflow={"stop_drain_s": 60.0})
    sealed = station.wait_captures("sealed", 3)
    station.send(signal.SIGTERM)
    station.wait(lambda e: e.get("kind") == "drain")
    assert station.wait(lambda e: e.get("kind") == "state" and e.get("draining"))["session_open"] is False
    station.wait_script()
    events = station.events
    drain_at = next(i for i, e in enumerate(events) if e.get("kind") == "drain")
    late_at = next(i for i, e in enumerate(events) if e.get("mark") == "late press")
    assert drain_at < late_at, "premise: the stop began before the late press"
    assert [e["pattern"] for e in events[late_at:] if e.get("kind") == "signal"] == ["fault"]  # refused
    assert station.captures("sealed") == sealed and station.captures("stored") == []
    setup.ensure_running()  # the relay returns while the station drains
    assert station.proc.wait(60) == 0
    exit_event = station.exit_event()
    assert (exit_event["trigger"], exit_event["count"], exit_event["capture_ids"]) == ("sigterm", 0, [])
    assert sorted(station.captures("stored")) == sorted(sealed)
    assert setup.stored_ids(device) == set(sealed)


def test_sigterm_with_the_broker_down_wipes_after_the_drain_and_exits_0(setup: Setup) -> None:
    device = "e2e-drain-offline"
    assert setup.broker is not None
    setup.stop_relay()
    setup.broker.stop()
    station = pending_session(setup, device, 5, 2, [], workflow={"stop_drain_s": 2.0})
    station.wait_script()
    sealed = station.captures("sealed")
    assert station.terminate() == 0
    exit_event = station.exit_event()
    assert exit_event["trigger"] == "sigterm"
    assert (exit_event["count"], sorted(exit_event["capture_ids"])) == (2, sorted(sealed))
    assert station.of("drain") and station.captures("stored") == []


@pytest.mark.parametrize(("edge", "reason"), [("battery_critical", "battery"), ("tamper", "tamper")])
def test_battery_or_tamper_wipes_at_once_and_reports_the_undelivered_ids(
    setup: Setup, watcher: Watcher, edge: str, reason: str
) -> None:
    device = f"e2e-{edge.replace('_', '-')}"
    setup.stop_relay()  # broker up, relay down: the captures stay pending
    after = [{"mark": "edge"}, {"power": edge}, *press(), {"wait_s": 0.5}]
    station = pending_session(setup, device, 6, 2, after)
    station.wait_script()
    sealed = station.captures("sealed")
    (wipe,) = station.of("wipe")
    assert sorted(wipe["capture_ids"]) == sorted(sealed) and wipe["count"] == 2
    (wiped,) = watcher.wait(lambda: watcher.events(device, "wiped"))
    assert (wiped["reason"], wiped["count"], sorted(wiped["capture_ids"])) == (reason, 2, sorted(sealed))
    edge_at = next(i for i, e in enumerate(station.events) if e.get("mark") == "edge")
    later = station.events[edge_at:]
    assert [e["state"] for e in later if e.get("kind") == "state"][-1] == "wiping"
    assert not [e for e in later if e.get("kind") == "state" and e.get("session_open")]
    assert [e["pattern"] for e in later if e.get("kind") == "signal"][-1] == "wiping"  # the press after it
    assert not [e for e in later if e.get("status") == "sealed"]
    watcher.wait(lambda: [s for s in watcher.statuses(device) if s.get("pending") == 0])
    assert station.terminate() == 0
    assert station.exit_event()["capture_ids"] == []  # nothing was left for the stop
    stop = watcher.wait(lambda: [e for e in watcher.events(device, "wiped") if e.get("reason") == "sigterm"])
    assert stop[0]["count"] == 0
    assert [e["reason"] for e in watcher.events(device, "wiped")] == [reason, "sigterm"]  # one wipe per trigger


def test_mains_lost_closes_the_session_and_pending_captures_are_still_delivered(
    setup: Setup, watcher: Watcher
) -> None:
    device = "e2e-mains"
    setup.stop_relay()
    after = [{"mark": "unplugged"}, {"power": "mains_lost"}, *press(), {"wait_s": 0.5}]
    station = pending_session(setup, device, 7, 2, after)
    station.wait_script()
    sealed = station.captures("sealed")
    unplugged = next(i for i, e in enumerate(station.events) if e.get("mark") == "unplugged")
    later = station.events[unplugged:]
    states = [e for e in later if e.get("kind") == "state"]
    assert states and (states[-1]["state"], states[-1]["session_open"]) == ("operator", False)
    assert [e["pattern"] for e in later if e.get("kind") == "signal"][-1] == "no_patient"
    assert not [e for e in later if e.get("status") == "sealed"] and not station.of("wipe")
    setup.ensure_running()  # the relay returns: the pending captures were kept
    assert sorted(station.wait_captures("stored", 2)) == sorted(sealed)
    assert setup.stored_ids(device) == set(sealed)
    watcher.wait(lambda: watcher.events(device, "mains-lost"))
    closed = watcher.wait(lambda: [e for e in watcher.events(device, "session-closed")
                                   if e.get("reason") == "mains-lost"])
    assert closed[0]["count"] == 2
    assert station.terminate() == 0
