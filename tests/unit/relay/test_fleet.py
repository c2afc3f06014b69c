"""``clinicam relay status``'s judgement, with the clock and the process check injected."""

from __future__ import annotations

import json
from pathlib import Path

from clinicam.relay import fleet
from clinicam.relay.metrics import stamp_seconds
from clinicam.relay.records import StatusBoard

NOW = stamp_seconds("2026-12-07T12:00:00Z") or 0.0
LIMITS = fleet.Limits(stale_after_s=30, down_after_s=600, expiry_warn_s=30 * 86400)
WRITER = {"id": "relay-1", "pid": 4242, "running": True, "connected": True, "active": True}


def data(updated: str = "2026-12-07T11:59:55Z", **writer: object) -> dict:
    return {"updated": updated, "relay": {**WRITER, **writer}, "stations": {}}


def test_a_live_fresh_connected_relay_is_ok() -> None:
    header, found = fleet.assess_relay(data(), NOW, LIMITS, alive=lambda pid: pid == 4242)
    assert found == [] and "relay-1 (pid 4242) running, connected, serving" in header and "5 s ago" in header


def test_a_dead_stopped_hung_or_disconnected_relay_is_critical() -> None:
    cases = [(data(), lambda pid: False, "is not running"),
             (data(running=False), lambda pid: True, "stopped"),
             (data("2026-12-07T11:50:00Z"), lambda pid: True, "has not updated its status (written 10 min ago)"),
             (data(connected=False), lambda pid: True, "not connected to the broker")]
    for d, alive, words in cases:
        _, found = fleet.assess_relay(d, NOW, LIMITS, alive=alive)
        assert fleet.exit_code(found) == fleet.CRITICAL and words in found[0].text, (words, found)
    _, found = fleet.assess_relay({"updated": "2026-12-07T11:59:55Z"}, NOW, LIMITS)
    assert fleet.exit_code(found) == fleet.WARNING  # an old file that names no writer


def test_stations_offline_down_unseen_and_expiring() -> None:
    stations = {
        "ward-1": {"state": "online", "seen": "2026-12-07T08:00:00Z", "cert_not_after": "2027-12-01T00:00:00Z"},
        "ward-2": {"state": "offline", "seen": "2026-12-07T11:58:00Z", "pending": 3},
        "ward-3": {"state": "offline", "seen": "2026-12-07T10:00:00Z"},
        "ward-4": {"state": "online", "seen": "2026-12-07T11:00:00Z", "cert_not_after": "2026-12-20T00:00:00Z"},
        "ward-5": {"state": "online", "relay": "offline", "seen": "2026-12-07T11:00:00Z"},
    }
    found = fleet.assess_stations(stations, ["ward-1", "ward-9"], NOW, LIMITS)
    lines = [f.line() for f in found]
    assert "WARNING: station ward-2 offline for 2 min, 3 capture(s) pending" in lines
    assert "CRITICAL: station ward-3 offline for 2 h" in lines
    assert any(x.startswith("WARNING: station ward-4: certificate expires in 12 d") for x in lines)
    assert "WARNING: station ward-5 is connected but sees no relay serving it" in lines
    assert "WARNING: 1 provisioned station(s) never seen: ward-9" in lines
    assert not any("ward-1" in x for x in lines)
    assert fleet.exit_code(found) == fleet.CRITICAL
    assert fleet.exit_code([]) == fleet.OK


def test_board_keeps_stations_across_restarts_but_not_their_online_claim(tmp_path: Path) -> None:
    path = tmp_path / "status.json"
    first = StatusBoard(path, wall=lambda: 0.0)
    first.station("ward-1", {"state": "online", "pending": 2})
    first.station("ward-2", {"state": "offline", "pending": 1})
    first.station("ward-2", {"state": "offline"})  # its will: the pending count stays known
    first.flush()  # the relay writes the file on its own schedule (flush_due), not per status
    second = StatusBoard(path, wall=lambda: 10.0)
    assert second.load() == 2
    assert second.stations["ward-1"]["state"] == "unknown"  # until its next status says
    assert second.stations["ward-2"] == {"state": "offline", "pending": 1, "seen": "1970-01-01T00:00:00.000Z"}
    path.write_text("{")
    assert StatusBoard(path).load() == 0


