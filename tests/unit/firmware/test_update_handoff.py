"""The station's side of a remote update: the order it leaves for root, the outcome it reads back."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from clinicam.firmware.update_handoff import (
    REQUEST_NAME,
    RESULT_NAME,
    UpdateHandoff,
    UpdateUnavailable,
    parse_outcome,
)
from clinicam.protocol.commands import UpdateOrder

ORDER = UpdateOrder("https://updates.example.org/station-1.4.0.raucb", "cd" * 32, "1.4.0")
NOW = 1_800_000_000.0


def test_the_order_is_written_whole_with_exactly_the_five_keys(tmp_path: Path) -> None:
    handoff = UpdateHandoff(tmp_path, tmp_path / "run", started_at=NOW)
    path = handoff.request("cmd-1", ORDER)
    assert path == tmp_path / REQUEST_NAME
    assert json.loads(path.read_text()) == {"id": "cmd-1", "url": ORDER.url, "sha256": ORDER.sha256,
                                            "version": "1.4.0", "allow_downgrade": False}
    assert path.stat().st_mode & 0o777 == 0o600
    assert [p.name for p in tmp_path.iterdir() if p.is_file()] == [REQUEST_NAME]  # no temporary left
    handoff.request("cmd-2", UpdateOrder(ORDER.url, ORDER.sha256, "1.3.0", allow_downgrade=True))
    assert json.loads(path.read_text())["id"] == "cmd-2"  # the newest unread order replaces the last


def test_without_a_runtime_directory_there_is_no_hand_off() -> None:
    handoff = UpdateHandoff.from_environment({}, started_at=NOW)
    with pytest.raises(UpdateUnavailable, match="RuntimeDirectory"):
        handoff.request("cmd-1", ORDER)


def test_the_environment_names_both_places(tmp_path: Path) -> None:
    env = {"RUNTIME_DIRECTORY": f"{tmp_path}/a:{tmp_path}/b", "CLINICAM_UPDATE_RUN": str(tmp_path / "u")}
    handoff = UpdateHandoff.from_environment(env, started_at=NOW)
    assert handoff.runtime_dir == tmp_path / "a" and handoff.result_path == tmp_path / "u" / RESULT_NAME


def test_an_unwritable_runtime_directory_is_unavailable_not_a_crash(tmp_path: Path) -> None:
    with pytest.raises(UpdateUnavailable, match="cannot be written"):
        UpdateHandoff(tmp_path / "gone", started_at=NOW).request("cmd-1", ORDER)


@pytest.mark.parametrize("code,event,reason", [
    (2, "update-refused", "invalid"), (3, "update-refused", "bundle"), (4, "update-refused", "busy"),
    (5, "update-failed", "install"), (6, "update-failed", "download"), (7, "update-refused", "server"),
    (1, "update-failed", "error"),
])
def test_each_exit_status_is_one_event(code: int, event: str, reason: str) -> None:
    outcome = parse_outcome(json.dumps({"id": "c-1", "version": "1.4.0", "exit": code, "at": 1}).encode())
    assert outcome is not None
    assert (outcome.event, outcome.reason, outcome.cmd_id, outcome.version) == (event, reason, "c-1", "1.4.0")


@pytest.mark.parametrize("text", [b"", b"[]", b'{"exit": 0}', b'{"exit": true}', b'{"exit": "3"}', b"\xff"])
def test_no_event_for_a_reboot_or_an_unreadable_result(text: bytes) -> None:
    assert parse_outcome(text) is None


def test_free_text_in_a_result_never_reaches_an_event() -> None:
    outcome = parse_outcome(json.dumps({"id": "has space", "version": "-x", "exit": 3}).encode())
    assert outcome is not None and outcome.cmd_id is None and outcome.version is None


def test_a_result_is_reported_once_and_an_old_one_not_at_all(tmp_path: Path) -> None:
    result = tmp_path / RESULT_NAME
    handoff = UpdateHandoff(tmp_path, tmp_path, started_at=NOW)
    assert handoff.outcome() is None  # no result yet
    result.write_text(json.dumps({"id": "c-1", "version": "1.4.0", "exit": 4}))
    os.utime(result, (NOW - 5, NOW - 5))  # written just before this process started (exit 5 restarts it)
    first = handoff.outcome()
    assert first is not None and first.reason == "busy"
    assert handoff.outcome() is None  # once
    os.utime(result, (NOW + 10, NOW + 10))  # a new result (the same file rewritten)
    assert handoff.outcome() is not None
    stale = UpdateHandoff(tmp_path, tmp_path, started_at=NOW + 3600)  # a station restarted an hour later
    assert stale.outcome() is None
