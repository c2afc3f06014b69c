from __future__ import annotations

import json

import pytest
from clinicam.protocol.commands import CommandGate, CommandRefused
from clinicam.protocol.status import event_payload, utc_stamp

NOW = 1_800_000_000.0


def cmd(cmd: str = "wipe", id: str = "c1", issued: float = NOW - 5, expires: float = NOW + 60,
        **extra: object) -> bytes:
    return json.dumps({"cmd": cmd, "id": id, "issued_at": utc_stamp(issued),
                       "expires_at": utc_stamp(expires), **extra}).encode()


def test_live_command_admitted_once() -> None:
    gate = CommandGate()
    assert gate.admit(cmd(), retained=False, now=NOW).cmd == "wipe"
    with pytest.raises(CommandRefused) as exc:
        gate.admit(cmd(), retained=False, now=NOW)
    assert exc.value.why == "repeated"


@pytest.mark.parametrize(
    "payload,retained,why",
    [
        (cmd(), True, "retained"),
        (cmd(expires=NOW - 1), False, "expired"),
        (cmd(issued=NOW + 3600, expires=NOW + 3700), False, "not-yet-valid"),
        (cmd(issued=NOW - 10, expires=NOW + 86400), False, "lifetime"),
        (cmd(cmd="format"), False, "malformed"),
        (cmd(extra="x"), False, "malformed"),
        (b"\xff", False, "malformed"),
        (json.dumps({"cmd": "ping", "id": "x", "issued_at": "yesterday",
                     "expires_at": "tomorrow"}).encode(), False, "malformed"),
    ],
)
def test_stale_or_bad_commands_refused(payload: bytes, retained: bool, why: str) -> None:
    with pytest.raises(CommandRefused) as exc:
        CommandGate().admit(payload, retained=retained, now=NOW)
    assert exc.value.why == why


def test_event_payload_only_design_keys() -> None:
    assert event_payload("ping", 0.0, cmd_id="c1") == {
        "event": "ping", "at": "1970-01-01T00:00:00.000Z", "cmd_id": "c1"}
    with pytest.raises(ValueError):
        event_payload("x", 0.0, patient="p")
