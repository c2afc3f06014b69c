"""Helpers for the appliance checks: the repo's paths, tool lookup, unit parsing.

These tests read the unit files, the image overlay and the customize hook as data and
run the real tools (systemd-analyze, nft, shellcheck) on them. A missing tool skips its
test with the package to install; nothing here needs systemd as PID 1 or a network.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SYSTEMD = REPO / "systemd"
IMAGE_BUILD = REPO / "image-build"
OVERLAY = IMAGE_BUILD / "overlay"
CUSTOMIZE = IMAGE_BUILD / "hooks" / "customize.sh"
HOST_UNITS = Path("/usr/lib/systemd/system")


def need(tool: str, package: str) -> str:
    """Path of ``tool``, or skip the test naming the Debian package that provides it."""
    path = shutil.which(tool)
    if path is None:
        pytest.skip(f"{tool} not installed (apt-get install {package})")
    return path


def parse_unit(*paths: Path) -> dict[str, list[str]]:
    """``Section.Key -> [values]`` over a unit file and its drop-ins, in order.

    systemd allows a key many times (lists accumulate; an empty value resets), which
    configparser cannot represent, hence this small reader.
    """
    values: dict[str, list[str]] = {}
    for path in paths:
        section = ""
        for raw in path.read_text().splitlines():
            line = raw.strip()
            if not line or line.startswith(("#", ";")):
                continue
            if line.startswith("["):
                section = line.strip("[]")
                continue
            key, _, value = line.partition("=")
            slot = values.setdefault(f"{section}.{key.strip()}", [])
            if value.strip():
                slot.append(value.strip())
            else:
                slot.clear()
    return values


def unit_root(dest: Path, extra_units: dict[str, str] | None = None) -> Path:
    """A minimal root for ``systemd-analyze --root``: the host's stock units, ours
    installed as customize.sh installs them, and a stand-in executable for ExecStart."""
    units = dest / "usr/lib/systemd/system"
    shutil.copytree(HOST_UNITS, units, symlinks=True)
    for unit in ("clinicam-station.service", "clinicam-relay.service", "persist-clinicam.service"):
        shutil.copy(SYSTEMD / unit, units / unit)
    shutil.copytree(SYSTEMD / "clinicam-.service.d", units / "clinicam-.service.d")
    station_d = units / "clinicam-station.service.d"
    station_d.mkdir()
    shutil.copy(SYSTEMD / "optional" / "20-hid-scanner.conf", station_d)
    (station_d / "50-network.conf").write_text("[Service]\nIPAddressAllow=192.0.2.10\n")
    for name, text in (extra_units or {}).items():
        (units / name).write_text(text)
    exe = dest / "opt/clinicam/venv/bin/clinicam"
    exe.parent.mkdir(parents=True)
    exe.write_text("#!/bin/sh\nexit 0\n")
    exe.chmod(0o755)
    return dest


def run(*argv: str) -> subprocess.CompletedProcess[str]:
    """Run a tool, capturing text output; never raises on a non-zero exit."""
    return subprocess.run(argv, capture_output=True, text=True, check=False, timeout=60)
