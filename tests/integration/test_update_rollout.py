"""A remote update, operator to root hand-off: real Mosquitto (the ACL provisioning wrote,
with an operator identity), the real relay, real station processes and the real CLI.

The operator runs ``clinicam relay cmd … update`` as an engineer would; the station,
started with the ``RUNTIME_DIRECTORY`` systemd would give it (a temporary folder here),
writes ``update-request.json`` there for ``update-request.path`` and answers
``update-requested``. What root then reports back (``request-result.json`` in
``CLINICAM_UPDATE_RUN``) comes out as ``update-refused``/``update-failed`` events. A
stale, replayed or malformed command writes nothing, each next to a live one that does
(a retained one is refused by the same gate: tests/unit/firmware/test_uplink_commands.py).
The station has a patient session open while it takes the order: the patient's id (a
synthetic GSRN) must appear in no order, answer or table, and it is found where it must
be (the metadata the relay filed) first. Running ``update-fetch`` for real is the QEMU
boot test's (``make test-update``); ``tests/appliance/test_update_request.py`` runs the
root script.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from clinicam.firmware.update_handoff import REQUEST_NAME, RESULT_NAME
from clinicam.protocol.commands import Command, UpdateOrder
from clinicam.provisioning.tlsctx import client_context
from clinicam.relay.config import load_relay_config
from clinicam.relay.fanout import send_commands
from clinicam.relay.remote import Remote
from clinicam.tools.demo_setup import CLI
from paho.mqtt.enums import CallbackAPIVersion
from station_kit import FAST_UPLINK, PREFIX, WAIT_S, Setup, Station, Watcher, ids, opening, press, wait_until

pytestmark = pytest.mark.slow
OPERATOR = "operator-rollout"
DIGEST = "7a" * 32
URL = "https://updates.example.org:8443/clinicam/station-9.9.9.raucb"


class OperatorSetup(Setup):
    """``Setup`` plus ``operator-rollout``, issued by the CLI before the broker starts."""

    def provision(self) -> None:
        super().provision()
        self.operator_dir = self.workdir / "operator"
        done = subprocess.run([*CLI, "provision", "operator", str(self.site_dir), "--name", "rollout",
                               "--out", str(self.operator_dir)], capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr

    @property
    def operator(self) -> tuple[Path, Path]:
        return self.operator_dir / f"{OPERATOR}.pem", self.operator_dir / f"{OPERATOR}.key"


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OperatorSetup]:
    with OperatorSetup(tmp_path_factory.mktemp("rollout"), "upd-a") as s:
        yield s


@pytest.fixture
def watcher(setup: OperatorSetup) -> Iterator[Watcher]:
    setup.ensure_running()
    w = Watcher(setup)
    yield w
    w.close()


def dirs(setup: Setup, device: str) -> tuple[Path, Path]:
    """The station's RuntimeDirectory and /run/clinicam-update stand-ins, fresh."""
    runtime, run = setup.workdir / "run" / device / "clinicam", setup.workdir / "run" / device / "clinicam-update"
    for d in (runtime, run):
        d.mkdir(parents=True, exist_ok=True)
        for f in d.iterdir():
            f.unlink()
    return runtime, run


def online(setup: Setup, device: str, steps: list[dict[str, Any]] | None = None, *, handoff: bool = True) -> Station:
    runtime, run = dirs(setup, device)
    prefix = (["env", f"RUNTIME_DIRECTORY={runtime}", f"CLINICAM_UPDATE_RUN={run}"] if handoff
              else ["env", "-u", "RUNTIME_DIRECTORY"])
    station = setup.station(device, steps or [], prefix=prefix, uplink=FAST_UPLINK)
    station.wait(lambda e: e.get("kind") == "uplink" and e.get("status") == "connected")
    return station


def operator_cmd(setup: OperatorSetup, *args: str) -> subprocess.CompletedProcess[str]:
    cert, key = setup.operator
    proc = subprocess.run([*CLI, "relay", "cmd", "--config", str(setup.relay_config()), "--cert", str(cert),
                           "--key", str(key), *args], capture_output=True, text=True, timeout=120)
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc


def update_args(version: str = "9.9.9") -> list[str]:
    return ["--url", URL, "--sha256", DIGEST, "--version", version]


def request_of(setup: Setup, device: str) -> Path:
    return setup.workdir / "run" / device / "clinicam" / REQUEST_NAME


def table_rows(stdout: str) -> dict[str, list[str]]:
    lines = [line for line in stdout.splitlines()[1:] if line and not line.startswith("update ")]
    return {line.split()[0]: line.split()[1:] for line in lines}


