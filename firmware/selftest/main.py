"""``clinicam station selftest``: is this station fit to take clinical photos?

One line per check, in a fixed order, each ``PASS``, ``WARN`` or ``FAIL`` with what was
found and, when something is wrong, what to do about it::

    FAIL certificate   expired 2026-01-02 (3 days ago) -> renew: clinicam provision renew ...

The checks cover what DESIGN §3 and §7 promise a running station: its identity files
and their modes, the certificate chain and validity, the recipient key, the CRL, the
clock, the AEAD choice, memory locking, the camera, the panel pins, and the broker —
a real TLS handshake and MQTT 5 CONNECT with the installed identity, and whether a
sealed part fits the broker's advertised packet limit. Exit 0 when nothing failed, 1 on
any FAIL, 2 when the configuration itself cannot be loaded.

Nothing here prints PHI: a station's configuration and identity hold none, and no
check captures, scans or seals anything. Every check runs in isolation: one that
raises becomes a FAIL line, and the others still run.
"""

from __future__ import annotations

import datetime as dt
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

from clinicam.common.errors import ClinicamError, ConfigError
from clinicam.firmware.clock import ClockSource
from clinicam.firmware.config import DEFAULT_PATH, EXAMPLE, StationConfig, load_station_config
from clinicam.firmware.selftest import broker as selftest_broker
from clinicam.firmware.selftest import device as selftest_device
from clinicam.firmware.selftest import identity as selftest_identity
from clinicam.firmware.selftest.result import FAIL, PASS, WARN, CheckResult
from clinicam.provisioning import pki

__all__ = ["FAIL", "PASS", "WARN", "CheckResult", "format_line", "main", "run_checks"]

log = logging.getLogger(__name__)

EXIT_OK, EXIT_FAIL, EXIT_CONFIG = 0, 1, 2


def run_checks(
    config: StationConfig,
    *,
    network: bool = True,
    now: dt.datetime | None = None,
    source: str | None = None,
    clock_sync: ClockSource | None = None,
    memory_probe: selftest_device.MemoryProbe | None = None,
) -> list[CheckResult]:
    """Run every check in order and return one result per line.

    ``now`` is the time certificates are judged at (default: the real clock);
    ``clock_sync`` replaces the backend's clock-sync source (``KernelClock`` on a Pi, a
    synchronised ``SimulatedClock`` in simulation); ``memory_probe`` replaces the child
    process that tries ``mlockall``. ``source`` names the file the config came from.
    """
    now = now or pki.utcnow()
    results = [_config_result(source)]
    review = selftest_identity.IdentityReview(Path(config.identity.dir), now)
    results += [_guarded(name, check) for name, check in review.checks()]
    local: list[tuple[str, Callable[[], CheckResult]]] = [
        ("clock", lambda: selftest_device.check_clock(config, clock_sync)),
        ("aead", lambda: selftest_device.check_aead(config)),
        ("memory", lambda: selftest_device.check_memory(config, memory_probe)),
        ("camera", lambda: selftest_device.check_camera(config)),
        ("panel", lambda: selftest_device.check_panel(config)),
        ("renewal", lambda: selftest_identity.check_renewal(config.renewal, review, now)),
    ]
    results += [_guarded(name, check) for name, check in local]
    if not network:
        return results + selftest_broker.skipped("--no-network")
    try:
        results += selftest_broker.check_broker(config, review)
    except Exception as exc:  # a broken check must not hide the others' lines
        results += [_crashed("broker", exc), selftest_broker.skipped("no connection")[1]]
    return results


def _config_result(source: str | None) -> CheckResult:
    where = f"loaded from {source}" if source else "given by the caller (no file)"
    return CheckResult("config", PASS, where)


def _guarded(name: str, check: Callable[[], CheckResult]) -> CheckResult:
    try:
        return check()
    except Exception as exc:  # one failing check is a FAIL line, not a traceback
        return _crashed(name, exc)


def _crashed(name: str, exc: Exception) -> CheckResult:
    log.debug("selftest check %s raised", name, exc_info=True)
    detail = str(exc) if isinstance(exc, ClinicamError) else f"check failed: {type(exc).__name__}: {exc}"
    return CheckResult(name, FAIL, detail, "report this with 'clinicam station selftest' output")


def format_line(result: CheckResult, width: int = 13) -> str:
    """``STATUS name  detail -> remedy`` (the remedy only when there is one)."""
    line = f"{result.status} {result.name:<{width}} {result.detail}"
    return f"{line} -> {result.remedy}" if result.remedy else line


def main(config_path: str | None, *, network: bool = True, out: TextIO = sys.stdout) -> int:
    """Load the config, run the checks, print one line each; 0 = no FAIL, 1 = FAIL, 2 = no config."""
    path = Path(config_path) if config_path else DEFAULT_PATH
    try:
        config = load_station_config(path)
    except ConfigError as exc:
        message = str(exc)
        remedy = "" if "--config" in message else f"fix the file; every key is explained in {EXAMPLE}"
        print(format_line(CheckResult("config", FAIL, message, remedy)), file=out)
        return EXIT_CONFIG
    results = run_checks(config, network=network, source=str(path))
    for result in results:
        print(format_line(result), file=out)
    failed = sum(r.status == FAIL for r in results)
    warned = sum(r.status == WARN for r in results)
    print(f"selftest: {len(results)} checks, {failed} FAIL, {warned} WARN", file=out)
    return EXIT_FAIL if failed else EXIT_OK
