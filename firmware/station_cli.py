"""``clinicam station run`` (the daemon) and ``clinicam station selftest``."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import threading
import time
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from clinicam.common.errors import ConfigError
from clinicam.firmware.config import DEFAULT_PATH, StationConfig, load_station_config

if TYPE_CHECKING:  # imported lazily at run time: `clinicam station --help` stays quick
    from clinicam.firmware.capture.vault import WipeReport
    from clinicam.firmware.station import Observer, Station

log = logging.getLogger(__name__)


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "station",
        help="run the station daemon or its selftest",
        description="The clinic camera station: scan a wristband, press the button, the photo is "
        "sealed in RAM and delivered to the record. Nothing is written to disk.",
    )
    sub = parser.add_subparsers(dest="station_command", metavar="COMMAND")
    run = sub.add_parser(
        "run",
        help="run the station (systemd starts this)",
        description="Run the station until SIGTERM (drain, then wipe) or SIGINT/SIGPWR (wipe now).",
    )
    run.add_argument("--config", type=Path, default=DEFAULT_PATH, help=f"station config (default {DEFAULT_PATH})")
    run.add_argument(
        "--events-json",
        action="store_true",
        help="print one JSON line per station event on stdout (no PHI; used by the demo)",
    )
    run.add_argument(
        "--sim-script", type=Path, metavar="FILE", help='with [hardware] backend = "sim": play this scripted scenario'
    )
    run.set_defaults(func=cmd_run)
    test = sub.add_parser(
        "selftest",
        help="check camera, panel, identity, clock, broker; exit 1 on any FAIL",
        description="One line per check with PASS, WARN or FAIL and what to do.",
    )
    test.add_argument("--config", type=Path, default=DEFAULT_PATH, help=f"station config (default {DEFAULT_PATH})")
    test.add_argument("--no-network", action="store_true", help="skip the broker checks")
    test.set_defaults(func=cmd_selftest)


def cmd_selftest(args: argparse.Namespace) -> int:
    from clinicam.firmware.selftest import main as selftest

    return selftest.main(str(args.config), network=not args.no_network)


class JsonLines:
    """The ``--events-json`` stream: one object per line, from any thread."""

    def __init__(self, stream: Any = None) -> None:
        self._stream = stream or sys.stdout
        self._lock = threading.Lock()
        self._t0 = time.monotonic()

    def __call__(self, event: dict[str, Any]) -> None:
        line = json.dumps({"t": round(time.monotonic() - self._t0, 3), **event}, sort_keys=True)
        with self._lock:
            self._stream.write(line + "\n")
            self._stream.flush()


def cmd_run(args: argparse.Namespace) -> int:
    from clinicam.firmware.capture.memory import harden_process

    config = load_station_config(args.config)
    # First thing, before any key or image exists in this process (DESIGN §3.3).
    harden_process(config.memory_lock_required)
    if args.sim_script and config.hardware.backend != "sim":
        raise ConfigError('--sim-script needs [hardware] backend = "sim"')
    observer = JsonLines() if args.events_json else None
    return run_station(config, observer=observer, script=args.sim_script)


EX_TEMPFAIL = 75  # "try again": systemd's Restart=on-failure starts us with the new identity
UNPROVISIONED_POLL_S = 5.0


def run_station(config: StationConfig, *, observer: Observer | None = None, script: Path | None = None) -> int:
    """Build the station, install the signal wipe, run until stopped."""
    from clinicam.common.errors import ProvisioningError
    from clinicam.firmware.hardware import build_hardware
    from clinicam.firmware.simscript import load_script
    from clinicam.firmware.station import Station
    from clinicam.provisioning.identity import load_identity

    steps = load_script(script) if script else None
    try:
        identity = load_identity(Path(config.identity.dir))
    except ProvisioningError as exc:
        return wait_unprovisioned(config, exc, observer)
    station = Station(config, identity, partial(build_hardware, config), observer=observer)
    _install_signals(station, config, observer)
    if steps is not None:
        _play(steps, station, config, observer)
        steps = None  # the player holds what is left of the script, and drops it as it plays
    try:
        return station.run()
    finally:
        station.close()


def wait_unprovisioned(config: StationConfig, error: Exception, observer: Observer | None = None,
                       poll_s: float = UNPROVISIONED_POLL_S) -> int:
    """No identity yet (DESIGN §6 UNPROVISIONED): say so, show ``fault``, wait for one.

    A station without an identity holds nothing to protect, so it does not crash-loop:
    it stays up, tells systemd and the panel, and exits with ``EX_TEMPFAIL`` once an
    identity has been installed, so systemd restarts it into service.
    """
    import signal

    from clinicam.common.errors import ClinicamError
    from clinicam.firmware.hardware import build_hardware
    from clinicam.firmware.sdnotify import Notifier
    from clinicam.provisioning.identity import load_identity

    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    log.error("station not provisioned: %s", error)
    notifier = Notifier()
    notifier.ready("unprovisioned: install an identity with 'clinicam provision install'")
    if observer is not None:
        observer({"kind": "unprovisioned", "reason": type(error).__name__})
    hardware = None
    try:
        hardware = build_hardware(config, on_press=lambda: None, on_long_press=lambda: None,
                                  on_power=lambda _name: None)
        hardware.panel.signal("fault")
    except ClinicamError as exc:
        log.error("panel not available either: %s", exc)
    try:
        while not stop.wait(poll_s):
            notifier.watchdog()
            try:
                load_identity(Path(config.identity.dir))
            except ClinicamError:
                continue
            log.info("identity installed: restarting into service")
            return EX_TEMPFAIL
        return 0
    finally:
        if hardware is not None:
            hardware.close()


def _install_signals(station: Station, config: StationConfig, observer: Observer | None) -> None:
    from clinicam.firmware.capture.wipe import SignalWipe, report_line

    def announce(report: WipeReport) -> None:
        log.warning("%s", report_line(report))
        if observer is not None:
            observer(
                {
                    "kind": "exit",
                    "trigger": report.trigger,
                    "count": report.count,
                    "capture_ids": list(report.capture_ids),
                }
            )
        station.notifier.stopping(f"wiped after {report.trigger}")
        station.uplink.flush(timeout_s=1.5)  # the wipe event and the last status, while connected

    SignalWipe(
        station.wiper, drain=station.drain, drain_timeout_s=config.workflow.stop_drain_s, announce=announce
    ).install()


def _play(steps: Any, station: Station, config: StationConfig, observer: Observer | None) -> None:
    from clinicam.firmware.simscript import ScriptPlayer

    ScriptPlayer(
        steps,
        camera=station.hw.camera,
        pin_factory=station.hw.pin_factory,
        clock_source=station.hw.clock_sync,
        config=config,
        counts=station.counts,
        observe=observer or (lambda _e: None),
    ).start()
