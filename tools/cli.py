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
import os
import re
import sys
import traceback
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
_SOURCE_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep
EXIT_SOFTWARE = 70  # sysexits EX_SOFTWARE: a bug of ours, reported without a traceback
EXIT_INTERRUPTED = 130  # 128 + SIGINT, what a shell reports for Ctrl-C
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE, what `cmd | head` reports for a Unix tool


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("clinicam")
    except PackageNotFoundError:
        return "unknown (not installed: run `make` or `pip install -e .`)"


def _parser() -> tuple[argparse.ArgumentParser, argparse._SubParsersAction]:
    parser = argparse.ArgumentParser(
        prog="clinicam",
        description="clinicam: clinical photos bound to the patient's wristband, sealed in RAM, "
        "delivered over mutual-TLS MQTT and never stored on the station.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug details (never PHI)")
    parser.add_argument("--version", action="version", version=f"clinicam {_version()}")
    sub = parser.add_subparsers(dest="group", metavar="COMMAND")
    return parser, sub


_LITERAL = re.compile(r"``([^`]+)``")
_ROLE = re.compile(r":[a-z]+:`~?([^`]+)`")


def plain(text: str | None) -> str | None:
    """Docstring markup (reStructuredText ``literals`` and :roles:`x`) as a terminal shows it."""
    if not text:
        return text
    return _ROLE.sub(r"'\1'", _LITERAL.sub(r"'\1'", text))


def _plain_help(parser: argparse.ArgumentParser) -> None:
    """Group modules reuse their docstrings as ``--help`` text: print them without markup."""
    parser.description, parser.epilog = plain(parser.description), plain(parser.epilog)
    for action in parser._actions:
        action.help = plain(action.help) if isinstance(action.help, str) else action.help
        if isinstance(action, argparse._SubParsersAction):
            for choice in action._choices_actions:
                choice.help = plain(choice.help) if isinstance(choice.help, str) else choice.help
            for child in set(action.choices.values()):
                _plain_help(child)


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
    if name in sub.choices:
        _plain_help(sub.choices[name])
    return True


def main(argv: Sequence[str] | None = None) -> int:
    """Parse, dispatch, and turn every way a command can end into a message and a status.

    A user never sees a traceback: clinicam's own errors print their message (status 1),
    a missing or unreadable file says which (1), Ctrl-C says so (130), a reader that
    closed the pipe (``clinicam scan … | head -1``) ends the command quietly as Unix
    tools do (141), and anything else is a bug, reported in one line without its
    message (which could hold data we do not print) and with where it happened (70).
    """
    group = "clinicam"
    try:
        args_list = list(sys.argv[1:] if argv is None else argv)
        parser, sub = _parser()
        wanted = [a for a in args_list if not a.startswith("-")][:1]
        names = wanted if wanted and wanted[0] in GROUPS else list(GROUPS)
        built = {name: _register(sub, name) for name in names}
        args = parser.parse_args(args_list)
        if args.group is None:
            parser.print_help()
            return EXIT_USAGE
        group = f"clinicam {args.group}"
        status = _dispatch(parser, args, built)
        sys.stdout.flush()  # a closed pipe shows here, not in the interpreter's exit
        return status
    except ClinicamError as exc:
        print(f"{group}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{group}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        _silence_stdout()
        return EXIT_BROKEN_PIPE
    except OSError as exc:
        print(f"{group}: {_os_error(exc)}", file=sys.stderr)
        return 1
    except Exception as exc:
        print(f"{group}: internal error ({_where(exc)}); please report it with the command line", file=sys.stderr)
        return EXIT_SOFTWARE


def _dispatch(parser: argparse.ArgumentParser, args: argparse.Namespace, built: dict[str, bool]) -> int:
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
    return int(func(args) or 0)


def _silence_stdout() -> None:
    """Point stdout at /dev/null so the interpreter's final flush cannot fail again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        pass


def _os_error(exc: OSError) -> str:
    """``cannot read FILE: Permission denied`` — the file and the system's reason."""
    reason = exc.strerror or type(exc).__name__
    if exc.filename is None:
        return reason
    what = {IsADirectoryError: "is a directory", NotADirectoryError: "a parent is not a directory"}
    return f"{exc.filename}: {what.get(type(exc), reason)}"


def _where(exc: BaseException) -> str:
    """The exception's type and the innermost clinicam line, never its message."""
    frames = traceback.extract_tb(exc.__traceback__)
    ours = [f for f in frames if f.filename.startswith(_SOURCE_ROOT)]
    if not (ours or frames):
        return type(exc).__name__
    frame = (ours or frames)[-1]
    return f"{type(exc).__name__} at {os.path.relpath(frame.filename, _SOURCE_ROOT)}:{frame.lineno}"


if __name__ == "__main__":
    sys.exit(main())
