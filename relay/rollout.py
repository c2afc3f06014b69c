"""Which stations an ``update`` goes to: one, a named group, or a stable percentage.

A hospital engineer with 200 stations names them by place (``icu-3-cart``,
``derm-1``); groups follow those names and change when carts move, far more often than
certificates are issued. So groups live in a small file on the operator's or relay
host, ``/etc/clinicam/groups.toml`` (``--groups``), not in the site register (which
stays with the offline CA):

    [groups]
    pilot = ["derm-1", "ward-3-cart"]   # device ids ...
    icu = ["icu-*"]                     # ... or shell patterns over known stations

A pattern matches the *known* stations: those in the relay's status file (seen) and in
the site register (provisioned; ``--register`` or ``[metrics] register``). A plain id is
taken as written, known or not.

``--percent N`` picks, from the group or from every known station, those whose
``bucket(rollout, station)`` — the first 8 bytes of SHA-256 over ``rollout`` and the
device id, as a fraction of 2^64 — is below N %. The rollout id defaults to the
version, so raising 10 to 50 for the same version keeps the first 10 % in, and a new
version draws a fresh sample. Stations whose last status already reports that version
as ``fw`` are skipped (:func:`running_version`): a station re-ordered the version it
runs would install and reboot again for nothing. Nothing here touches the network or
holds PHI: device ids and versions only.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import re
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from clinicam.common.errors import ConfigError
from clinicam.protocol.ids import DEVICE_ID

DEFAULT_GROUPS = Path("/etc/clinicam/groups.toml")
GROUP_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
_PATTERN = re.compile(r"[a-z0-9*?\[\]!-]{1,64}")


class RolloutError(ConfigError):
    """The stations cannot be chosen as asked: the message names the file, group or option."""


def bucket(rollout: str, station: str) -> float:
    """A stable number in [0, 100) for ``station`` in ``rollout`` (same inputs, same number)."""
    digest = hashlib.sha256(f"clinicam-rollout\0{rollout}\0{station}".encode()).digest()
    return int.from_bytes(digest[:8], "big") * 100.0 / 2**64


def pick_percent(stations: Iterable[str], percent: float, rollout: str) -> list[str]:
    """The stations whose bucket is below ``percent``; growing ``percent`` only adds stations."""
    if not 0 < percent <= 100:
        raise RolloutError("--percent must be above 0 and at most 100")
    return sorted(s for s in set(stations) if bucket(rollout, s) < percent)


def load_groups(path: Path) -> dict[str, tuple[str, ...]]:
    """The ``[groups]`` table of ``path``; errors name the file and the group."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise RolloutError(f"{path}: no groups file; write one with a [groups] table "
                           "(README, 'Rolling out an update') or give --groups FILE") from exc
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise RolloutError(f"{path}: cannot be read as TOML ({exc})") from exc
    unknown = set(data) - {"groups"}
    if unknown or not isinstance(data.get("groups"), dict):
        raise RolloutError(f"{path}: must hold exactly one [groups] table"
                           + (f" (unknown: {', '.join(sorted(unknown))})" if unknown else ""))
    return {name: _members(path, name, value) for name, value in data["groups"].items()}


def _members(path: Path, name: str, value: Any) -> tuple[str, ...]:
    if not GROUP_NAME.fullmatch(name):
        raise RolloutError(f"{path}: [groups] {name!r}: a group name is lowercase letters, digits, '-' and '_'")
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise RolloutError(f"{path}: [groups] {name}: must be a non-empty list of device ids or patterns")
    bad = [v for v in value if not _PATTERN.fullmatch(v)]
    if bad:
        raise RolloutError(f"{path}: [groups] {name}: {bad[0]!r} is neither a device id nor a pattern "
                           "such as 'icu-*' (lowercase letters, digits, '-', '*', '?', '[...]')")
    return tuple(value)


def resolve_group(groups: Mapping[str, Sequence[str]], name: str, known: Iterable[str], *,
                  source: Path = DEFAULT_GROUPS) -> list[str]:
    """The device ids of group ``name``: plain ids as written, patterns over ``known``."""
    if name not in groups:
        names = ", ".join(sorted(groups)) or "none"
        raise RolloutError(f"{source}: no group {name!r} (groups: {names})")
    known = sorted(set(known))
    chosen: set[str] = set()
    for member in groups[name]:
        if DEVICE_ID.fullmatch(member):
            chosen.add(member)
            continue
        matched = fnmatch.filter(known, member)
        if not matched:
            raise RolloutError(f"{source}: [groups] {name}: {member!r} matches no known station "
                               "(known: the relay's status file and the site register)")
        chosen.update(matched)
    return sorted(chosen)


def seen_stations(status_file: Path | None) -> dict[str, dict[str, Any]]:
    """The relay status file's stations (device id -> last status); empty if unreadable."""
    if status_file is None:
        return {}
    try:
        stations = json.loads(status_file.read_text(encoding="utf-8")).get("stations", {})
    except (OSError, ValueError, AttributeError):
        return {}
    if not isinstance(stations, dict):
        return {}
    return {s: st for s, st in stations.items()
            if isinstance(s, str) and DEVICE_ID.fullmatch(s) and isinstance(st, dict)}


def known_stations(seen: Iterable[str], provisioned: Iterable[str]) -> list[str]:
    """Stations the relay has seen and those the register lists, as device ids."""
    return sorted({s for s in [*seen, *provisioned] if DEVICE_ID.fullmatch(s)})


def running_version(seen: Mapping[str, Mapping[str, Any]], stations: Iterable[str], version: str) -> set[str]:
    """Those of ``stations`` whose last status reports ``fw`` equal to ``version``."""
    return {s for s in stations if s in seen and seen[s].get("fw") == version}


def answer_cell(outcome: Any) -> tuple[str, str]:
    """(answer, detail) of one station for the table: what its event says, without PHI."""
    event = outcome.event
    if event is None:
        state = outcome.last_state
        return "no answer", f"last status {state}" if state else "no status known"
    name, reason = str(event.get("event", "?")), event.get("reason")
    if name == "update-requested":
        return "requested", f"fetching {event.get('fw', '?')}"
    return name, str(reason) if reason else ""


def format_table(outcomes: Sequence[Any], skipped: Mapping[str, str] | None = None) -> str:
    """station | answer | detail | command id, one line per station (``skipped``: station ->
    the version it already runs, no command sent)."""
    rows = [("station", "answer", "detail", "command")]
    rows += [(station, "skipped", f"already runs {version}", "-") for station, version in (skipped or {}).items()]
    for outcome in outcomes:
        rows.append((outcome.sent.station, *answer_cell(outcome), outcome.sent.id))
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    return "\n".join(f"{r[0]:{widths[0]}}  {r[1]:{widths[1]}}  {r[2]:{widths[2]}}  {r[3]}".rstrip() for r in rows)


def exit_code(outcomes: Sequence[Any]) -> int:
    """0 every station took it, 4 at least one refused, else 3 at least one silent."""
    answers = [answer_cell(o)[0] for o in outcomes]
    if any(a not in ("requested", "no answer") for a in answers):
        return 4
    return 3 if "no answer" in answers else 0
