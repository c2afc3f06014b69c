from __future__ import annotations

import json

import pytest
from clinicam.protocol.commands import COMMANDS, Command, CommandGate, CommandRefused
from clinicam.protocol.status import event_payload, read_event, read_status, status_payload, utc_stamp

NOW = 1_800_000_000.0


def cmd(cmd: str = "wipe", id: str = "c1", issued: float = NOW - 5, expires: float = NOW + 60,
        **extra: object) -> bytes:
    """A command as the relay sends it (the protocol's builder); raw JSON only for what it refuses."""
    if cmd in COMMANDS and not extra:
        return Command(cmd, id, issued, expires).payload()
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
    wiped = event_payload("wiped", NOW, capture_ids=["ab" * 16], count=1, reason="remote")
    assert read_event(wiped) == wiped  # the relay keeps every key the station sends
    with pytest.raises(ValueError):
        event_payload("x", 0.0, patient="p")


def test_the_status_the_station_publishes_is_kept_whole_by_the_relay() -> None:
    status = status_payload(state="online", pending=1, pending_bytes=2048, boot="ab" * 16, fw="0.1.0",
                            uptime_s=12.7, cert_not_after=utc_stamp(NOW + 86400), clock_synced=False)
    assert read_status(status) == status
    assert read_status({**status, "note": "free text"}) == status  # positive control: extra keys go
