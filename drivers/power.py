"""Power-fail and tamper inputs (DESIGN §3.4), each an optional gpiozero input.

- ``mains_lost`` / ``mains_restored``: a cart unplugged while its UPS runs. The station
  closes the session and keeps delivering; it does not wipe.
- ``battery_critical``: the UPS is about to die: wipe now.
- ``tamper``: the enclosure was opened: wipe now.

Each input has its own pin and active level (a UPS HAT's "power good" output is often
active-low). The callback only receives an event name; the station turns it into a
queued event (or, for the two wipe triggers, calls the wipe path directly). An input
already active when the station starts is reported at once: a station booting with
its case open must not wait for the next edge.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

EVENTS = ("mains_lost", "mains_restored", "battery_critical", "tamper")


class PowerInputs:
    """Watches the mains-present, battery-critical and tamper inputs; any may be None."""

    def __init__(
        self,
        pin_factory: Any,
        *,
        mains_pin: int | None = None,
        mains_active_high: bool = False,
        battery_pin: int | None = None,
        battery_active_high: bool = False,
        tamper_pin: int | None = None,
        tamper_active_high: bool = False,
        on_event: Callable[[str], None],
        report_initial: bool = True,
    ) -> None:
        self._on_event = on_event
        self._devices: list[Any] = []
        if mains_pin is not None:
            # The mains input is "mains present": losing it is the event that matters.
            dev = self._input(pin_factory, mains_pin, mains_active_high)
            dev.when_deactivated = lambda: self._emit("mains_lost")
            dev.when_activated = lambda: self._emit("mains_restored")
            if report_initial and not dev.is_active:
                self._emit("mains_lost")
        for pin, high, event in (
            (battery_pin, battery_active_high, "battery_critical"),
            (tamper_pin, tamper_active_high, "tamper"),
        ):
            if pin is None:
                continue
            dev = self._input(pin_factory, pin, high)
            dev.when_activated = self._emitter(event)
            if report_initial and dev.is_active:
                self._emit(event)

    def _input(self, factory: Any, pin: int, active_high: bool) -> Any:
        from gpiozero import DigitalInputDevice

        # The pull follows the active level so an unconnected input reads inactive.
        dev = DigitalInputDevice(pin, pull_up=not active_high, pin_factory=factory)
        self._devices.append(dev)
        return dev

    def _emitter(self, event: str) -> Callable[[], None]:
        return lambda: self._emit(event)

    def _emit(self, event: str) -> None:
        self._on_event(event)

    def close(self) -> None:
        for dev in self._devices:
            dev.close()
        self._devices.clear()
