"""``clinicam relay run|status``: the relay daemon and a look at what it knows.

``run`` connects with the relay's own certificate, files captures and runs until
SIGTERM or SIGINT. ``status`` reads the status file the running relay keeps (no PHI:
station states, pending counts, firmware, certificate expiry, and relay counters).
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from pathlib import Path
from typing import Any

from clinicam.firmware.errors import ConfigError
from clinicam.relay.config import DEFAULT_PATH, load_relay_config


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``relay`` command group to the ``clinicam`` parser."""
    parser = subparsers.add_parser("relay", help="run the relay that opens captures and files them",
                                   description=__doc__)
    sub = parser.add_subparsers(dest="relay_command", metavar="ACTION")
    run = sub.add_parser("run", help="connect to the broker and file captures until stopped")
    run.add_argument("--config", type=Path, default=DEFAULT_PATH, help=f"default {DEFAULT_PATH}")
    run.set_defaults(func=cmd_run)
    status = sub.add_parser("status", help="show the latest status of every station")
    status.add_argument("--config", type=Path, default=DEFAULT_PATH, help=f"default {DEFAULT_PATH}")
    status.add_argument("--json", action="store_true", help="print the status file as JSON")
    status.set_defaults(func=cmd_status)


def cmd_run(args: argparse.Namespace) -> int:
    from clinicam.relay.build import build_relay  # imports paho and the sinks only here

    relay = build_relay(load_relay_config(args.config))
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    relay.start()
    print("clinicam relay: running", file=sys.stderr)
    stop.wait()
    relay.stop()
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    config = load_relay_config(args.config)
    path = Path(config.relay.status_file)
    try:
        data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: no status yet; is 'clinicam relay run' running?") from None
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path}: unreadable status file") from exc
    if args.json:
        print(json.dumps(data, indent=1, sort_keys=True))
        return 0
    print(format_status(data))
    return 0


def format_status(data: dict[str, Any]) -> str:
    """A table of stations, then the relay's counters."""
    cols = ("state", "pending", "pending_bytes", "fw", "clock_synced", "cert_not_after", "seen")
    lines = [f"{'station':24} " + " ".join(f"{c:>14}" for c in cols)]
    for device, st in sorted(data.get("stations", {}).items()):
        lines.append(f"{device:24} " + " ".join(f"{st.get(c, '-')!s:>14}" for c in cols))
    counters = data.get("counters", {})
    if counters:
        lines.append("")
        lines += [f"{name:32} {value}" for name, value in sorted(counters.items())]
    lines.append(f"(updated {data.get('updated', '?')})")
    return "\n".join(lines)
