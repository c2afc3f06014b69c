"""The audit trail never blocks delivery and never silently misses events (issue 13 §3).

- An unwritable audit log: every capture is still acknowledged ``stored``; the relay
  reports the fault (health in ``status.json``) and writes the kept lines once the log
  is writable again.
- Retained capture parts and events are broker replays: the relay ignores them (and
  says so once), while the same event published normally is audited.
- A station's wipe report published while no relay is connected reaches the audit log
  once the relay returns: with ``session_expiry_s`` set, the relay's persistent session
  makes the broker keep it, even though the station process (SIGTERM: drain, wipe,
  report, exit) is long gone. (Off by default: see docs/interfaces.md on Mosquitto 2.0.11.)
- With the default clean relay session, the station's outbox on its persistent
  partition carries the wipe report over a station restart to the relay (exactly once;
  a RAM-only station is the control that loses it).
- A station keeps an event until the relay acknowledges it, across a broker restart.
"""

from __future__ import annotations

import json
import logging
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from clinicam.protocol.topics import Topics
from clinicam.relay.audit import AuditLog
from clinicam.relay.records import StatusBoard
from station_kit import FAST_UPLINK, Setup, ids, opening, press, wait_until
from test_delivery_support import eventually, jpeg_like, make_core, make_station, start_relay

T = Topics()
CID = "5e" * 16


