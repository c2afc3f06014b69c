"""The HID scanner's start-up failures say which problem it is: evdev missing, no
permission, no device (each is a different fix on a first boot)."""

from __future__ import annotations

import sys

import pytest
from clinicam.common.errors import ReaderUnavailable
from clinicam.drivers.hid import HidScanner


def _raises(exc):
    def open_device(_path):
        raise exc
    return open_device


@pytest.mark.parametrize(
    ("exc", "says"),
    [
        (PermissionError(13, "Permission denied"), "'input' group"),
        (FileNotFoundError(2, "No such file or directory"), "check [reader] hid_device"),
    ],
)
def test_open_failures_name_the_problem(exc, says):
    with pytest.raises(ReaderUnavailable, match=r"handheld scanner") as err:
        HidScanner("/dev/input/event9", print, open_device=_raises(exc))
    assert says in str(err.value)


def test_missing_evdev_names_the_package(monkeypatch):
    monkeypatch.setitem(sys.modules, "evdev", None)  # import evdev raises ImportError
    with pytest.raises(ReaderUnavailable, match="install python3-evdev"):
        HidScanner("/dev/input/event9", print)


def test_evdev_is_in_the_image_package_list():
    from pathlib import Path

    packages = Path(__file__).parents[3] / "image-build" / "packages" / "debian.txt"
    assert "python3-evdev" in packages.read_text().split()
