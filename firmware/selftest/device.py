"""Selftest of the station's own machine: clock, AEAD, memory locking, camera, panel pins.

The memory probe runs ``harden_process`` in a short child process: ``mlockall`` and
``PR_SET_DUMPABLE`` act on the whole process, and the selftest itself (run from a
shell, often next to a live station) must stay an ordinary process. Devices are
opened the way the station opens them (``build_camera``, one pin factory for every
gpiozero device) and closed again at once.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable

from clinicam.common.errors import HardwareError
from clinicam.drivers.panel import Panel
from clinicam.drivers.pins import make_pin_factory
from clinicam.drivers.power import PowerInputs
from clinicam.firmware.capture.memory import HardeningReport
from clinicam.firmware.clock import ClockSource, KernelClock, SimulatedClock
from clinicam.firmware.config import StationConfig
from clinicam.firmware.hardware import build_camera
from clinicam.firmware.selftest.result import FAIL, PASS, WARN, CheckResult
from clinicam.protocol.sealing import AES_GCM, choose_aead, cpu_has_aes

MemoryProbe = Callable[[], HardeningReport]

# Runs in the child: the same hardening the station does first, reported as JSON. The soft
# RLIMIT_MEMLOCK is raised to the hard one first, as the unit's LimitMEMLOCK=infinity sets both:
# a shell's small soft default would otherwise fail where the service succeeds.
_PROBE = """\
import json, resource
from clinicam.firmware.capture import memory
_, hard = resource.getrlimit(resource.RLIMIT_MEMLOCK)
resource.setrlimit(resource.RLIMIT_MEMLOCK, (hard, hard))
r = memory.harden_process(False)
print(json.dumps({"mlocked": r.mlocked, "non_dumpable": r.non_dumpable and not memory.is_dumpable(),
                  "no_core": r.no_core, "failures": list(r.failures)}))
