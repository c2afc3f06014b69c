"""Judge the CI stand-in's serial console: every expected BOOTCHECK line present, none
failed. Run by test-image.sh on the host; unit-tested in tests/appliance.

Usage: python3 parse_console.py CONSOLE_LOG [--station-pending] [--gpio-pending]
Exit status 0 when the boot check passed, 1 otherwise (with the reason printed).
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

LINE = re.compile(r"BOOTCHECK (\S+) (PASS|FAIL|PENDING|INFO)(?: (.*))?$")
# Paths the sandboxed probe must fail to write (names only, nothing is written here).
SANDBOX_PATHS = ["/etc", "/var/lib/clinicam", "/var/tmp", "/opt/clinicam", "/root"]  # noqa: S108
STATION_CHECKS = ["station-ready", "station-memory", "station-ip-allow", "station-stop", "station-wiped",
                  "station-events-dir"]
# The pi backend's GPIO in the real unit (lgpio on gpio-sim); pending where the stand-in
# has no gpio-sim module (a foreign-architecture build) or no station.
GPIO_CHECKS = ["gpio-chips", "gpio-lg-fifo", "gpio-header-chip", "gpio-outputs", "gpio-button"]
# The encrypted persistent partition: first boot, reopen, crypto-erase, fresh start.
PERSIST_CHECKS = [
    "persist-encrypted",
    "persist-first-boot",
    "persist-no-plaintext",
    "persist-key-private",
    "persist-reopen",
    "persist-erase",
    "persist-fresh",
]
EXPECTED = [
    "begin",
    *STATION_CHECKS,
    *GPIO_CHECKS,
    "hid-evdev",
    "firewall",
    "no-swap",
    "journal-volatile",
    "root-overlay",
    "root-lower-ro",
    "tmp-in-ram",
    "persistent-rw",
    *PERSIST_CHECKS,
    "init-on-free",
    "core-pattern",
    "suid-dumpable",
    "getty-masked",
    "ssh-off",
    "station-uid",
    "watchdog-configured",
    *(f"sandbox-write:{p}" for p in SANDBOX_PATHS),
    "sandbox-write:runtime-dir",
    "sandbox-ip-deny",
    "sandbox-ip-localhost",
    "failed-units",
    "end",
]


def results(console: str) -> dict[str, tuple[str, str]]:
    """``name -> (status, detail)`` from the console text; the last line of a name wins."""
    found: dict[str, tuple[str, str]] = {}
    for raw in console.splitlines():
        match = LINE.search(raw.replace("\r", ""))
        if match:
            found[match.group(1)] = (match.group(2), match.group(3) or "")
    return found


def problems(found: dict[str, tuple[str, str]], station_pending: bool, gpio_pending: bool = False) -> list[str]:
    """Why the boot check failed, one entry per check; empty when it passed."""
    out = []
    for name in EXPECTED:
        status = found.get(name, ("MISSING", ""))[0]
        allowed = {"INFO"} if name in ("begin", "end") else {"PASS"}
        if (station_pending and name in STATION_CHECKS) or (
            (gpio_pending or station_pending) and name in GPIO_CHECKS
        ):
            allowed = {"PENDING"}
        if status not in allowed:
            out.append(f"{name}: {status}, expected {'/'.join(sorted(allowed))}")
    return out


def main(argv: list[str]) -> int:
    console = Path(argv[0]).read_text(errors="replace")
    found = results(console)
    for name in EXPECTED:
        status, detail = found.get(name, ("MISSING", ""))
        print(f"  {status:8} {name:28} {detail}")
    bad = problems(found, station_pending="--station-pending" in argv[1:],
                   gpio_pending="--gpio-pending" in argv[1:])
    for line in bad:
        print(f"boot check FAILED: {line}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
