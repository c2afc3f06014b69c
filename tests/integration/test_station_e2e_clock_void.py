"""Clock not synchronised, and VOID before and after delivery (issue 6, "Must show" 4).

One station run, relay stopped at first so captures stay pending:

1. the clock is not synchronised: a press is refused with ``clock_not_synced``;
2. the clock syncs: capture 1 is sealed (pending), then the ``VOID`` card wipes it;
3. capture 2 is sealed; the test starts the relay, capture 2 is delivered, then
   ``VOID`` asks the relay, by a signed ``void`` event, to mark it entered-in-error.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from clinicam.protocol.manifest import verify_event
from clinicam.protocol.reasons import OpenError
from clinicam.provisioning import identity
from clinicam.tools.scenario import card, show
from cryptography import x509
from station_kit import FAST_UPLINK, Setup, Station, Watcher, ids, opening, press, wait_until

pytestmark = pytest.mark.slow
DEVICE = "e2e-clock-void"


@dataclass
class Run:
    setup: Setup
    station: Station
    watcher: Watcher

    def after(self, mark: str) -> list[dict[str, object]]:
        """Events from the script's ``mark`` up to the next mark."""
        events = self.station.events
        start = next(i for i, e in enumerate(events) if e.get("mark") == mark)
        end = next((i for i, e in enumerate(events) if i > start and "mark" in e), len(events))
        return events[start:end]


SCRIPT = [
    {"clock_synced": False},
    *opening(ids(8)),
    {"mark": "unsynced"},
    *press(),
    {"mark": "synced"},
    {"clock_synced": True},
    {"wait_s": 3.0},  # the station looks at the clock every 2 s
    *press(),
    {"wait_for": {"sealed": 1}, "timeout_s": 30},
    {"mark": "void-pending"},
    show(card("VOID")),
    *press(),
    {"wait_for": {"stored": 1}, "timeout_s": 60},
    {"mark": "void-delivered"},
    show(card("VOID")),
]


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    with Setup(tmp_path_factory.mktemp("e2e-clock-void"), DEVICE) as setup:
        watcher = Watcher(setup)
        try:
            setup.stop_relay()
            station = setup.station(DEVICE, SCRIPT, uplink=FAST_UPLINK)
            station.wait(lambda e: e.get("kind") == "capture" and e.get("status") == "voided")
            setup.ensure_running()  # capture 1 is voided: let capture 2 through
            station.wait_script(timeout=90)
            yield Run(setup, station, watcher)
            assert station.terminate() == 0
        finally:
            watcher.close()


def test_a_press_while_the_clock_is_not_synchronised_is_refused(run: Run) -> None:
    unsynced = run.after("unsynced")
    assert [e["pattern"] for e in unsynced if e.get("kind") == "signal"] == ["clock_not_synced"]
    assert not [e for e in unsynced if e.get("kind") == "capture"]
    first = run.station.captures("sealed")[0]
    assert "captured" in [e.get("pattern") for e in run.after("synced")]  # and accepted once synced
    assert first not in run.setup.stored_ids(DEVICE)  # (that one is voided below)


def test_void_of_a_pending_capture_means_it_is_never_delivered(run: Run) -> None:
    first, second = run.station.captures("sealed")
    voided = [e for e in run.after("void-pending") if e.get("status") == "voided"]
    assert [(e["capture_id"], e["was"]) for e in voided] == [(first, "pending")]
    assert "voided" in [e.get("pattern") for e in run.after("void-pending")]
    # capture 2, sealed after it and sent on the same path, did arrive; capture 1 never does
    wait_until(lambda: (run.setup.relay_dir_of(DEVICE) / f"{second}.void").exists(), what="void marker")
    assert run.station.captures("stored") == [second]
    assert run.setup.stored_ids(DEVICE) == {second}
    audit = run.watcher.wait(lambda: run.watcher.events(DEVICE, "voided"))
    # one event; the station sends it again when the relay returns (it was away), the
    # relay logs an event_id once
    once = {e["event_id"]: e for e in audit}.values()
    assert [(e["capture_id"], e["reason"]) for e in once] == [(first, "pending-wiped")]


def test_void_after_delivery_sends_a_signed_void_event_the_relay_marks(run: Run) -> None:
    second = run.station.captures("sealed")[1]
    voided = [e for e in run.after("void-delivered") if e.get("status") == "voided"]
    assert [(e["capture_id"], e["was"]) for e in voided] == [(second, "delivered")]
    (event,) = run.watcher.wait(lambda: run.watcher.events(DEVICE, "void"))
    cert = x509.load_pem_x509_certificate((run.setup.identity_dir(DEVICE) / identity.CERT).read_bytes())
    assert verify_event(event, cert) == {k: v for k, v in event.items() if k != "sig"}
    assert event["capture_id"] == second
    wait_until(lambda: (run.setup.relay_dir_of(DEVICE) / f"{second}.void").exists(), what="void marker")
    assert (run.setup.relay_dir_of(DEVICE) / f"{second}.json").exists()  # marked, not deleted
    forged = copy.deepcopy(event)
    forged["capture_id"] = run.station.captures("sealed")[0]
    with pytest.raises(OpenError):  # control: the same check refuses an altered event
        verify_event(forged, cert)
