"""Judge the update boot test's serial consoles (test-update.sh): every expected
BOOTCHECK line present and passing, and the persistent identity the same on every boot.
Unit-tested in tests/appliance.

Usage: python3 parse_update_console.py CONSOLE_LOG
Exit status 0 when the update story passed, 1 otherwise (with the reasons printed).
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from parse_console import results

# In the order the story runs: slot A (refusals, install), slot B confirmed (install a
# broken update), slot B again after the broken trial rolled back.
EXPECTED = [
    "update-begin",
    "station-ready-1",
    "ab-slot-a",
    "keyring",
    "rauc-status",
    "identity-1",
    "update-server-firewall",
    "update-server-other-port",
    "refuse-bad-signature",
    "refuse-unsigned",
    "refuse-compatible",
    "refuse-downgrade",
    "rauc-refuses-compatible",
    "rauc-refuses-downgrade",
    "station-after-refusals",
    "good-fetch-resumed",
    "station-ready-2",
    "good-marked-after-connected",
    "good-booted-b",
    "good-marked-good",
    "good-reported",
    "identity-2",
    "station-ready-4",
    "rollback-slot-b",
    "rollback-reported",
    "rollback-station-event",
    "identity-4",
    "failed-units",
    "update-end",
]
INFO_ONLY = {"update-begin", "update-end"}
IDENTITY = re.compile(r"sha=([0-9a-f]{16})")


def problems(found: dict[str, tuple[str, str]]) -> list[str]:
    """Why the update story failed, one entry per reason; empty when it passed."""
    out = []
    for name in EXPECTED:
        status = found.get(name, ("MISSING", ""))[0]
        want = "INFO" if name in INFO_ONLY else "PASS"
        if status != want:
            out.append(f"{name}: {status}, expected {want}")
    sums = {IDENTITY.search(found[n][1]).group(1) for n in found  # type: ignore[union-attr]
            if n.startswith("identity-") and IDENTITY.search(found[n][1])}
    if len(sums) > 1:
        out.append(f"identity changed across updates: {sorted(sums)}")
    return out


TIME = re.compile(r"BOOTCHECK-INFO time (.*)")


def main(argv: list[str]) -> int:
    text = Path(argv[0]).read_text(errors="replace")
    found = results(text)
    for name in EXPECTED:
        status, detail = found.get(name, ("MISSING", ""))
        print(f"  {status:8} {name:26} {detail}")
    for m in TIME.finditer(text):  # the time each step took, in the guest (uptime)
        print(f"  time     {m.group(1).strip()}")
    bad = problems(found)
    for line in bad:
        print(f"update boot test FAILED: {line}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
