"""The pin factory follows ``[hardware] backend`` and never falls back silently."""

from __future__ import annotations

import sys

import pytest
from clinicam.common.errors import HardwareError
from clinicam.drivers.pins import make_pin_factory
from gpiozero.pins.mock import MockFactory, MockPWMPin


def test_sim_is_a_pwm_mock_factory():
    f = make_pin_factory("sim")
    try:
        assert isinstance(f, MockFactory) and f.pin_class is MockPWMPin
    finally:
        f.close()


def test_pi_without_lgpio_raises_instead_of_simulating(monkeypatch):
    # lgpio unavailable (as off a Pi): "pi" must fail loudly, never simulate.
    monkeypatch.setitem(sys.modules, "gpiozero.pins.lgpio", None)
    with pytest.raises(HardwareError):
        make_pin_factory("pi")


def test_unknown_backend():
    with pytest.raises(ValueError):
        make_pin_factory("arduino")