def test_an_update_is_handed_to_root_with_nothing_of_the_patient(setup: OperatorSetup, watcher: Watcher) -> None:
    who = ids(71)
    steps = [*opening(who), *press(1), {"wait_for": {"stored": 1}, "timeout_s": 60}]
    station = online(setup, "upd-a", steps)
    try:
        (stored,) = station.wait_captures("stored", 1)
        # positive control for the canary: the scanner finds the patient where it must be
        assert who.patient_a in json.dumps(setup.metadata("upd-a", stored))
        done = operator_cmd(setup, "upd-a", "update", *update_args(), "--timeout", "30")
        assert done.returncode == 0, done.stdout + done.stderr
        row = table_rows(done.stdout)["upd-a"]
        assert row[:3] == ["requested", "fetching", "9.9.9"]
        cmd_id = row[3]
        order = json.loads(request_of(setup, "upd-a").read_text())
        assert order == {"id": cmd_id, "url": URL, "sha256": DIGEST, "version": "9.9.9", "allow_downgrade": False}
        assert request_of(setup, "upd-a").stat().st_mode & 0o777 == 0o600
        (event,) = watcher.wait(lambda: watcher.events("upd-a", "update-requested"))
        assert (event["cmd_id"], event["fw"]) == (cmd_id, "9.9.9")
        station.wait(lambda e: e.get("kind") == "update" and e.get("status") == "requested")
        for text in (request_of(setup, "upd-a").read_text(), done.stdout, done.stderr, json.dumps(event)):
            assert who.patient_a not in text and who.operator not in text
    finally:
        assert station.terminate() == 0


def test_stale_replayed_and_malformed_updates_write_nothing(setup: OperatorSetup, watcher: Watcher) -> None:
    """Each refusal, then the same thing done right: the live command writes the order."""
    station = online(setup, "upd-b")
    request = request_of(setup, "upd-b")
    target = Remote.from_config(load_relay_config(setup.relay_config()), *setup.operator)
    order = UpdateOrder(URL, DIGEST, "9.9.9")
    try:
        past = time.time() - 7200  # an operator clock two hours behind: expired on arrival
        (stale,) = send_commands(target, ["upd-b"], "update", update=order, ttl_s=60, timeout_s=3,
                                 wall=lambda: past, new_id=lambda: "stale-1")
        assert stale.event is None
        wait_until(lambda: any("command ignored (expired)" in line for line in station.stderr()),
                   what="the station's log of the expired update")
        malformed = MalformedSender(setup)
        try:
            now = time.time()
            good = json.loads(Command("update", "bad-1", now, now + 60, order).payload())
            for bad in ({**good, "sha256": "7A" * 32}, {**good, "url": "http://x.example.org/b"},
                        {**good, "version": "-x"}, {**good, "extra": 1}):
                malformed.send(json.dumps(bad).encode())
        finally:
            malformed.close()
        wait_until(lambda: sum("command ignored (malformed)" in line for line in station.stderr()) >= 4,
                   what="the station's log of the malformed updates")
        assert not request.exists() and not station.of("update")

        (live,) = send_commands(target, ["upd-b"], "update", update=order, new_id=lambda: "replay-1")
        assert live.event is not None and live.event["event"] == "update-requested"
        assert json.loads(request.read_text())["id"] == "replay-1"  # the positive control
        request.unlink()  # root took it
        (again,) = send_commands(target, ["upd-b"], "update", update=order, timeout_s=3, new_id=lambda: "replay-1")
        assert again.event is None
        wait_until(lambda: any("command ignored (repeated)" in line for line in station.stderr()),
                   what="the station's log of the replay")
        assert not request.exists()
        assert [e["id"] for e in station.of("update")] == ["replay-1"]
    finally:
        assert station.terminate() == 0


def test_what_root_reports_back_becomes_an_event(setup: OperatorSetup, watcher: Watcher) -> None:
    station = online(setup, "upd-c")
    run = setup.workdir / "run" / "upd-c" / "clinicam-update"
    try:
        (run / RESULT_NAME).write_text(json.dumps({"id": "c-busy", "version": "9.9.9", "exit": 4, "at": 0}))
        (event,) = watcher.wait(lambda: watcher.events("upd-c", "update-refused"))
        assert (event["cmd_id"], event["fw"], event["reason"]) == ("c-busy", "9.9.9", "busy")
        os.replace(run / RESULT_NAME, run / "x")  # positive control for "once": a new result is reported
        (run / RESULT_NAME).write_text(json.dumps({"id": "c-dl", "version": "9.9.9", "exit": 6, "at": 1}))
        (failed,) = watcher.wait(lambda: watcher.events("upd-c", "update-failed"))
        assert (failed["cmd_id"], failed["reason"]) == ("c-dl", "download")
        assert len(watcher.events("upd-c", "update-refused")) == 1  # the busy one was reported once
    finally:
        assert station.terminate() == 0