def test_unwritable_audit_log_never_withholds_acks_and_is_written_later(
        site: Any, broker: Any, tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    path.mkdir()  # a directory where the log should be: every write fails
    board = StatusBoard(tmp_path / "status.json")
    core = make_core(site, tmp_path, audit=AuditLog(path), board=board)
    relay = start_relay(site, broker.port, core)
    station = make_station(site, "station-a", broker.port)
    try:
        taken = [station.capture(jpeg_like(150_000, seed=i)) for i in range(3)]
        station.wait_stored(taken)  # acked although nothing could be audited
        eventually(lambda: not json.loads((tmp_path / "status.json").read_text())["ok"])
        health = json.loads((tmp_path / "status.json").read_text())["health"]["audit"]
        assert (health["ok"], health["fault"]) == (False, "IsADirectoryError")
        assert health["pending_lines"] >= 3
        path.rmdir()  # the admin fixes it
        eventually(lambda: path.is_file() and core.audit.healthy)
        eventually(lambda: json.loads((tmp_path / "status.json").read_text())["ok"])
    finally:
        station.uplink.stop()
        relay.stop()
    lines = [json.loads(x) for x in path.read_text().splitlines()]
    assert sorted(x["capture_id"] for x in lines if x.get("decision") == "stored") == sorted(taken)


def test_retained_parts_and_events_are_not_replayed_to_the_relay(
        site: Any, broker: Any, tmp_path: Path, mqtt_client: Any) -> None:
    flooder = mqtt_client(site.device("station-b"))
    event = {"event": "wiped", "at": "2026-01-01T00:00:00.000Z", "capture_ids": [CID], "count": 1}
    for n in range(2):  # two retained events on the topic: the broker keeps the last
        assert flooder.probe.publish(T.event("station-b"), json.dumps({**event, "count": n}).encode(),
                                     retain=True).value < 0x80  # 0x10: no subscriber yet
    assert flooder.probe.publish(T.part("station-b", CID, 0), b"x" * 100, retain=True).value < 0x80
    core = make_core(site, tmp_path)
    for n in range(2):  # and again after a relay restart
        relay = start_relay(site, broker.port, core)
        try:
            live = {**event, "event": "session-opened", "capture_ids": []}
            assert flooder.probe.publish(T.event("station-b"), json.dumps(live).encode()).value == 0
            eventually(lambda n=n: sum(x.get("event") == "session-opened" for x in core.audit.lines) > n)
        finally:
            relay.stop()
    assert not [x for x in core.audit.lines if x.get("event") == "wiped"]
    assert sum(x.get("event") == "session-opened" for x in core.audit.lines) == 2  # positive control
    assert core.reassembler.buffered_bytes == 0  # the retained part was not taken either


def test_core_ignores_retained_captures_and_events_that_still_arrive(
        site: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Behind a broker without Retain Handling, the flag itself is checked (said once)."""
    caplog.set_level(logging.WARNING, logger="clinicam.relay")
    core = make_core(site, tmp_path)
    event = json.dumps({"event": "wiped", "at": "2026-01-01T00:00:00.000Z", "count": 0}).encode()
    for _ in range(3):
        assert core.handle(T.event("station-b"), event, retained=True) == []
        assert core.handle(T.part("station-b", CID, 0), b"x", retained=True) == []
    assert core.handle(T.status("station-b"), b'{"state":"online"}', retained=True) == []
    assert core.board.counters["ignored-retained-event"] == 3
    assert core.board.counters["ignored-retained-part"] == 3
    assert "station-b" in core.board.stations  # a retained status is the latest status
    assert not core.audit.lines and core.reassembler.buffered_bytes == 0
    core.handle(T.event("station-b"), event)  # positive control: not retained, audited
    assert [x["event"] for x in core.audit.lines] == ["wiped"]
    said = [r for r in caplog.records if "ignoring retained" in r.getMessage()]
    assert sorted(r.getMessage().split()[2] for r in said) == ["event", "part"]  # once per kind


# -- the wipe report of a stopped station, while the relay is away ----------------------


class SessionSetup(Setup):
    """The relay with a persistent broker session (``[relay] session_expiry_s``)."""

    def relay_config(self) -> Path:
        path = super().relay_config()
        path.write_text(path.read_text().replace("[relay]\n", "[relay]\nsession_expiry_s = 86400\n", 1))
        return path


@pytest.fixture
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    with SessionSetup(tmp_path_factory.mktemp("audit-away"), "audit-away") as s:
        yield s


@pytest.mark.slow
def test_wipe_report_of_a_sigterm_station_reaches_the_audit_log_after_the_relay_returns(
        setup: Setup) -> None:
    device = "audit-away"
    audit = setup.relay_dir / "audit.jsonl"
    relay_log = setup.relay_dir / "relay.log"
    wait_until(lambda: relay_log.exists() and b"clinicam relay: running" in relay_log.read_bytes(),
               what="the relay's first connection (it opens the persistent session)")
    setup.stop_relay()
    steps = [*opening(ids(31)), *press(2), {"wait_for": {"sealed": 2}, "timeout_s": 60}]
    station = setup.station(device, steps, uplink=FAST_UPLINK, workflow={"stop_drain_s": 2.0})
    station.wait_script()
    sealed = station.captures("sealed")
    assert len(sealed) == 2
    assert station.signal_and_wait(signal.SIGTERM) == 0
    exit_event = station.exit_event()
    assert (exit_event["trigger"], sorted(exit_event["capture_ids"])) == ("sigterm", sorted(sealed))

    def wiped() -> list[dict[str, Any]]:
        lines = [json.loads(x) for x in audit.read_text().splitlines()] if audit.exists() else []
        return [x for x in lines if x.get("device") == device and x.get("event") == "wiped"]

    assert wiped() == []  # positive control: not there while the relay is away
    setup.start_relay()
    wait_until(lambda: bool(wiped()), what="the wipe report in the audit log")
    (report,) = wiped()
    assert (report["reason"], report["count"], sorted(report["capture_ids"])) == ("sigterm", 2, sorted(sealed))


# -- the same with the default clean relay session: the station's persistent outbox ------


@pytest.fixture
def clean_setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    with Setup(tmp_path_factory.mktemp("audit-store"), "audit-store", devices=["audit-ram"]) as s:
        yield s


def _audit(setup: Setup, device: str, event: str) -> list[dict[str, Any]]:
    audit = setup.relay_dir / "audit.jsonl"
    lines = [json.loads(x) for x in audit.read_text().splitlines()] if audit.exists() else []
    return [x for x in lines if x.get("device") == device and x.get("event") == event]


@pytest.mark.slow
def test_wipe_report_of_a_station_stopped_while_no_relay_is_connected_survives_its_restart(
        clean_setup: Setup) -> None:
    """Default relay config (``session_expiry_s = 0``): the broker keeps nothing for the
    away relay; the station's outbox on its persistent partition (``[events] dir``)
    carries the wipe report over the restart, and it is audited exactly once. The
    control station keeps events in RAM only (``dir = ""``): its report is lost."""
    setup, who = clean_setup, ids(32)
    kept, ram = "audit-store", "audit-ram"
    store = setup.events_dir(kept) / "events.json"
    relay_log = setup.relay_dir / "relay.log"
    wait_until(lambda: relay_log.exists() and b"clinicam relay: running" in relay_log.read_bytes(),
               what="the relay")
    setup.stop_relay()
    events = {"resend_s": 1.0}
    steps = [*opening(who), *press(2), {"wait_for": {"sealed": 2}, "timeout_s": 60}]
    first = {kept: setup.station(kept, steps, uplink=FAST_UPLINK, workflow={"stop_drain_s": 2.0},
                                 events=events),
             ram: setup.station(ram, steps, uplink=FAST_UPLINK, workflow={"stop_drain_s": 2.0},
                                events={**events, "dir": ""})}
    sealed = {}
    for device, station in first.items():
        station.wait_script()
        sealed[device] = sorted(station.captures("sealed"))
        assert len(sealed[device]) == 2
        assert station.signal_and_wait(signal.SIGTERM) == 0
        assert sorted(station.exit_event()["capture_ids"]) == sealed[device]

    # the store holds the report (ids and codes) and no identifier of the round
    text = store.read_text()
    (report,) = [e for e in json.loads(text)["events"] if e["event"] == "wiped"]
    assert (report["reason"], sorted(report["capture_ids"])) == ("sigterm", sealed[kept])
    assert [x for x in (who.patient_a, who.patient_b, who.operator) if x in text] == []
    script = (setup.stations_dir / f"{kept}.json").read_text()
    assert who.patient_a in script and who.operator in script  # control: the same search finds them
    assert not (setup.stations_dir / ram / "events" / "events.json").exists()
    assert _audit(setup, kept, "wiped") == []  # control: nothing got through yet

    # both restart (a new session opens: proof each one's events get through), then the relay
    again = {device: setup.station(device, opening(who), uplink=FAST_UPLINK, events=cfg)
             for device, cfg in ((kept, events), (ram, {**events, "dir": ""}))}
    for station in again.values():
        station.wait_script()
    setup.start_relay()
    wait_until(lambda: bool(_audit(setup, kept, "wiped")) and bool(_audit(setup, ram, "session-opened")),
               what="the kept wipe report and the control's new session in the audit log")
    wait_until(lambda: report["event_id"] not in store.read_text(), what="the ack that empties the store")
    (logged,) = _audit(setup, kept, "wiped")  # exactly once
    assert (logged["event_id"], logged["reason"], logged["count"], sorted(logged["capture_ids"])) == (
        report["event_id"], "sigterm", 2, sealed[kept])
    assert _audit(setup, ram, "wiped") == []  # the control's report ended with its process
    assert [x for x in (who.patient_a, who.patient_b, who.operator) if x in store.read_text()] == []


def test_status_file_counters_are_current_without_any_station_status(
        site: Any, broker: Any, tmp_path: Path) -> None:
    """Issue 13 §4: the relay rewrites ``status.json`` on its own (no station talks here)."""
    board = StatusBoard(tmp_path / "status.json", min_interval_s=0.2, refresh_s=1.0)
    core = make_core(site, tmp_path, board=board)
    relay = start_relay(site, broker.port, core)
    try:
        status = tmp_path / "status.json"
        eventually(status.exists)
        first = json.loads(status.read_text())["updated"]
        eventually(lambda: json.loads(status.read_text())["updated"] != first)  # refreshed
        core.board.count("stored", 7)  # a counter changes; no station message follows
        eventually(lambda: json.loads(status.read_text())["counters"].get("stored") == 7)
        assert json.loads(status.read_text())["stations"] == {}
    finally:
        relay.stop()


def test_station_keeps_an_event_until_the_relay_logs_it_across_a_broker_restart(
        site: Any, broker: Any, tmp_path: Path) -> None:
    """The broker forgets the relay's session when it restarts (no persistence): the
    station's outbox re-sends the event until the relay acknowledges it, logged once."""
    core = make_core(site, tmp_path)
    start_relay(site, broker.port, core).stop()  # the relay had a session, then went away
    station = make_station(site, "station-a", broker.port, event_resend_s=0.5)
    try:
        station.wait_for(lambda seen: any(type(e).__name__ == "UplinkConnected" for e in seen))
        station.uplink.publish_event("session-opened", session="0" * 32)
        eventually(lambda: len(station.uplink.outbox) == 1)
        broker.stop()
        broker.start()  # the relay's queued copy is gone with the broker's memory
        relay = start_relay(site, broker.port, core)
        try:
            eventually(lambda: len(station.uplink.outbox) == 0)  # acknowledged
        finally:
            relay.stop()
    finally:
        station.uplink.stop()
    opened = [x for x in core.audit.lines if x.get("event") == "session-opened"]
    assert len(opened) == 1 and opened[0]["device"] == "station-a"


def test_a_station_sends_what_its_event_store_kept_and_reports_what_it_gave_up(
        site: Any, broker: Any, tmp_path: Path) -> None:
    """What an earlier run left in ``events.json`` is sent at start and removed once the
    relay logs it; the count it had to give up at its bound is reported once."""
    from clinicam.firmware.uplink.eventstore import EventStore

    store = tmp_path / "events"
    store.mkdir()
    kept = {"event": "wiped", "at": "2026-01-01T00:00:00.000Z", "capture_ids": [CID], "count": 1,
            "reason": "battery", "event_id": "0123456789abcdef"}
    (store / "events.json").write_text(json.dumps({"v": 1, "dropped": 3, "events": [kept]}))
    core = make_core(site, tmp_path)
    relay = start_relay(site, broker.port, core)
    station = make_station(site, "station-a", broker.port, event_store=EventStore(store))
    try:
        eventually(lambda: json.loads((store / "events.json").read_text()) == {"v": 1, "dropped": 0, "events": []})
    finally:
        station.uplink.stop()
        relay.stop()
    logged = [x for x in core.audit.lines if x.get("device") == "station-a"]
    assert [(x["event"], x.get("event_id")) for x in logged if x["event"] == "wiped"] == [("wiped", kept["event_id"])]
    assert [x["count"] for x in logged if x["event"] == "events-dropped"] == [3]
