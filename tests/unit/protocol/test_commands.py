"""The command of DESIGN §5: what the relay builds, the station parses back, and nothing else."""

from __future__ import annotations

import json

import pytest
from clinicam.protocol.commands import Command, CommandGate, CommandRefused, UpdateOrder


@pytest.mark.parametrize("cmd", ["identify", "wipe", "ping"])
def test_what_the_relay_builds_the_station_parses_back(cmd: str) -> None:
    sent = Command(cmd, "op-1.a_b", 1_800_000_000.25, 1_800_000_060.5)
    assert Command.parse(sent.payload()) == sent


@pytest.mark.parametrize("bad", [Command("format", "c1", 0.0, 60.0), Command("ping", "bad id", 0.0, 60.0),
                                 Command("ping", "x" * 65, 0.0, 60.0)])
def test_the_relay_cannot_build_what_the_station_would_refuse(bad: Command) -> None:
    with pytest.raises(CommandRefused) as info:
        bad.payload()
    assert info.value.why == "malformed"


# --- update (issue 18): url, sha256, version, allow_downgrade -----------------------------

DIGEST = "ab" * 32
ORDER = UpdateOrder("https://updates.example.org:8443/clinicam/station-1.4.0.raucb", DIGEST, "1.4.0")


def raw(**fields: object) -> bytes:
    """An update command as JSON, with ``fields`` replacing (or, as ``None``, removing) keys."""
    body: dict[str, object] = {"cmd": "update", "id": "u1", "issued_at": "2027-01-15T08:00:00.000Z",
                               "expires_at": "2027-01-15T08:05:00.000Z", **ORDER.fields()}
    body.update(fields)
    return json.dumps({k: v for k, v in body.items() if v is not None}).encode()


@pytest.mark.parametrize("allow", [False, True])
def test_an_update_round_trips_with_its_order(allow: bool) -> None:
    sent = Command("update", "u-1", 1_800_000_000.0, 1_800_000_300.0,
                   UpdateOrder(ORDER.url, DIGEST, "1.4.0+pi4", allow_downgrade=allow))
    assert Command.parse(sent.payload()) == sent


def test_allow_downgrade_is_optional_and_defaults_to_no() -> None:
    parsed = Command.parse(raw(allow_downgrade=None))
    assert parsed.update == ORDER and parsed.update.allow_downgrade is False
    assert Command.parse(raw()).update == ORDER  # positive control: the full form parses


@pytest.mark.parametrize("fields", [
    {"url": "http://updates.example.org/b.raucb"},  # https only
    {"url": "file:///run/b.raucb"},
    {"url": "https://"},
    {"url": "https://user:pw@updates.example.org/b.raucb"},  # no credentials in a URL
    {"url": "https://updates.example.org/b c.raucb"},
    {"url": "https://updates.example.org/b.raucb#frag"},
    {"url": "https://updates.example.org/" + "a" * 1100},
    {"url": "https://-o/etc/shadow"},
    {"url": 7},
    {"sha256": "AB" * 32},  # lowercase hex only
    {"sha256": "ab" * 31},
    {"sha256": None},
    {"version": "-rf"},  # never looks like an option to the root scripts
    {"version": "1.4 beta"},
    {"version": "v" * 41},
    {"version": 14},
    {"version": None},
    {"url": None},
    {"allow_downgrade": "yes"},
    {"allow_downgrade": 1},
    {"note": "x"},
])
def test_a_malformed_update_is_refused(fields: dict[str, object]) -> None:
    with pytest.raises(CommandRefused) as info:
        Command.parse(raw(**fields))
    assert info.value.why == "malformed"


def test_update_fields_on_another_command_and_an_update_without_them_are_refused() -> None:
    for payload in (raw(cmd="ping"), raw(url=None, sha256=None, version=None, allow_downgrade=None)):
        with pytest.raises(CommandRefused):
            Command.parse(payload)
    with pytest.raises(CommandRefused):  # the builder refuses what the parser would
        Command("update", "u1", 0.0, 60.0).payload()
    with pytest.raises(CommandRefused):
        Command("ping", "u1", 0.0, 60.0, ORDER).payload()


def test_a_key_given_twice_is_malformed() -> None:
    good = raw().decode()
    assert Command.parse(good.encode()).update == ORDER  # positive control
    twice = good.replace('"version": "1.4.0"', '"version": "1.4.0", "version": "0.1.0"')
    assert twice != good
    with pytest.raises(CommandRefused) as info:
        Command.parse(twice.encode())
    assert info.value.why == "malformed"


def test_an_update_follows_the_same_gate_as_any_command() -> None:
    """Stale, retained or replayed updates are refused like a wipe; the live one passes once."""
    now = 1_800_000_000.0

    def update(issued: float = now - 5, expires: float = now + 60) -> bytes:
        return Command("update", "u1", issued, expires, ORDER).payload()

    gate = CommandGate()
    for payload, retained, why in ((update(), True, "retained"), (update(expires=now - 1), False, "expired"),
                                   (update(issued=now + 3600, expires=now + 3700), False, "not-yet-valid"),
                                   (update(issued=now - 10, expires=now + 86400), False, "lifetime")):
        with pytest.raises(CommandRefused) as info:
            gate.admit(payload, retained=retained, now=now)
        assert info.value.why == why
    assert gate.admit(update(), retained=False, now=now).update == ORDER
    with pytest.raises(CommandRefused) as info:
        gate.admit(update(), retained=False, now=now)
    assert info.value.why == "repeated"
