"""Power-fail and tamper inputs at either active level, on gpiozero's MockFactory."""

from __future__ import annotations

import pytest
from clinicam.drivers.power import PowerInputs


def drive(pin, active: bool, active_high: bool) -> None:
    (pin.drive_high if active == active_high else pin.drive_low)()


@pytest.mark.parametrize("active_high", [False, True])
def test_edges_give_distinct_events(factory, active_high):
    got: list[str] = []
    p = PowerInputs(factory, mains_pin=5, mains_active_high=active_high, battery_pin=6,
                    battery_active_high=active_high, tamper_pin=13,
                    tamper_active_high=active_high, on_event=got.append)
    try:
        mains, battery, tamper = (factory.pin(n) for n in (5, 6, 13))
        drive(mains, True, active_high)  # mains present
        assert got == ["mains_lost", "mains_restored"]  # absent at start, then restored
        got.clear()
        drive(mains, False, active_high)
        drive(mains, True, active_high)
        drive(battery, True, active_high)
        drive(tamper, True, active_high)
        drive(tamper, False, active_high)  # closing the case is not an event
        assert got == ["mains_lost", "mains_restored", "battery_critical", "tamper"]
    finally:
        p.close()


def test_inputs_are_optional_and_initially_active_tamper_reported(factory):
    got: list[str] = []
    factory.pin(13)  # pre-create to set the level before the device reads it
    p = PowerInputs(factory, tamper_pin=13, tamper_active_high=True, on_event=got.append)
    try:
        assert got == []
        factory.pin(13).drive_high()
        assert got == ["tamper"]
    finally:
        p.close()
