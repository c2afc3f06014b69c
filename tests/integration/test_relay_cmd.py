"""``clinicam relay cmd`` end to end: a real broker, real station processes, the real CLI.

``station_kit.Setup`` runs Mosquitto from the site's generated config and ACL and a
``clinicam relay run`` (``relay-1``). Commands are sent by the CLI as a separate process,
as an engineer would, with a relay.toml naming the spare identity ``relay-2`` (the
site's own ACL lets relay identities write ``P/+/cmd`` and read ``P/+/event``), so the
running relay's session is not taken over. The station's ``--events-json`` stream is
the independent witness of what it received. Ids are synthetic; no PHI exists here.
"""

from __future__ import annotations

import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from clinicam.firmware.demo_setup import CLI
from clinicam.provisioning import identity
from clinicam.relay.config import load_relay_config
from clinicam.relay.remote import Remote, StationSilent, send_command
from station_kit import FAST_UPLINK, Setup, Station, ids, opening, press, wait_until

pytestmark = pytest.mark.slow
COMMAND_ID = re.compile(r"\(command ([0-9a-f]{16})\)")


@pytest.fixture(scope="module")
def module_setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    with Setup(tmp_path_factory.mktemp("relay-cmd"), "cmd-ping") as s:
        yield s


@pytest.fixture
def setup(module_setup: Setup) -> Setup:
    module_setup.ensure_running()
    return module_setup


def config_as(setup: Setup, name: str, cert: Path, key: Path) -> Path:
    """The demo relay's own relay.toml with another TLS identity."""
    relay = setup.site.relay_dir
    text = setup.relay_config().read_text()
    text = text.replace(f'"{relay / "relay-1.pem"}"', f'"{cert}"').replace(f'"{relay / "relay-1.key"}"', f'"{key}"')
    path = setup.relay_dir / f"{name}.toml"
    path.write_text(text)
    return path


def spare_relay_config(setup: Setup) -> Path:
    return config_as(setup, "cmd-relay-2", *setup.site.relay_files(2))