"""
PROBE_TIMEOUT_S = 60.0


# -- clock and cipher ------------------------------------------------------------------


def check_clock(config: StationConfig, clock_sync: ClockSource | None = None) -> CheckResult:
    """Synchronised, or FAIL when ``require_clock_sync`` (captures are refused), else WARN."""
    sim = config.hardware.backend == "sim"
    source = clock_sync or (SimulatedClock(True) if sim else KernelClock())
    kind = "simulated clock" if sim and clock_sync is None else "system clock"
    if source.synchronised():
        return CheckResult("clock", PASS, f"{kind} synchronised")
    remedy = ("check NTP: 'timedatectl status', systemd-timesyncd or chronyd running, "
              "and the NTP server reachable from this network")
    if config.workflow.require_clock_sync:
        return CheckResult("clock", FAIL, f"{kind} not synchronised: captures are refused until it is", remedy)
    return CheckResult("clock", WARN, f"{kind} not synchronised: captures carry clock_synced=false", remedy)


def check_aead(config: StationConfig) -> CheckResult:
    """Which AEAD seals the parts and why (DESIGN §4): information, a WARN only for slow AES."""
    preference = config.sealing.aead
    aead = choose_aead(preference)
    has_aes = cpu_has_aes()
    if preference == "auto":
        why = "this CPU has AES instructions" if has_aes else "no AES instructions in /proc/cpuinfo"
        return CheckResult("aead", PASS, f"{aead} (auto: {why})")
    if aead == AES_GCM and not has_aes:
        return CheckResult("aead", WARN, f"{aead} set by [sealing] aead, but this CPU has no AES instructions",
                           'set [sealing] aead = "auto" (ChaCha20-Poly1305 is several times faster here)')
    return CheckResult("aead", PASS, f"{aead} (set by [sealing] aead)")


# -- memory ----------------------------------------------------------------------------


def child_memory_probe() -> HardeningReport:
    """``harden_process(False)`` in a child Python with this interpreter and path."""
    done = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True,
                          timeout=PROBE_TIMEOUT_S, check=False)
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        raise HardwareError(f"the memory probe (a child Python) exited {done.returncode} without a report")
    data = json.loads(lines[-1])
    return HardeningReport(bool(data["mlocked"]), bool(data["non_dumpable"]), bool(data["no_core"]),
                           tuple(str(f) for f in data["failures"]))


def check_memory(config: StationConfig, probe: MemoryProbe | None = None) -> CheckResult:
    """mlockall, non-dumpable, no core files: FAIL when the config requires them, else WARN."""
    report = (probe or child_memory_probe)()
    if report.ok:
        return CheckResult("memory", PASS, "mlockall, non-dumpable and no core files all work (child process)")
    found = "; ".join(why.split("; ")[0] for why in report.failures) or "hardening incomplete"
    remedy = ("run the station with LimitMEMLOCK=infinity (as the clinicam unit does) or CAP_IPC_LOCK; "
              "a selftest from a shell has the shell's limits: try 'systemd-run --pipe -p LimitMEMLOCK=infinity "
              "clinicam station selftest'")
    if config.memory_lock_required:
        return CheckResult("memory", FAIL, f"not hardened: {found}", remedy)
    return CheckResult("memory", WARN, f"not hardened (allowed by [memory] lock): {found}", remedy)


# -- devices ---------------------------------------------------------------------------


def check_camera(config: StationConfig) -> CheckResult:
    """The camera opens and yields one scan frame; a ``CameraUnavailable`` is a FAIL."""
    backend = config.hardware.backend
    try:
        camera = build_camera(config)
    except HardwareError as exc:
        return CheckResult("camera", FAIL, str(exc))
    try:
        frames = camera.scan_frames()
        frame = next(frames)
        frames.close()
    except HardwareError as exc:
        return CheckResult("camera", FAIL, str(exc))
    finally:
        camera.close()
    height, width = frame.shape[:2]
    return CheckResult("camera", PASS, f"{backend}: opened, a {width}x{height} scan frame")


def check_panel(config: StationConfig) -> CheckResult:
    """Every panel and power pin can be claimed on the configured pin factory, then released."""
    from gpiozero.exc import GPIOZeroError

    backend = config.hardware.backend
    try:
        factory = make_pin_factory(backend)
    except HardwareError as exc:
        return CheckResult("panel", FAIL, str(exc))
    try:
        pins = _claim_pins(config, factory)
    except (GPIOZeroError, ValueError) as exc:
        return CheckResult("panel", FAIL, f"cannot claim the GPIO pins: {exc}",
                           "check [panel] and [power] for a pin used twice, and that no other program "
                           "holds the GPIO lines ('gpioinfo')")
    finally:
        close = getattr(factory, "close", None)
        if close is not None:
            close()
    return CheckResult("panel", PASS, f"{backend}: pins {', '.join(map(str, pins))} claimed and released")


def _claim_pins(config: StationConfig, factory: object) -> list[int]:
    p, pw = config.panel, config.power
    panel = Panel(factory, p.shutter_pin, light=p.light, red_pin=p.red_pin, green_pin=p.green_pin,
                  blue_pin=p.blue_pin, light_active_high=p.light_active_high, buzzer_pin=p.buzzer_pin,
                  buzzer=p.buzzer, long_press_s=p.long_press_s, bounce_s=p.bounce_s, background=False)
    try:
        power = PowerInputs(factory, mains_pin=pw.mains_pin, mains_active_high=pw.mains_active_high,
                            battery_pin=pw.battery_pin, battery_active_high=pw.battery_active_high,
                            tamper_pin=pw.tamper_pin, tamper_active_high=pw.tamper_active_high,
                            on_event=lambda _event: None, report_initial=False)
        power.close()
    finally:
        panel.close()
    used = [p.shutter_pin, p.red_pin, p.green_pin, p.blue_pin, p.buzzer_pin,
            pw.mains_pin, pw.battery_pin, pw.tamper_pin]
    return [pin for pin in used if pin is not None]
