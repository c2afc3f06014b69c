"""``clinicam persist …``: the encrypted persistent partition, for root on a station.

``unlock`` runs at every boot (persist-clinicam.service): it encrypts the partition
the first time and opens it after. ``erase`` is the crypto-erase of decommissioning.
``status`` says what the partition is, for an audit. Errors exit 1 with the remedy.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from clinicam.provisioning.persist import erase as persist_erase
from clinicam.provisioning.persist import partition as persist
from clinicam.provisioning.persist.keys import DEFAULT_KEY_FILE, default_sources

log = logging.getLogger(__name__)
EXIT_USAGE = 2
UNIT = "persist-clinicam.service"


def register(subparsers: Any) -> None:
    """Add the ``persist`` group to the ``clinicam`` command."""
    parser = subparsers.add_parser(
        "persist",
        help="the encrypted persistent partition: unlock, status, crypto-erase",
        description=__doc__.split("\n\n", 1)[1],
    )
    sub = parser.add_subparsers(dest="persist_command", metavar="SUBCOMMAND")
    p = sub.add_parser("unlock", help="encrypt on first boot, then open /dev/mapper/clinicam (boot unit)")
    _common(p)
    p.set_defaults(func=_cmd_unlock)
    p = sub.add_parser("lock", help="close /dev/mapper/clinicam (after unmounting it)")
    _common(p)
    p.set_defaults(func=_cmd_lock)
    p = sub.add_parser("status", help="what the partition is: encrypted, erased, open, key sources")
    _common(p)
    p.add_argument("--json", action="store_true", help="one JSON object instead of lines")
    p.set_defaults(func=_cmd_status)
    p = sub.add_parser(
        "erase",
        help="crypto-erase: destroy the keyslots and the key (identity lost; for decommissioning)",
    )
    _common(p)
    p.add_argument("--yes", action="store_true", help="confirm: the station's identity is destroyed")
    p.set_defaults(func=_cmd_erase)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", type=Path, default=persist.Layout.device, help="the partition (default: %(default)s)")
    p.add_argument("--key-file", type=Path, default=DEFAULT_KEY_FILE, help="the key file (default: %(default)s)")
    p.add_argument("--mapping", default=persist.LABEL, help="device-mapper name (default: %(default)s)")


def _layout(args: argparse.Namespace) -> persist.Layout:
    return persist.Layout(device=args.device, mapping=args.mapping)


def _cmd_unlock(args: argparse.Namespace) -> int:
    print(f"persist: {persist.unlock(_layout(args), default_sources(args.key_file))}")
    return 0


def _cmd_lock(args: argparse.Namespace) -> int:
    layout = _layout(args)
    print(f"persist: {layout.mapped} {'closed' if persist.close_mapping(layout) else 'was not open'}")
    return 0


def _cmd_status(args: argparse.Namespace) -> int:
    info = persist_erase.status(_layout(args), default_sources(args.key_file))
    if args.json:
        print(json.dumps(info, sort_keys=True))
    else:
        for key, value in info.items():
            print(f"{key}: {value}")
    return 0


def _stop_unit() -> None:
    """Under systemd, stop the unit that holds the partition open: its mount and the
    station (which needs the mount) stop first, the station draining and wiping."""
    if shutil.which("systemctl") is None:
        return
    active = subprocess.run(["systemctl", "is-active", "--quiet", UNIT], check=False).returncode == 0
    if active:
        print(f"erase: stopping {UNIT} (and the station, which needs it)")
        subprocess.run(["systemctl", "stop", UNIT], check=False)


def _cmd_erase(args: argparse.Namespace) -> int:
    if not args.yes:
        print(
            "clinicam persist erase destroys this station's identity and configuration for good; "
            "revoke its certificate at the site (clinicam provision revoke), then run it again with --yes",
            file=sys.stderr,
        )
        return EXIT_USAGE
    _stop_unit()
    record = persist_erase.erase(_layout(args), default_sources(args.key_file))
    for line in record.lines():
        print(f"erase: {line}")
    return 0