def relay_cmd(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([*CLI, "relay", "cmd", "--config", str(config), *args],
                          capture_output=True, text=True, timeout=120)
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc


def online(setup: Setup, device: str, steps: list[dict[str, object]] | None = None) -> Station:
    station = setup.station(device, steps or [], uplink=FAST_UPLINK)
    station.wait(lambda e: e.get("kind") == "uplink" and e.get("status") == "connected")
    return station


def commands(station: Station) -> list[tuple[str, str]]:
    return [(e["cmd"], e["id"]) for e in station.of("command")]


def test_ping_is_answered_and_no_wait_only_sends(setup: Setup) -> None:
    config = spare_relay_config(setup)
    station = online(setup, "cmd-ping")
    try:
        done = relay_cmd(config, "cmd-ping", "ping", "--timeout", "30")
        assert done.returncode == 0, done.stderr
        assert "cmd-ping answered ping" in done.stdout
        (cmd_id,) = COMMAND_ID.findall(done.stdout)
        assert commands(station) == [("ping", cmd_id)]  # the station saw exactly this command
    finally:
        assert station.terminate() == 0
    # restarted, the station finds no retained command: the broker holds none to replay
    station = online(setup, "cmd-ping")
    try:
        sent = relay_cmd(config, "cmd-ping", "identify", "--no-wait")
        assert sent.returncode == 0, sent.stderr
        assert "sent identify to cmd-ping" in sent.stdout and "expires at" in sent.stdout
        (later_id,) = COMMAND_ID.findall(sent.stdout)
        station.wait(lambda e: e.get("kind") == "command" and e.get("id") == later_id)
        assert later_id != cmd_id  # a fresh id each time: the station refuses repeats
        assert commands(station) == [("identify", later_id)]
        assert not [line for line in station.stderr() if "command ignored" in line]
    finally:
        assert station.terminate() == 0


def test_wipe_needs_yes_then_wipes_the_undelivered_captures(setup: Setup) -> None:
    config = spare_relay_config(setup)
    setup.stop_relay()  # broker up, relay down: the captures stay pending on the station
    who = ids(41)
    steps = [*opening(who), *press(2), {"wait_for": {"sealed": 2}, "timeout_s": 60}]
    station = online(setup, "cmd-wipe", steps)
    try:
        sealed = station.wait_captures("sealed", 2)
        refused = relay_cmd(config, "cmd-wipe", "wipe")
        assert refused.returncode == 2 and "--yes" in refused.stderr and refused.stdout == ""
        # positive control for "nothing was published": a later ping is the first command it sees
        assert relay_cmd(config, "cmd-wipe", "ping").returncode == 0
        assert [c for c, _ in commands(station)] == ["ping"] and not station.of("wipe")

        done = relay_cmd(config, "cmd-wipe", "wipe", "--yes")
        assert done.returncode == 0, done.stderr
        assert "wiped 2 undelivered capture(s)" in done.stdout
        assert all(cid in done.stdout for cid in sealed)
        (cmd_id,) = COMMAND_ID.findall(done.stdout)
        assert commands(station)[-1] == ("wipe", cmd_id)
        (wipe,) = station.of("wipe")
        assert wipe["trigger"] == "remote" and sorted(wipe["capture_ids"]) == sorted(sealed)
        output = refused.stderr + done.stdout + done.stderr
        assert who.patient_a not in output and who.operator not in output
    finally:
        assert station.terminate() == 0


def test_offline_station_times_out_and_says_when_the_command_expires(setup: Setup) -> None:
    config = spare_relay_config(setup)
    station = online(setup, "cmd-gone")
    assert station.terminate() == 0  # a clean stop: its retained status says "offline"
    late = relay_cmd(config, "cmd-gone", "ping", "--timeout", "1", "--ttl", "60")
    assert late.returncode == 3, late.stderr
    assert "no answer from station cmd-gone" in late.stderr
    assert re.search(r"expires at \d{4}-\d\d-\d\dT[0-9:.]+Z and will be ignored afterwards", late.stderr)
    assert "'offline'" in late.stderr
    never = relay_cmd(config, "cmd-never-seen", "identify", "--timeout", "1")
    assert never.returncode == 3 and "no status of it is known" in never.stderr


@pytest.mark.parametrize("station", ["Cmd-Upper", "ab", "a/b", "cmd-+", "x" * 65])
def test_invalid_station_id_is_refused_before_anything_is_sent(setup: Setup, station: str) -> None:
    done = relay_cmd(spare_relay_config(setup), station, "ping")
    assert done.returncode == 2 and "station id" in done.stderr and done.stdout == ""


def test_broker_refusal_is_exit_4_with_the_acl_named(setup: Setup) -> None:
    """A station's certificate may not read another station's events: the ACL refuses."""
    d = setup.identity_dir("cmd-intruder")
    config = config_as(setup, "cmd-intruder", d / identity.CERT, d / identity.KEY)
    done = relay_cmd(config, "cmd-ping", "ping", "--timeout", "5")
    assert done.returncode == 4, done.stderr
    assert "refused" in done.stderr and "ACL" in done.stderr


def test_sent_as_the_running_relay_the_session_goes_back_to_the_relay_and_the_command_says_so(
        setup: Setup) -> None:
    """The broker forces client id = CN: the relay's own identity takes over its session."""
    log = setup.relay_dir / "relay.log"

    def connects() -> int:
        return log.read_text().count("relay: connected")

    setup.stop_relay()
    before = connects()
    setup.start_relay()
    wait_until(lambda: connects() > before, what="the relay connected")  # it holds the session first
    before = connects()
    done = relay_cmd(setup.relay_config(), "cmd-nobody", "ping", "--timeout", "30")
    assert done.returncode == 4, done.stderr
    assert "another client connected as relay-1" in done.stderr and "spare relay identity" in done.stderr
    assert re.search(r"it expires at \S+Z and is ignored afterwards", done.stderr)
    wait_until(lambda: connects() > before, what="the relay reconnected")  # it took its session back
    assert setup.relay is not None and setup.relay.poll() is None


def test_with_a_clock_two_hours_behind_the_command_arrives_expired_and_is_ignored(setup: Setup) -> None:
    """``send_command`` with an injected clock: the station's gate refuses the command as
    expired, sends no answer, and the caller learns when it expired; the same call with
    the real clock is answered (the positive control)."""
    target = Remote.from_config(load_relay_config(spare_relay_config(setup)))
    station = online(setup, "cmd-clock")
    try:
        past = time.time() - 7200
        with pytest.raises(StationSilent) as silent:
            send_command(target, "cmd-clock", "ping", ttl_s=60, timeout_s=3,
                         wall=lambda: past, new_id=lambda: "clock-old-1")
        assert (silent.value.sent.id, silent.value.sent.expires_at) == ("clock-old-1", past + 60)
        assert silent.value.last_state not in (None, "offline")  # it was online, and ignored it
        wait_until(lambda: any("command ignored (expired)" in line for line in station.stderr()),
                   what="the station's log of the refusal")
        answer = send_command(target, "cmd-clock", "ping", new_id=lambda: "clock-now-2")
        assert answer.event is not None and (answer.event["event"], answer.event["cmd_id"]) == ("ping", "clock-now-2")
        assert commands(station) == [("ping", "clock-now-2")]
    finally:
        assert station.terminate() == 0
