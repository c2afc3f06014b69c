"""update-request (image-build/update/update-request), the root side of a remote update:
the real script against a recording stand-in for update-fetch (CLINICAM_UPDATE_FETCH,
as update-fetch takes CLINICAM_UPDATE_INSTALL). It reads the order the station's own
writer (clinicam.firmware.update_handoff) leaves, checks it again, removes it, runs
update-fetch with the right arguments and leaves the outcome for the station. Every
refusal is shown against the same script running the fetch for a good order. The units
(update-request.path/.service) are verified by systemd itself."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from appliance_support import IMAGE_BUILD, SYSTEMD, run
from clinicam.firmware.update_handoff import REQUEST_NAME, RESULT_NAME, UpdateHandoff, parse_outcome
from clinicam.protocol.commands import UpdateOrder

SCRIPT = IMAGE_BUILD / "update" / "update-request"
DIGEST = "5e" * 32
ORDER = UpdateOrder("https://updates.example.org:8443/station-1.4.0.raucb", DIGEST, "1.4.0")


class Root:
    """The station's RuntimeDirectory, /run/clinicam-update and a recording update-fetch."""

    def __init__(self, tmp: Path) -> None:
        self.runtime, self.run_dir, self.calls = tmp / "run-clinicam", tmp / "run-update", tmp / "fetch-calls"
        self.identity = tmp / "identity"  # allow.json, as 'provision install' writes it
        self.runtime.mkdir()
        self.identity.mkdir()
        self.fetch = tmp / "update-fetch"
        self.fetch.write_text('#!/bin/sh\nprintf "%s\\n" "$@" > "$CALLS"\nexit "${FAKE_EXIT:-0}"\n')
        self.fetch.chmod(0o755)
        self.request = self.runtime / REQUEST_NAME

    def order(self, cmd_id: str = "cmd-1", order: UpdateOrder = ORDER) -> None:
        """Written by the station's own code, as on the appliance."""
        UpdateHandoff(self.runtime, self.run_dir, started_at=0).request(cmd_id, order)

    def run(self, fetch_exit: int = 0) -> subprocess.CompletedProcess[str]:
        env = dict(os.environ, CLINICAM_UPDATE_REQUEST=str(self.request), CLINICAM_UPDATE_FETCH=str(self.fetch),
                   CLINICAM_UPDATE_RUN=str(self.run_dir), CLINICAM_UPDATE_WAIT_IDLE_S="900",
                   CLINICAM_IDENTITY_DIR=str(self.identity),
                   CALLS=str(self.calls), FAKE_EXIT=str(fetch_exit))
        return subprocess.run([str(SCRIPT)], env=env, capture_output=True, text=True, timeout=30, check=False)

    def fetched(self) -> list[str] | None:
        return self.calls.read_text().splitlines() if self.calls.exists() else None

    def result(self) -> dict[str, object]:
        data: dict[str, object] = json.loads((self.run_dir / RESULT_NAME).read_text())
        return data


@pytest.fixture
def root(tmp_path: Path) -> Root:
    return Root(tmp_path)


def test_a_good_order_runs_update_fetch_and_is_removed(root: Root) -> None:
    root.order()
    done = root.run()
    assert done.returncode == 0, done.stdout + done.stderr
    assert root.fetched() == [ORDER.url, DIGEST, "--wait-idle", "900", "--expect-version", "1.4.0"]
    assert not root.request.exists()  # the path unit does not fire again
    assert {k: v for k, v in root.result().items() if k != "at"} == {"id": "cmd-1", "version": "1.4.0", "exit": 0}
    assert "Traceback" not in done.stdout + done.stderr


def test_allow_downgrade_is_passed_on(root: Root) -> None:
    root.order(order=UpdateOrder(ORDER.url, DIGEST, "1.2.0", allow_downgrade=True))
    assert root.run().returncode == 0
    assert root.fetched() == [ORDER.url, DIGEST, "--wait-idle", "900", "--expect-version", "1.2.0",
                              "--allow-downgrade"]


@pytest.mark.parametrize("code,event,reason", [(3, "update-refused", "bundle"), (4, "update-refused", "busy"),
                                               (5, "update-failed", "install"), (6, "update-failed", "download")])
def test_the_outcome_is_left_for_the_station(root: Root, code: int, event: str, reason: str) -> None:
    root.order("cmd-9")
    assert root.run(fetch_exit=code).returncode == code
    outcome = parse_outcome((root.run_dir / RESULT_NAME).read_bytes())  # what the station reads
    assert outcome is not None
    assert (outcome.event, outcome.reason, outcome.cmd_id, outcome.version) == (event, reason, "cmd-9", "1.4.0")
    assert (root.run_dir / RESULT_NAME).stat().st_mode & 0o777 == 0o640
    assert root.run_dir.stat().st_mode & 0o777 == 0o750


GOOD = {"id": "cmd-1", "url": ORDER.url, "sha256": DIGEST, "version": "1.4.0", "allow_downgrade": False}


