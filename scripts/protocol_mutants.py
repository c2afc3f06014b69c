#!/usr/bin/env python3
"""Break one of the protocol's builders or parsers at a time; the other side's tests must fail.

Issue 14's check that the wire contract has one home: the station's tests use the
relay's builders and parsers (acks, commands, topics, status, events, opening) and the
relay's tests use the station's (topics, sealing, status, events, signed events). Each
target function's code is replaced by ``raise NotImplementedError`` in a fresh Python
process (``mutant_site/sitecustomize.py``, applied to every Python process the tests
start, through the environment), the other side's tests run, and the exit status says
whether they caught it. Nothing is edited on disk: the tree stays as it is.

    scripts/protocol_mutants.py            every mutant against the other side's whole
                                           unit-test folder (several minutes)
    scripts/protocol_mutants.py --quick    every mutant against its targeted test files
                                           only (what ``make test`` runs, through
                                           tests/integration/test_protocol_mutants.py)
    scripts/protocol_mutants.py --only NAME [--quick]

Exit 1 if any mutant leaves the other side's tests green.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SITE = Path(__file__).resolve().parent / "mutant_site"
STATION = "tests/unit/firmware"
RELAY = "tests/unit/relay"
ENV = "CLINICAM_MUTANT"  # "module:qualname" of the function to break


@dataclass(frozen=True)
class Mutant:
    """``target`` (``module:qualname``) broken; ``side``'s tests, or just ``quick`` of them, must fail."""

    target: str
    side: tuple[str, ...]
    quick: tuple[str, ...]
    what: str

    @property
    def name(self) -> str:
        return self.target.split(":")[1]


F, R = "tests/unit/firmware/", "tests/unit/relay/"
CLOCK_VOID = "tests/integration/test_station_e2e_clock_void.py"
TARGETS: list[Mutant] = [
    Mutant("clinicam.protocol.acks:Ack.payload", (STATION,), (F + "test_uplink_session.py",), "relay builds"),
    Mutant("clinicam.protocol.acks:Ack.parse", (RELAY,), (R + "test_core.py",), "station parses"),
    Mutant("clinicam.protocol.commands:Command.payload", (STATION,), (F + "test_uplink_commands.py",),
           "relay builds"),
    Mutant("clinicam.protocol.commands:Command.parse", (RELAY, "tests/unit/protocol/test_commands.py"),
           ("tests/unit/protocol/test_commands.py",), "station parses"),
    Mutant("clinicam.protocol.topics:Topics.parse", (STATION,), (F + "test_uplink_session.py",), "relay parses"),
    Mutant("clinicam.protocol.topics:Topics.part", (RELAY,), (R + "test_core.py",), "station builds"),
    Mutant("clinicam.protocol.topics:Topics.manifest", (RELAY,), (R + "test_core.py",), "station builds"),
    Mutant("clinicam.protocol.topics:Topics.event", (RELAY,), (R + "test_core.py",), "station builds"),
    # StationStatus and AuditEvent share their builder and reader (protocol.fields.ShapedMessage)
    Mutant("clinicam.protocol.fields:ShapedMessage.parse", (STATION,), (F + "test_uplink_commands.py",),
           "relay reads status and events"),
    Mutant("clinicam.protocol.fields:ShapedMessage.from_dict", (STATION,), (F + "test_uplink_commands.py",),
           "relay reads status and events"),
    Mutant("clinicam.protocol.fields:ShapedMessage.payload", (RELAY,), (R + "test_records.py",),
           "station builds status and events"),
    Mutant("clinicam.protocol.fields:ShapedMessage.as_dict", (RELAY,), (R + "test_records_flush.py",),
           "the JSON object both sides use"),
    Mutant("clinicam.protocol.sealing:open_capture", (STATION,), (F + "test_vault.py",), "relay opens"),
    Mutant("clinicam.protocol.sealing:Sealer.seal", (RELAY,), (R + "test_core.py",), "station seals"),
    Mutant("clinicam.protocol.manifest:sign_event", (RELAY,), (R + "test_core_identity.py",), "station signs"),
    Mutant("clinicam.protocol.manifest:verify_event", (STATION, CLOCK_VOID), (F + "test_uplink_wire.py",),
           "relay verifies"),
]


def _pytest(tests: tuple[str, ...], target: str | None, timeout_s: float,
            quick: bool) -> tuple[int, bool, str]:
    """(exit status, whether the mutant was applied, pytest's last line)."""
    with tempfile.TemporaryDirectory(prefix="clinicam-mutant-") as tmp:
        mark = Path(tmp) / "applied"
        env = {**os.environ, "CLINICAM_MUTANT_MARK": str(mark),
               "PYTHONPATH": os.pathsep.join(p for p in (str(SITE), os.environ.get("PYTHONPATH", "")) if p)}
        env.pop(ENV, None)
        if target is not None:
            env[ENV] = target
        # quick: without hypothesis's plugin (half of pytest's start; no targeted file uses it)
        plugins = ["-p", "no:cacheprovider", *(["-p", "no:hypothesispytest"] if quick else [])]
        proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", *plugins, *tests],
                              cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout_s, check=False)
        applied = mark.exists()
    tail = (proc.stdout.strip().splitlines() or [proc.stderr.strip()[-200:]])[-1]
    return proc.returncode, applied, tail


def baseline(quick: bool, timeout_s: float = 1800) -> tuple[bool, str]:
    """The positive control: (green, last line) of the same tests with nothing broken."""
    tests = sorted({t for m in TARGETS for t in (m.quick if quick else m.side)})
    code, _, tail = _pytest(tuple(tests), None, timeout_s, quick)
    return code == 0, tail


def run(mutant: Mutant, quick: bool, timeout_s: float = 900) -> tuple[bool, str]:
    """(caught, pytest's last line): run the other side's tests with ``mutant`` applied."""
    code, applied, tail = _pytest(mutant.quick if quick else mutant.side, mutant.target, timeout_s, quick)
    if not applied:  # the breakage never happened: a green run would prove nothing
        return False, f"the mutant was not applied ({tail})"
    return code != 0, tail


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="each mutant against its targeted test files only")
    ap.add_argument("--only", metavar="NAME", help="one mutant, e.g. StationStatus.parse")
    args = ap.parse_args(argv)
    chosen = [m for m in TARGETS if args.only in (None, m.name)]
    if not chosen:
        ap.error(f"no mutant {args.only!r}: one of {', '.join(m.name for m in TARGETS)}")
    green, tail = baseline(args.quick)
    print(f"{'nothing broken (positive control)':48s} -> {'green' if green else 'FAILS'} ({tail})", flush=True)
    if not green:
        return 1
    survivors = []
    for mutant in chosen:
        caught, tail = run(mutant, args.quick)
        tests = " ".join(mutant.quick if args.quick else mutant.side)
        print(f"{mutant.name + ' (' + mutant.what + ')':48s} -> {tests}: "
              f"{'breaks' if caught else 'STILL GREEN'} ({tail})", flush=True)
        if not caught:
            survivors.append(mutant.name)
    return 1 if survivors else 0


if __name__ == "__main__":
    sys.exit(main())