def test_a_group_rollout_tabulates_each_station(setup: OperatorSetup, watcher: Watcher, tmp_path: Path) -> None:
    """Two stations of group ``ward-9`` (a pattern): one hands over, one cannot (no
    RuntimeDirectory: not started by systemd), which the table and exit 4 say; a third
    station outside the group gets nothing. ``relay status`` shows each station's fw."""
    a = online(setup, "upd-ward-9-a")
    b = online(setup, "upd-ward-9-b", handoff=False)
    other = online(setup, "upd-ward-8-a")
    groups = tmp_path / "groups.toml"
    groups.write_text('[groups]\nward-9 = ["upd-ward-9-*"]\n')
    try:
        status_file = setup.relay_dir / "status.json"
        wait_until(lambda: all(s in status_file.read_text() for s in ("upd-ward-9-a", "upd-ward-9-b", "upd-ward-8-a")),
                   what="the relay's status file listing the stations")
        dry = operator_cmd(setup, "update", *update_args(), "--group", "ward-9", "--groups", str(groups), "--dry-run")
        assert dry.returncode == 0, dry.stderr
        assert "would send update 9.9.9 to 2 station(s)" in dry.stdout
        assert set(table_rows(dry.stdout.split("\n", 1)[1])) == {"upd-ward-9-a", "upd-ward-9-b"}
        done = operator_cmd(setup, "update", *update_args(), "--group", "ward-9", "--groups", str(groups),
                            "--timeout", "30", "--concurrency", "1")
        assert done.returncode == 4, done.stdout + done.stderr
        rows = table_rows(done.stdout)
        assert rows["upd-ward-9-a"][0] == "requested"
        assert rows["upd-ward-9-b"][:2] == ["update-refused", "unavailable"]
        assert "upd-ward-8-a" not in rows and not other.of("command")
        assert json.loads(request_of(setup, "upd-ward-9-a").read_text())["version"] == "9.9.9"
        assert not request_of(setup, "upd-ward-9-b").exists()

        status = subprocess.run([*CLI, "relay", "status", "--config", str(setup.relay_config())],
                                capture_output=True, text=True, timeout=60)
        header = next(line for line in status.stdout.splitlines() if line.startswith("station"))
        fw_col = header.split().index("fw")
        fws = {line.split()[0]: line.split()[fw_col] for line in status.stdout.splitlines()
               if line.startswith("upd-ward-")}
        assert len(set(fws.values())) == 1 and "-" not in fws.values(), status.stdout  # each reports its fw
    finally:
        for s in (a, b, other):
            assert s.terminate() == 0


def test_usage_errors_send_nothing(setup: OperatorSetup, tmp_path: Path) -> None:
    setup.ensure_running()
    for args, message in (
        (["upd-a", "update", "--url", "http://x.example.org/b", "--sha256", DIGEST, "--version", "1"], "--url"),
        (["upd-a", "update", "--url", URL, "--sha256", "abc", "--version", "1"], "--sha256"),
        (["upd-a", "update", "--url", URL, "--sha256", DIGEST], "--version"),
        (["upd-a", "update", *update_args(), "--percent", "10"], "not both"),
        (["update", *update_args(), "--group", "nope", "--groups", str(tmp_path / "none.toml")], "no groups file"),
        (["update", *update_args(), "--percent", "0"], "--percent"),
        (["upd-a", "ping", "--url", URL], "only with the update command"),
        (["upd-a", "update", *update_args(), "--no-wait"], "--no-wait does not go with update"),
    ):
        done = operator_cmd(setup, *args)
        assert done.returncode == 2 and message in done.stderr and done.stdout == "", (args, done.stderr)


class MalformedSender:
    """The operator's identity publishing raw payloads (a buggy or hostile tool)."""

    def __init__(self, setup: OperatorSetup) -> None:
        cert, key = setup.operator
        self.acked: set[int] = set()
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=OPERATOR, protocol=mqtt.MQTTv5)
        c.tls_set_context(client_context(setup.site_dir / "ca.pem", cert, key))
        c.on_publish = lambda _c, _u, mid, _rc, _p: self.acked.add(mid)
        c.connect("127.0.0.1", setup.port, keepalive=30)
        c.loop_start()
        self.client = c

    def send(self, payload: bytes) -> None:
        info = self.client.publish(f"{PREFIX}/upd-b/cmd", payload, qos=1)
        wait_until(lambda: info.mid in self.acked, WAIT_S, what="the broker's PUBACK")

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