@pytest.mark.parametrize("text", [
    b"not json",
    b"[]",
    json.dumps({**GOOD, "extra": 1}).encode(),
    json.dumps({k: v for k, v in GOOD.items() if k != "allow_downgrade"}).encode(),
    json.dumps({**GOOD, "url": "http://updates.example.org/b.raucb"}).encode(),
    json.dumps({**GOOD, "url": "https://updates.example.org/b.raucb; reboot"}).encode(),
    json.dumps({**GOOD, "sha256": "5E" * 32}).encode(),
    json.dumps({**GOOD, "version": "--allow-downgrade"}).encode(),
    json.dumps({**GOOD, "allow_downgrade": "true"}).encode(),
    json.dumps({**GOOD, "id": "../../etc"}).encode(),
    json.dumps(GOOD).replace('"version": "1.4.0"', '"version": "1.4.0", "version": "0.1"').encode(),
    json.dumps({**GOOD, "url": "https://u.example.org/" + "a" * 5000}).encode(),
    b"\xff\xfe",
], ids=range(13))
def test_a_bad_order_is_refused_and_nothing_is_fetched(root: Root, text: bytes) -> None:
    root.request.write_bytes(text)
    done = root.run()
    assert done.returncode == 2, done.stdout + done.stderr
    assert root.fetched() is None  # update-fetch never ran (the good order above runs it)
    assert not root.request.exists()
    assert "order refused" in done.stdout and "Traceback" not in done.stdout + done.stderr
    assert {k: v for k, v in root.result().items() if k != "at"} == {"id": None, "version": None, "exit": 2}
    outcome = parse_outcome((root.run_dir / RESULT_NAME).read_bytes())
    assert outcome is not None and (outcome.event, outcome.reason) == ("update-refused", "invalid")


def test_a_link_is_not_followed(root: Root, tmp_path: Path) -> None:
    target = tmp_path / "elsewhere.json"
    target.write_text(json.dumps(GOOD))
    root.request.symlink_to(target)
    done = root.run()
    assert done.returncode == 2 and root.fetched() is None
    assert target.exists() and not root.request.is_symlink()  # the link went, its target stays
    target.rename(root.request)  # positive control: the same content as a plain file is fetched
    assert root.run().returncode == 0 and root.fetched() is not None


def allow(root: Root, server: str | None) -> None:
    doc: dict[str, object] = {"ip_allow": ["192.0.2.10"], "broker_port": 8883}
    if server is not None:
        doc["update_server"] = {"url": server, "addresses": ["192.0.2.20"], "port": int(server.rsplit(":", 1)[1])}
    (root.identity / "allow.json").write_text(json.dumps(doc))


@pytest.mark.parametrize("url", [ORDER.url, "https://UPDATES.example.org:8443/other/b.raucb"])
def test_the_recorded_update_server_is_fetched_from(root: Root, url: str) -> None:
    allow(root, "https://updates.example.org:8443")
    root.order(order=UpdateOrder(url, DIGEST, "1.4.0"))
    assert root.run().returncode == 0 and root.fetched() is not None and root.fetched()[0] == url


@pytest.mark.parametrize("server,url,message", [
    ("https://updates.example.org:8443", "https://updates.example.org/b.raucb", "updates.example.org:443 is not"),
    ("https://updates.example.org:8443", "https://evil.example.org:8443/b.raucb", "is not the update server"),
    (None, ORDER.url, "no update server is recorded"),
])
def test_another_server_is_refused_before_any_download(root: Root, server: str | None, url: str,
                                                        message: str) -> None:
    """The firewall lets root reach only the recorded server: anything else is refused at
    once (exit 7, update-refused/server) instead of failing after minutes of retries."""
    allow(root, server)
    root.order("cmd-7", UpdateOrder(url, DIGEST, "1.4.0"))
    done = root.run()
    assert done.returncode == 7 and message in done.stdout, done.stdout + done.stderr
    assert root.fetched() is None and not root.request.exists()
    outcome = parse_outcome((root.run_dir / RESULT_NAME).read_bytes())
    assert outcome is not None
    assert (outcome.event, outcome.reason, outcome.cmd_id) == ("update-refused", "server", "cmd-7")


def test_no_order_is_nothing_to_do(root: Root) -> None:
    done = root.run()
    assert done.returncode == 0 and root.fetched() is None and not (root.run_dir / RESULT_NAME).exists()


def test_the_units_verify(analyze_root: Path) -> None:
    units = analyze_root / "usr/lib/systemd/system"
    for name in ("update-request.path", "update-request.service"):
        (units / name).write_text((SYSTEMD / name).read_text())
    exe = analyze_root / "usr/lib/clinicam/update-request"
    exe.parent.mkdir(parents=True, exist_ok=True)
    exe.write_text("#!/bin/sh\nexit 0\n")
    exe.chmod(0o755)
    for name in ("update-request.path", "update-request.service"):
        result = run("systemd-analyze", "verify", f"--root={analyze_root}", name)
        assert (result.returncode, result.stdout + result.stderr) == (0, ""), name
    path = (SYSTEMD / "update-request.path").read_text()
    assert "PathExists=/run/clinicam/update-request.json" in path and "Unit=update-request.service" in path
    assert not (SYSTEMD / "clinicam-update-request.service").exists()  # outside the station's sandbox by name
