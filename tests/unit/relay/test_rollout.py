"""Choosing the stations of an update (clinicam.relay.rollout): stable percentages, groups, the table."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest
from clinicam.relay.fanout import Outcome
from clinicam.relay.remote import Sent
from clinicam.relay.rollout import (
    RolloutError,
    bucket,
    exit_code,
    format_table,
    known_stations,
    load_groups,
    pick_percent,
    resolve_group,
    running_version,
    seen_stations,
)

FLEET = [f"ward-{w}-cart-{c}" for w in range(1, 21) for c in range(1, 11)]  # 200 stations


def test_the_bucket_is_stable_and_depends_on_rollout_and_station() -> None:
    assert bucket("1.4.0", "ward-1-cart-1") == bucket("1.4.0", "ward-1-cart-1")
    assert bucket("1.4.0", "ward-1-cart-1") != bucket("1.4.0", "ward-1-cart-2")
    assert bucket("1.4.0", "ward-1-cart-1") != bucket("1.5.0", "ward-1-cart-1")
    assert all(0 <= bucket("1.4.0", s) < 100 for s in FLEET)


def test_raising_the_percentage_keeps_those_already_chosen() -> None:
    chosen = [set(pick_percent(FLEET, p, "1.4.0")) for p in (1, 10, 25, 50, 100)]
    for smaller, larger in itertools.pairwise(chosen):
        assert smaller <= larger
    assert chosen[-1] == set(FLEET)
    assert 5 <= len(chosen[1]) <= 40  # about 10 % of 200 (binomial; the inputs are fixed, so is this)
    assert set(pick_percent(FLEET, 10, "1.4.0")) == chosen[1]  # the same call, the same stations
    assert set(pick_percent(FLEET, 10, "1.5.0")) != chosen[1]  # a new version draws a new sample


def test_the_choice_does_not_depend_on_who_else_is_known() -> None:
    """A station added to the fleet does not move the others in or out."""
    base = set(pick_percent(FLEET[:100], 30, "r1"))
    assert base == set(pick_percent(FLEET, 30, "r1")) & set(FLEET[:100])


@pytest.mark.parametrize("percent", [0, -5, 100.5])
def test_a_percentage_out_of_range_is_refused(percent: float) -> None:
    with pytest.raises(RolloutError, match="--percent"):
        pick_percent(FLEET, percent, "r1")


def groups_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "groups.toml"
    path.write_text(text)
    return path


def test_groups_resolve_ids_as_written_and_patterns_over_known_stations(tmp_path: Path) -> None:
    path = groups_file(tmp_path, '[groups]\npilot = ["derm-1", "ward-3-cart-2"]\nward-3 = ["ward-3-*"]\n'
                       'mixed = ["ward-1-cart-1[0]", "new-station"]\n')
    groups = load_groups(path)
    assert resolve_group(groups, "pilot", FLEET, source=path) == ["derm-1", "ward-3-cart-2"]  # derm-1 not known
    assert resolve_group(groups, "ward-3", FLEET, source=path) == sorted(s for s in FLEET if s.startswith("ward-3-"))
    assert resolve_group(groups, "mixed", FLEET, source=path) == ["new-station", "ward-1-cart-10"]


@pytest.mark.parametrize("text,message", [
    ('[groups]\nicu = ["icu-*"]\n', "'icu-\\*' matches no known station"),
    ('[groups]\npilot = ["derm-1"]\n', "no group 'icu'"),
])
def test_a_group_that_chooses_nothing_is_refused_with_its_name(tmp_path: Path, text: str, message: str) -> None:
    path = groups_file(tmp_path, text)
    with pytest.raises(RolloutError, match=message) as info:
        resolve_group(load_groups(path), "icu", FLEET, source=path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize("text,message", [
    ("groups = 1\n", "exactly one \\[groups\\] table"),
    ('[groups]\npilot = []\n', "non-empty list"),
    ('[groups]\npilot = "derm-1"\n', "non-empty list"),
    ('[groups]\npilot = ["Derm 1"]\n', "neither a device id nor a pattern"),
    ('[groups]\n"Pilot Group" = ["derm-1"]\n', "group name"),
    ('[groups]\npilot = ["derm-1"]\n[other]\n', "unknown: other"),
    ("[groups\n", "cannot be read as TOML"),
])
def test_a_bad_groups_file_names_file_and_problem(tmp_path: Path, text: str, message: str) -> None:
    path = groups_file(tmp_path, text)
    with pytest.raises(RolloutError, match=message) as info:
        load_groups(path)
    assert str(path) in str(info.value)


def test_a_missing_groups_file_says_how_to_make_one(tmp_path: Path) -> None:
    with pytest.raises(RolloutError, match="no groups file"):
        load_groups(tmp_path / "absent.toml")


def test_known_stations_come_from_the_status_file_and_the_register(tmp_path: Path) -> None:
    status = tmp_path / "status.json"
    status.write_text(json.dumps({"stations": {"ward-1-cart-1": {"state": "online", "fw": "1.4.0"},
                                               "BAD ID": {"state": "online"}, "ward-1-cart-2": "junk"}}))
    seen = seen_stations(status)
    assert list(seen) == ["ward-1-cart-1"]
    assert known_stations(seen, ["derm-1", "ward-1-cart-1"]) == ["derm-1", "ward-1-cart-1"]
    assert seen_stations(tmp_path / "absent.json") == {} and seen_stations(None) == {}
    assert running_version(seen, ["ward-1-cart-1", "derm-1"], "1.4.0") == {"ward-1-cart-1"}
    assert running_version(seen, ["ward-1-cart-1"], "1.5.0") == set()


def outcome(station: str, event: dict[str, object] | None, last_state: str | None = None) -> Outcome:
    return Outcome(Sent(station, "update", f"id-{station}", 0.0, 300.0), event, last_state)


def test_the_table_and_the_exit_status() -> None:
    took = outcome("ward-1-cart-1", {"event": "update-requested", "fw": "1.4.0", "cmd_id": "id-ward-1-cart-1"})
    silent = outcome("ward-1-cart-2", None, "offline")
    refused = outcome("ward-1-cart-3", {"event": "update-refused", "reason": "unavailable"})
    table = format_table([took, silent, refused], {"ward-1-cart-4": "1.4.0"})
    lines = table.splitlines()
    assert lines[0].split() == ["station", "answer", "detail", "command"]
    assert lines[1].split() == ["ward-1-cart-4", "skipped", "already", "runs", "1.4.0", "-"]
    assert lines[2].split() == ["ward-1-cart-1", "requested", "fetching", "1.4.0", "id-ward-1-cart-1"]
    assert lines[3].split() == ["ward-1-cart-2", "no", "answer", "last", "status", "offline", "id-ward-1-cart-2"]
    assert lines[4].split() == ["ward-1-cart-3", "update-refused", "unavailable", "id-ward-1-cart-3"]
    assert exit_code([took]) == 0
    assert exit_code([took, silent]) == 3
    assert exit_code([took, silent, refused]) == 4
    assert exit_code([]) == 0
