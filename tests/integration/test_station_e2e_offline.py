"""Offline: the vault fills, then refuses; the broker comes back and all is delivered.

Issue 6, "Must show" 2. The broker is stopped before the station starts, so every
capture stays sealed in RAM; with ``[vault] max_captures = 3`` the fourth and fifth
presses are refused with the ``vault_full`` signal (never by dropping an old capture).
Once the broker (and the relay) are back, the three are delivered and the vault is empty.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from station_kit import FAST_UPLINK, Setup, Watcher, ids, opening, press

pytestmark = pytest.mark.slow
DEVICE = "e2e-offline"


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    with Setup(tmp_path_factory.mktemp("e2e-offline"), DEVICE) as s:
        yield s


def test_full_vault_refuses_then_everything_is_delivered_when_the_broker_returns(setup: Setup) -> None:
    assert setup.broker is not None
    setup.stop_relay()  # the relay is not under test here; it would back off up to 30 s
    setup.broker.stop()
    steps = [*opening(ids(3)), *press(5), {"wait_for": {"stored": 3}, "timeout_s": 90}]
    station = setup.station(DEVICE, steps, vault={"max_captures": 3}, uplink=FAST_UPLINK)
    station.wait(lambda _e: station.signals().count("vault_full") >= 2)
    assert [e["reason"] for e in station.of("capture", status="refused")] == ["vault-full"] * 2
    sealed = station.captures("sealed")
    assert len(sealed) == 3 and station.captures("stored") == []
    assert station.signals().count("vault_full") == 2
    assert setup.stored_ids(DEVICE) == set()  # nothing went anywhere while offline

    setup.ensure_running()
    watcher = Watcher(setup)
    try:
        station.wait_script(timeout=90)
        assert sorted(station.captures("stored")) == sorted(sealed)
        assert station.of("capture", status="stored")[-1]["pending"] == 0
        assert setup.stored_ids(DEVICE) == set(sealed)
        watcher.wait(lambda: [s for s in watcher.statuses(DEVICE) if s.get("state") == "online"
                              and s.get("pending") == 0])
    finally:
        watcher.close()
    assert station.terminate() == 0
    assert station.exit_event()["capture_ids"] == []
