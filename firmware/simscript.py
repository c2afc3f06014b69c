"""A scripted scenario for the simulated station: what the camera sees, what the hands do.

The demo and the end-to-end tests drive a *real* station process through its
simulated hardware only: rendered wristbands and cards in front of the simulated
camera, and gpiozero ``MockFactory`` pins driven like a button, a UPS or a tamper
switch. The station cannot tell it from a clinician: every code is rendered, decoded
and classified, every press goes through gpiozero.

A script is a JSON list of steps, each an object with one action key:

- ``{"show": {"content": "(8018)…", "symbology": "gs1-128"}, "for_s": 1.2}`` — hold a
  code in view, then take it away and wait until it may count again;
- ``{"press": "short" | "long"}`` — the shutter button (or foot pedal);
- ``{"power": "mains_lost" | "mains_restored" | "battery_critical" | "tamper"}``;
- ``{"clock_synced": true | false}``;
- ``{"wait_s": 1.5}``; ``{"wait_for": {"stored": 3}, "timeout_s": 60}`` — until the
  station's counters (``sealed``, ``stored``, ``refused``, ``rejected``, ``voided``)
  reach the given values;
- ``{"mark": "text"}`` — a label in the event stream (the demo's narration).

Scripts hold synthetic identifiers only: they are test fixtures, never patient data.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from clinicam.common.errors import ConfigError
from clinicam.drivers.scenes import Scene, Symbol

log = logging.getLogger(__name__)

Step = Mapping[str, Any]
ACTIONS = ("show", "press", "power", "clock_synced", "wait_s", "wait_for", "mark")
MODULE_PX = {
    "gs1-128": 2.6,
    "code128": 2.6,
    "qr": 6.0,
    "gs1-qr": 6.0,
    "datamatrix": 8.0,
    "gs1-datamatrix": 8.0,
    "pdf417": 3.0,
    "ean13": 3.0,
}


def load_script(path: Path | str) -> list[Step]:
    """Read and check a script file; a bad step is a ``ConfigError`` naming its index."""
    try:
        steps = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path}: not a readable JSON script ({type(exc).__name__})") from None
    if not isinstance(steps, list):
        raise ConfigError(f"{path}: a script is a JSON list of steps")
    for i, s in enumerate(steps, start=1):
        keys = [k for k in ACTIONS if isinstance(s, dict) and k in s]
        if len(keys) != 1:
            raise ConfigError(f"{path}: step {i}: needs exactly one of {', '.join(ACTIONS)}")
    return steps


class ScriptPlayer:
    """Plays a script on its own thread against a station built with backend ``sim``."""

    def __init__(
        self,
        steps: Sequence[Step],
        *,
        camera: Any,
        pin_factory: Any,
        clock_source: Any,
        config: Any,
        counts: Mapping[str, int],
        observe: Callable[[dict[str, Any]], None],
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        # Played steps are dropped: the simulated world must not keep the codes it showed
        # (synthetic wristbands) in the station's memory, or a residue scan of the
        # station process could not tell the station's leftovers from the script's.
        self.steps, self.camera, self.factory = deque(steps), camera, pin_factory
        self.clock_source, self.config, self.counts = clock_source, config, counts
        self._observe, self._sleep = observe, sleep
        self.done = threading.Event()
        self.error: str | None = None

    def start(self) -> threading.Thread:
        thread = threading.Thread(target=self._run, name="sim-script", daemon=True)
        thread.start()
        return thread

    def _run(self) -> None:
        try:
            i = 0
            while self.steps:
                i += 1
                self._step(i, self.steps.popleft())
        except Exception as exc:
            self.error = f"step failed: {type(exc).__name__}"
            log.error("simulation script stopped: %s", self.error)
        finally:
            self._observe({"kind": "script", "done": True, "error": self.error})
            self.done.set()

    def _step(self, i: int, s: Step) -> None:
        if "show" in s:
            self._show(s["show"], float(s.get("for_s", 1.0)))
        elif "press" in s:
            self._press(s["press"])
        elif "power" in s:
            self._power(s["power"])
        elif "clock_synced" in s:
            self.clock_source.synced = bool(s["clock_synced"])
        elif "wait_s" in s:
            self._sleep(float(s["wait_s"]))
        elif "wait_for" in s:
            self._wait_for(s["wait_for"], float(s.get("timeout_s", 60.0)))
        elif "mark" in s:
            self._observe({"kind": "script", "step": i, "mark": str(s["mark"])})

    def _show(self, code: Mapping[str, str], for_s: float) -> None:
        symbology = code["symbology"]
        symbol = Symbol(code["content"], symbology, module_px=MODULE_PX.get(symbology, 3.0))
        self.camera.show(Scene(symbols=(symbol,)))
        self._sleep(for_s)
        self.camera.show(None)
        self._sleep(self.config.reader.presentation_clear_s + 0.3)

    def _press(self, kind: str) -> None:
        pin = self.factory.pin(self.config.panel.shutter_pin)
        hold = self.config.panel.long_press_s + 0.4 if kind == "long" else 0.15
        pin.drive_low()  # the button pulls the input to ground
        self._sleep(hold)
        pin.drive_high()
        self._sleep(0.4)

    def _power(self, what: str) -> None:
        pw = self.config.power
        pins = {
            "mains_lost": (pw.mains_pin, pw.mains_active_high, False),
            "mains_restored": (pw.mains_pin, pw.mains_active_high, True),
            "battery_critical": (pw.battery_pin, pw.battery_active_high, True),
            "tamper": (pw.tamper_pin, pw.tamper_active_high, True),
        }
        pin_no, active_high, active = pins[what]
        if pin_no is None:
            raise ConfigError(f"script drives {what} but [power] has no pin for it")
        pin = self.factory.pin(pin_no)
        (pin.drive_high if active == active_high else pin.drive_low)()
        self._sleep(0.3)

    def _wait_for(self, wanted: Mapping[str, int], timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while any(self.counts.get(k, 0) < v for k, v in wanted.items()):
            if time.monotonic() > deadline:
                raise TimeoutError("wait_for timed out")
            self._sleep(0.1)
