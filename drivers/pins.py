"""The one gpiozero pin factory of a station, chosen by ``[hardware] backend``.

Every device gets this factory explicitly (``pin_factory=``): gpiozero's global default
would silently pick whatever library it finds, and a station must never fall back to
simulation without saying so.
"""

from __future__ import annotations

from typing import Any

from clinicam.common.errors import HardwareError


def make_pin_factory(backend: str) -> Any:
    """``LGPIOFactory`` for ``"pi"``, ``MockFactory(pin_class=MockPWMPin)`` for ``"sim"``."""
    if backend == "sim":
        from gpiozero.pins.mock import MockFactory, MockPWMPin

        return MockFactory(pin_class=MockPWMPin)
    if backend != "pi":
        raise ValueError("hardware backend must be 'pi' or 'sim'")
    try:
        from gpiozero.pins.lgpio import LGPIOFactory

        return LGPIOFactory()
    except Exception as exc:  # ImportError, or lgpio failing to open /dev/gpiochip*
        raise HardwareError(
            "GPIO not available: install python3-lgpio and run on a Raspberry Pi as a user "
            "in the 'gpio' group, or set [hardware] backend = \"sim\" in "
            "/etc/clinicam/station.toml"
        ) from exc