def test_board_takes_the_old_run_status_file_once_when_its_own_is_missing(tmp_path: Path) -> None:
    """After an upgrade the status file lives in the state directory; the first start reads
    the old one under /run (a relay that ran before the upgrade), then only its own."""
    legacy, path = tmp_path / "run" / "status.json", tmp_path / "state" / "status.json"
    legacy.parent.mkdir()
    legacy.write_text(json.dumps({"stations": {"ward-1": {"state": "offline", "pending": 3}}}))
    board = StatusBoard(path, wall=lambda: 0.0)
    assert board.load(fallback=legacy) == 1
    assert board.stations["ward-1"]["pending"] == 3
    board.flush()
    legacy.write_text(json.dumps({"stations": {"ward-9": {"state": "offline"}}}))
    again = StatusBoard(path)
    assert again.load(fallback=legacy) == 1 and set(again.stations) == {"ward-1"}  # its own file wins


def test_certificates_within_the_renewal_margin_warn_and_expired_ones_are_critical(tmp_path: Path) -> None:
    from clinicam.relay.certificates import HeldCertificate, Unreadable

    day = 86400.0
    limits = fleet.Limits()  # the renewal margin: 60 days
    stations = {
        "ward-1": {"state": "online", "seen": "2026-12-07T11:59:00Z", "cert_not_after": "2027-12-01T00:00:00Z"},
        "ward-2": {"state": "online", "seen": "2026-12-07T11:59:00Z", "cert_not_after": "2027-01-20T00:00:00Z",
                   "renewal": {"state": "failed", "at": "2026-12-07T10:00:00Z", "reason": "rate-limited"}},
        "ward-3": {"state": "online", "seen": "2026-12-07T11:59:00Z", "cert_not_after": "2026-12-01T00:00:00Z"},
    }
    lines = [f.line() for f in fleet.assess_stations(stations, [], NOW, limits)]
    assert len(lines) == 2 and not any("ward-1" in x for x in lines)  # 359 days left: fine
    assert lines[0].startswith("WARNING: station ward-2: certificate expires in 43 d, last renewal failed "
                               "(rate-limited); it renews itself"), lines
    assert lines[1].startswith("CRITICAL: station ward-3: certificate expired 6 d ago"), lines
    held = [HeldCertificate("relay", "relay-1", NOW + 20 * day, "[identity] cert: /x"),
            HeldCertificate("site-ca", "Site CA", NOW + 3000 * day, "[identity] ca: /y"),
            HeldCertificate("issuing-ca", "Issuing", NOW - day, "[identity] chain: /z"),
            Unreadable("registrar.toml [issuing] cert: /w", "cannot be read (Permission denied)")]
    found = [f.line() for f in fleet.assess_certificates(held, NOW, limits)]
    assert found[0].startswith("WARNING: relay certificate relay-1 expires in 20 d: 'clinicam provision "
                               "reissue SITE relay-1'"), found
    assert found[1].startswith("CRITICAL: issuing-ca certificate Issuing expired 1 d ago"), found
    assert found[2] == "WARNING: registrar.toml [issuing] cert: /w: cannot be read (Permission denied)"
    assert len(found) == 3  # the site CA's ten years are no finding
    assert [fleet.cert_state(NOW + d * day, NOW, limits) for d in (-1, 59, 61)] == ["expired", "renew", "ok"]
    assert [fleet.days_left(NOW + d, NOW) for d in (-1.5 * day, -1, 0, 1.5 * day)] == [-1, 0, 0, 1]
    assert fleet.days_left(None, NOW) is None
