"""The ``clinicam`` command: one entry point, one module per subcommand group.

Each group lives in the module that owns its work and exposes
``register(subparsers) -> None``, which adds one parser whose ``func(args) -> int``
runs the command. Only the group named on the command line is imported, so
``clinicam station run`` does not pay for the relay's imports and ``--help`` is quick.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from clinicam.common.errors import ClinicamError

# group name -> (module that registers it, one-line help shown by ``clinicam --help``)
GROUPS: dict[str, tuple[str, str]] = {
    "provision": ("clinicam.provisioning.cli", "site PKI, device keys, certificates, broker config"),
    "station": ("clinicam.firmware.station_cli", "run the station daemon or its selftest"),
    "relay": ("clinicam.relay.cli", "run the relay that opens captures and files them"),
    "broker": ("clinicam.relay.brokeragent", "the broker agent: installs the site's CRL bulletins"),
    "demo": ("clinicam.tools.demo", "a scripted ward round on simulated hardware"),
    "cards": ("clinicam.tools.cards", "print the site's code cards (purpose, body site…)"),
    "scan": ("clinicam.tools.scan_cli", "decode and classify codes in image files"),
    "persist": ("clinicam.provisioning.persist.cli", "the encrypted persistent partition: unlock, status, erase"),
}

EXIT_USAGE = 2


def _parser() -> tuple[argparse.ArgumentParser, argparse._SubParsersAction]:
    parser = argparse.ArgumentParser(
        prog="clinicam",
        description="clinicam: clinical photos bound to the patient's wristband, sealed in RAM, "
        "delivered over mutual-TLS MQTT and never stored on the station.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug details (never PHI)")
    sub = parser.add_subparsers(dest="group", metavar="COMMAND")
    return parser, sub


def _register(sub: argparse._SubParsersAction, name: str) -> bool:
    module_name, help_text = GROUPS[name]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name != module_name:
            raise
        sub.add_parser(name, help=f"{help_text} (not built yet)")
        return False
    module.register(sub)
    return True


def main(argv: Sequence[str] | None = None) -> int:
    """Parse, dispatch and turn clinicam's own errors into a message and exit status 1."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    parser, sub = _parser()
    wanted = [a for a in args_list if not a.startswith("-")][:1]
    names = wanted if wanted and wanted[0] in GROUPS else list(GROUPS)
    built = {name: _register(sub, name) for name in names}
    args = parser.parse_args(args_list)
    if args.group is None:
        parser.print_help()
        return EXIT_USAGE
    if not built.get(args.group, False):
        print(f"clinicam {args.group}: not built yet in this version", file=sys.stderr)
        return EXIT_USAGE
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    func = getattr(args, "func", None)
    if func is None:
        parser.parse_args([args.group, "--help"])
        return EXIT_USAGE
    try:
        return int(func(args) or 0)
    except ClinicamError as exc:
        print(f"clinicam {args.group}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
