"""The one gpiozero pin factory of a station, chosen by ``[hardware] backend``.

Every device gets this factory explicitly (``pin_factory=``): gpiozero's global default
would silently pick whatever library it finds, and a station must never fall back to
simulation without saying so.

The GPIO chip of the 40-pin header is chosen explicitly, by its label, not by number:
PyPI's gpiozero 2.0.1 opens chip 4 on a Pi 5 whenever ``/dev/gpiochip4`` exists, but
Raspberry Pi kernels from 6.6.45 number the RP1 chip 0 (gpiozero issue 1166), and
chip numbers follow probe order anyway. The label is what the pin controller driver
calls itself, the same on every kernel.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable, Iterable
from typing import Any

from clinicam.common.errors import HardwareError

# The header's GPIO controller, by board family: Pi 5 (RP1), Pi 4 (BCM2711), Pi 3 and
# earlier, Zero 2 W (BCM2835 pin controller driver).
HEADER_CHIP_LABELS = ("pinctrl-rp1", "pinctrl-bcm2711", "pinctrl-bcm2835")
# lgpio's notify FIFO (.lgd-nfyN) goes into $LG_WD, else the current directory: the
# station unit sets LG_WD to its RuntimeDirectory (systemd/clinicam-station.service).
LG_WORK_DIR_ENV = "LG_WD"

ChipLabel = Callable[[int], str]
log = logging.getLogger(__name__)


def make_pin_factory(backend: str, *, chip: int | None = None,
                     chip_label: ChipLabel | None = None, dev_dir: str = "/dev") -> Any:
    """``LGPIOFactory(chip=<header chip>)`` for ``"pi"``, ``MockFactory(pin_class=MockPWMPin)`` for ``"sim"``."""
    if backend == "sim":
        from gpiozero.pins.mock import MockFactory, MockPWMPin

        return MockFactory(pin_class=MockPWMPin)
    if backend != "pi":
        raise ValueError("hardware backend must be 'pi' or 'sim'")
    try:
        from gpiozero.pins.lgpio import LGPIOFactory
    except Exception as exc:  # ImportError, or lgpio's notify FIFO not creatable
        raise HardwareError(_remedy(exc)) from exc
    if chip is None:
        label = chip_label or _lgpio_label
        chip = header_chip(chip_numbers(dev_dir), label)
        log.info("gpio: header chip gpiochip%d (%s)", chip, label(chip))
    try:
        return LGPIOFactory(chip=chip)
    except Exception as exc:  # lgpio failing to open /dev/gpiochipN
        raise HardwareError(
            f"GPIO chip {chip} cannot be opened: run as a user in the 'gpio' group "
            "(raspberrypi-sys-mods' udev rules give /dev/gpiochip* that group), or set "
            '[hardware] backend = "sim" in /etc/clinicam/station.toml'
        ) from exc


def _remedy(exc: BaseException) -> str:
    if isinstance(exc, ImportError):
        return ("GPIO not available: install python3-lgpio and run on a Raspberry Pi, or set "
                '[hardware] backend = "sim" in /etc/clinicam/station.toml')
    # lgpio creates its notify FIFO at import, in $LG_WD or the current directory.
    where = os.environ.get(LG_WORK_DIR_ENV) or "the current directory"
    return (f"GPIO library could not start ({type(exc).__name__}): lgpio needs a writable "
            f"{where} for its notify FIFO; set {LG_WORK_DIR_ENV} to a writable directory "
            "(the station unit uses /run/clinicam)")


def chip_numbers(dev_dir: str = "/dev") -> list[int]:
    """The N of every ``/dev/gpiochipN``, in order."""
    try:
        names = os.listdir(dev_dir)
    except OSError:
        return []
    return sorted(int(m.group(1)) for n in names if (m := re.fullmatch(r"gpiochip(\d+)", n)))


def header_chip(chips: Iterable[int], label: ChipLabel) -> int:
    """The number of the chip whose label is one of ``HEADER_CHIP_LABELS``."""
    seen = []
    for n in chips:
        try:
            name = label(n)
        except Exception as exc:  # a chip we may not open says nothing about the others
            seen.append(f"gpiochip{n}: unreadable ({type(exc).__name__})")
            continue
        if name in HEADER_CHIP_LABELS:
            return n
        seen.append(f"gpiochip{n}: {name or 'no label'}")
    raise HardwareError(
        "no GPIO header chip (" + ", ".join(HEADER_CHIP_LABELS) + ") among "
        + ("; ".join(seen) or "no /dev/gpiochip* at all")
        + ": check that this is a Raspberry Pi and that the station may open /dev/gpiochip*"
    )


def _lgpio_label(chip: int) -> str:
    import lgpio  # type: ignore[import-not-found,unused-ignore]

    handle = lgpio.gpiochip_open(chip)
    try:
        return str(lgpio.gpio_get_chip_info(handle)[3])  # (status, lines, name, label)
    finally:
        lgpio.gpiochip_close(handle)
