"""The station's journal tells the story of a round without an identifier (issue 16 §4).

A real station process on simulated hardware, the real broker and relay: captures
while no relay is there (held, the vault fills and refuses), the relay returns (re-sent
at once, delivered), a remote command, and the shutdown wipe. Its log (what systemd's
journal would keep) has an INFO line for each, with capture ids, and no scanned code.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterator

import pytest
from clinicam.provisioning import identity
from clinicam.tools.cli import main
from station_kit import FAST_UPLINK, Setup, ids, opening, press

pytestmark = pytest.mark.slow
DEVICE = "e2e-journal"


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    with Setup(tmp_path_factory.mktemp("e2e-journal"), DEVICE) as s:
        yield s


def test_journal_has_every_lifecycle_event_and_no_identifier(setup: Setup) -> None:
    setup.stop_relay()
    who = ids(61)
    steps = [*opening(who), *press(5), {"wait_for": {"stored": 3}, "timeout_s": 90}]
    station = setup.station(DEVICE, steps, vault={"max_captures": 3}, uplink=FAST_UPLINK)
    try:
        station.wait(lambda _e: station.signals().count("vault_full") >= 2)
        sealed = station.captures("sealed")
        assert "offline" in station.signals()  # connected to the broker, but no relay: the panel says so
        setup.ensure_running()
        station.wait_script(timeout=90)
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            assert main(["relay", "cmd", "--config", str(setup.relay_config()), DEVICE, "ping"]) == 0
    finally:
        assert station.terminate() == 0
    journal = "".join(station.stderr())
    lines = [ln for ln in journal.splitlines() if " INFO " in ln or " WARNING " in ln or " ERROR " in ln]
    text = "\n".join(lines)
    assert "INFO clinicam.station.journal: session opened" in text
    for cid in sealed:
        assert f"INFO clinicam.station.journal: captured {cid}" in text, station.transcript()
        assert f"INFO clinicam.station.journal: delivered {cid}" in text
    assert text.count("INFO clinicam.station.journal: vault full: capture refused") == 2
    assert "no relay serves this station" in text
    assert "a relay serves this station again; sending its 3 pending capture(s) now" in text
    assert "INFO clinicam.station.journal: remote command ping" in text
    assert "INFO clinicam.station.journal: wiped (" in text
    # no identifier anywhere in the log; the scanner first finds them where they must be
    for secret in (who.patient_a, who.operator):
        assert secret in repr(steps)  # positive control: the scanned codes carry them
        assert secret not in journal


def test_station_warns_at_start_when_its_certificate_expires_within_30_days(setup: Setup) -> None:
    name = "e2e-journal-short"
    d = setup.stations_dir / name / "identity"
    csr = identity.create_device_key(d, name)
    setup.site.sign(csr.read_bytes(), days=10)  # a certificate that runs out in 10 days
    bundle = setup.site.bundle(name, setup.workdir / "bundles" / name)
    identity.install(identity.InstallFiles.from_bundle(bundle), d)
    setup.ensure_running()
    assert setup.broker is not None
    setup.broker.reload()
    station = setup.station(name, [{"wait_s": 0.5}])
    try:
        station.wait_script(timeout=60)
    finally:
        assert station.terminate() == 0
    warned = [ln for ln in station.stderr() if "this station's certificate expires on" in ln]
    assert len(warned) == 1 and " WARNING " in warned[0] and "(in 10 days)" in warned[0], station.transcript()
    assert "clinicam provision renew" in warned[0]
    every = [ln for lines in setup.stderr.values() for ln in lines if "certificate expires on" in ln]
    assert every == warned  # the station with a year-long certificate (the first test) said nothing
