"""The pin factory follows ``[hardware] backend`` and never falls back silently."""

from __future__ import annotations

import sys
import types

import pytest
from clinicam.common.errors import HardwareError
from clinicam.drivers.pins import chip_numbers, header_chip, make_pin_factory
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


# --- the header chip, chosen by label (Pi 5 numbering changed in kernel 6.6.45) ------

PI5_OLD = {0: "gpio-brcmstb@107d508500", 1: "gpio-brcmstb@107d517c00", 2: "7d517c00.gpio",
           3: "7d508500.gpio", 4: "pinctrl-rp1"}  # before 6.6.45: RP1 is chip 4
PI5_NEW = {0: "pinctrl-rp1", 10: "gpio-brcmstb@107d508500", 11: "gpio-brcmstb@107d517c00",
           12: "7d517c00.gpio", 13: "7d508500.gpio"}  # from 6.6.45: RP1 is chip 0
PI4 = {0: "pinctrl-bcm2711", 1: "raspberrypi-exp-gpio"}


@pytest.mark.parametrize(("chips", "expected"), [(PI5_OLD, 4), (PI5_NEW, 0), (PI4, 0)])
def test_header_chip_by_label_under_both_pi5_numberings(chips, expected):
    assert header_chip(sorted(chips), chips.__getitem__) == expected


def test_no_header_chip_names_what_it_saw():
    def label(n):
        if n == 1:
            raise PermissionError(13, "Permission denied")
        return "gpio-sim.0-node0"

    with pytest.raises(HardwareError) as err:
        header_chip([0, 1], label)
    text = str(err.value)
    assert "gpiochip0: gpio-sim.0-node0" in text and "gpiochip1: unreadable (PermissionError)" in text
    with pytest.raises(HardwareError, match="no /dev/gpiochip"):
        header_chip([], label)


def test_chip_numbers_from_dev(tmp_path):
    for name in ("gpiochip4", "gpiochip0", "gpiochip12", "gpiomem", "gpiochip"):
        (tmp_path / name).touch()
    assert chip_numbers(str(tmp_path)) == [0, 4, 12]
    assert chip_numbers(str(tmp_path / "missing")) == []


class _FakeLGPIOFactory:
    def __init__(self, chip=None):
        if chip == 99:
            raise OSError("can not open gpiochip")
        self.chip = chip


def test_pi_opens_the_labelled_chip_not_chip_4(tmp_path, monkeypatch):
    fake = types.ModuleType("gpiozero.pins.lgpio")
    fake.LGPIOFactory = _FakeLGPIOFactory
    monkeypatch.setitem(sys.modules, "gpiozero.pins.lgpio", fake)
    for n in PI5_NEW:
        (tmp_path / f"gpiochip{n}").touch()
    (tmp_path / "gpiochip4").touch()  # 2.0.1 would open this one on a Pi 5
    labels = {**PI5_NEW, 4: "gpio-compat"}
    factory = make_pin_factory("pi", chip_label=labels.__getitem__, dev_dir=str(tmp_path))
    assert factory.chip == 0
    with pytest.raises(HardwareError, match="GPIO chip 99 cannot be opened"):
        make_pin_factory("pi", chip=99)


def test_notify_fifo_failure_names_lg_wd(monkeypatch):
    # What import lgpio raises when its FIFO cannot be made (read-only working directory).
    class Failing(types.ModuleType):
        def __getattr__(self, name):
            raise FileNotFoundError(2, "No such file or directory", ".lgd-nfy0")

    monkeypatch.setitem(sys.modules, "gpiozero.pins.lgpio", Failing("gpiozero.pins.lgpio"))
    monkeypatch.setenv("LG_WD", "/run/clinicam")
    with pytest.raises(HardwareError, match=r"writable /run/clinicam for its notify FIFO"):
        make_pin_factory("pi")
