"""Relay presence messages and the standby decision, without a broker."""

from __future__ import annotations

import pytest
from clinicam.protocol.presence import (
    Presence,
    PresenceBoard,
    device_bucket,
    parse_presence,
    presence_filter,
    presence_topic,
    relay_of,
)
from clinicam.relay.partition import Partition
from clinicam.relay.standby import Arbiter

P = "clinicam/v1"  # presence topics below are spelled by hand on purpose: the expected answers
A, B = "a" * 32, "b" * 32


def test_topics_round_trip_and_refuse_non_relay_ids() -> None:
    assert presence_topic(P, "relay-2") == "clinicam/v1/relay/relay-2/status"
    assert relay_of(P, "clinicam/v1/relay/relay-2/status") == "relay-2"
    assert relay_of(P, "clinicam/v1/station-a/status") is None
    assert presence_filter(P) == "clinicam/v1/relay/+/status"
    with pytest.raises(ValueError, match="starts with 'relay'"):
        presence_topic(P, "station-a")


def test_parse_is_strict_and_round_trips() -> None:
    p = Presence("online", A, 1, 3, (1, 0), "2026-12-07T00:00:00.000Z")
    assert parse_presence(p.payload()) == p
    for bad in (b"", b"{", b'{"state":"up","instance":"' + A.encode() + b'"}',
                b'{"state":"online","instance":"x"}',
                b'{"state":"online","instance":"' + A.encode() + b'","workers":2,"shares":[2]}'):
        assert parse_presence(bad) is None


def test_board_knows_whether_a_device_is_served() -> None:
    board = PresenceBoard()
    share = device_bucket("station-a", 2)
    board.update("relay-1", Presence("online", A, 1 - share, 2, (1 - share,)).payload())
    assert not board.serves("station-a")  # the other share's worker only
    board.update("relay-2", Presence("standby", B, share, 2, (share,)).payload())
    assert not board.serves("station-a")
    board.update("relay-2", Presence("online", B, share, 2, (share,)).payload())
    assert board.serves("station-a")
    board.update("relay-2", Presence("lost", B, share, 2, (share,)).payload())
    assert not board.serves("station-a")


def test_standby_waits_for_an_older_claim_and_the_younger_of_two_steps_down() -> None:
    one = Arbiter("relay-1", A, Partition(0, 1))
    two = Arbiter("relay-2", B, Partition(0, 1))
    one.since = "2026-12-07T00:00:00.000Z"
    two.board.update("relay-1", one.presence("online").payload())
    assert not two.should_serve("2026-12-07T00:05:00.000Z")  # a standby never takes a live share
    two.board.update("relay-1", one.presence("lost").payload())
    assert two.should_serve("2026-12-07T00:06:00.000Z")  # ... and takes it when the worker is gone
    two.since = "2026-12-07T00:00:00.000Z"  # both claimed at once: the tie goes by relay id
    one.board.update("relay-2", two.presence("online").payload())
    two.board.update("relay-1", Presence("online", A, 0, 1, (0,), one.since).payload())
    assert one.should_serve("x") and not two.should_serve("x")
    assert Arbiter("relay-3", A, Partition(0, 1), exclusive=False).should_serve("x")
