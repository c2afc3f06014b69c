#!/usr/bin/env python3
"""Break one of the protocol's builders or parsers at a time; the other side's tests must fail.

Issue 14's check that the wire contract has one home: the station's tests use the
relay's builders and parsers (acks, commands, topics, status, opening) and the relay's
tests use the station's (topics, sealing, status, signed events). Each target function
gets ``raise NotImplementedError`` as its first line, the other side's tests run, and
the file is restored. Exit 1 if any mutant leaves the other side green.

Run from a clean checkout (it refuses uncommitted changes under protocol/): it edits
the sources in place while it runs. About five minutes.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STATION = ["tests/unit/firmware"]
RELAY = ["tests/unit/relay"]

# (file, the target's def line, the other side's tests, what it is)
TARGETS: list[tuple[str, str, list[str], str]] = [
    ("protocol/acks.py", r"    def payload\(self\)", STATION, "Ack.payload (relay builds)"),
    ("protocol/acks.py", r"    def parse\(cls", RELAY, "Ack.parse (station parses)"),
    ("protocol/commands.py", r"    def payload\(self\)", STATION, "Command.payload (relay builds)"),
    ("protocol/commands.py", r"    def parse\(cls", [*RELAY, "tests/unit/protocol/test_commands.py"],
     "Command.parse (station parses)"),
    ("protocol/topics.py", r"    def parse\(self", STATION, "Topics.parse (relay parses)"),
    ("protocol/topics.py", r"    def part\(self", RELAY, "Topics.part (station builds)"),
    ("protocol/topics.py", r"    def manifest\(self", RELAY, "Topics.manifest (station builds)"),
    ("protocol/topics.py", r"    def event\(self", RELAY, "Topics.event (station builds)"),
    ("protocol/status.py", r"def read_status\(", STATION, "read_status (relay reads)"),
    ("protocol/status.py", r"def read_event\(", STATION, "read_event (relay reads)"),
    ("protocol/status.py", r"def status_payload\(", RELAY, "status_payload (station builds)"),
    ("protocol/status.py", r"def event_payload\(", RELAY, "event_payload (station builds)"),
    ("protocol/sealing.py", r"def open_capture\(", STATION, "open_capture (relay opens)"),
    ("protocol/sealing.py", r"    def seal\(self", RELAY, "Sealer.seal (station seals)"),
    ("protocol/manifest.py", r"def sign_event\(", RELAY, "sign_event (station signs)"),
    ("protocol/manifest.py", r"def verify_event\(", [*STATION, "tests/integration/test_station_e2e_clock_void.py"],
     "verify_event (relay verifies)"),
]


def mutant(path: str, rx: str, tests: list[str], name: str) -> bool:
    """True if the other side's tests fail with this function broken."""
    file = ROOT / path
    src = file.read_text()
    lines = src.split("\n")
    start = next(k for k, line in enumerate(lines) if re.match(rx, line))
    end = start
    while not lines[end].rstrip().endswith(":"):
        end += 1  # the last line of a signature written over several lines
    indent = re.match(r"\s*", lines[start]).group(0) + "    "  # type: ignore[union-attr]
    file.write_text("\n".join([*lines[:end + 1], f"{indent}raise NotImplementedError('mutant')",
                               *lines[end + 1:]]))
    try:
        run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", *tests], cwd=ROOT,
                             capture_output=True, text=True, timeout=900, check=False)
    finally:
        file.write_text(src)
    tail = run.stdout.strip().splitlines()[-1:] or [run.stderr[-200:]]
    print(f"{name:36s} -> {' '.join(tests)}: {'breaks' if run.returncode else 'STILL GREEN'} ({tail[0]})",
          flush=True)
    return run.returncode != 0


def main() -> int:
    dirty = subprocess.run(["git", "status", "--porcelain", "protocol"], cwd=ROOT, capture_output=True,
                           text=True, check=True).stdout
    if dirty:
        print("protocol/ has uncommitted changes: commit or stash them first", file=sys.stderr)
        return 2
    survivors = [name for path, rx, tests, name in TARGETS if not mutant(path, rx, tests, name)]
    return 1 if survivors else 0


if __name__ == "__main__":
    sys.exit(main())
