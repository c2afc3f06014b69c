"""The command of DESIGN §5: what the relay builds, the station parses back, and nothing else."""

from __future__ import annotations

import pytest
from clinicam.protocol.commands import Command, CommandRefused


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
