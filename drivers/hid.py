"""USB HID handheld scanner: keystrokes in, the same ``Code`` values the camera gives out.

A handheld scanner is a keyboard. If the kernel let its keystrokes through, a scanned
wristband number would be typed into whatever has the console focus — a login prompt,
a shell. So the device is grabbed exclusively (``EVIOCGRAB``) before the first key is
read, and a device that cannot be grabbed is refused rather than read.

Scanners can be set to prefix each scan with its AIM symbology identifier (``]C1`` for
GS1-128…); that prefix is how a GS1 wristband is told from plain Code 128. Without one
the code is reported as ``default_symbology``. The group separator (GS, 0x1d) is sent as
Ctrl+] by most scanners; a configurable substitute character is also accepted.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable
from typing import Any

from clinicam.common.errors import ReaderUnavailable
from clinicam.drivers.readers import Code

log = logging.getLogger(__name__)

# AIM identifier -> symbology name (ISO/IEC 15424).
AIM_SYMBOLOGIES: dict[str, str] = {
    "]C0": "code128",
    "]C1": "gs1-128",
    "]Q1": "qr",
    "]Q3": "gs1-qr",
    "]d1": "datamatrix",
    "]d2": "gs1-datamatrix",
    "]L2": "pdf417",
    "]E0": "ean13",
}

_EV_KEY = 1
_KEY_DOWN = 1

# US layout, which is how scanners ship: key name -> (plain, shifted).
_KEYS: dict[str, tuple[str, str]] = {
    **{f"KEY_{d}": (d, s) for d, s in zip("1234567890", "!@#$%^&*()", strict=True)},
    **{f"KEY_{c}": (c.lower(), c) for c in "ABCDEFGHIJKLMNOPQRSTUVWXYZ"},
    "KEY_MINUS": ("-", "_"),
    "KEY_EQUAL": ("=", "+"),
    "KEY_LEFTBRACE": ("[", "{"),
    "KEY_RIGHTBRACE": ("]", "}"),
    "KEY_SEMICOLON": (";", ":"),
    "KEY_APOSTROPHE": ("'", '"'),
    "KEY_GRAVE": ("`", "~"),
    "KEY_BACKSLASH": ("\\", "|"),
    "KEY_COMMA": (",", "<"),
    "KEY_DOT": (".", ">"),
    "KEY_SLASH": ("/", "?"),
    "KEY_SPACE": (" ", " "),
    **{f"KEY_KP{d}": (d, d) for d in "0123456789"},
    "KEY_KPMINUS": ("-", "-"),
    "KEY_KPDOT": (".", "."),
}
_SHIFTS = {"KEY_LEFTSHIFT", "KEY_RIGHTSHIFT"}
_CTRLS = {"KEY_LEFTCTRL", "KEY_RIGHTCTRL"}
_ENTER = {"KEY_ENTER", "KEY_KPENTER"}


class KeystrokeDecoder:
    """Turns key events into complete scans; pure, so it is tested without a device."""

    def __init__(self, default_symbology: str = "code128", gs_substitute: str | None = None):
        if default_symbology not in AIM_SYMBOLOGIES.values():
            raise ValueError("default_symbology must be one of the reader symbology names")
        self._default = default_symbology
        self._gs_substitute = gs_substitute
        self._held: set[str] = set()
        self._chars: list[str] = []

    def key(self, name: str, value: int) -> Code | None:
        """Feed one key event (``value`` 1 down, 0 up, 2 repeat); return a finished scan."""
        if name in _SHIFTS | _CTRLS:
            if value == 0:
                self._held.discard(name)
            else:
                self._held.add(name)
            return None
        if value != _KEY_DOWN:
            return None
        if name in _ENTER:
            return self._finish()
        self._type(name)
        return None

    def _type(self, name: str) -> None:
        if name == "KEY_RIGHTBRACE" and self._held & _CTRLS:
            self._chars.append("\x1d")  # Ctrl+] is GS, the GS1 separator
            return
        pair = _KEYS.get(name)
        if pair is not None:
            self._chars.append(pair[1] if self._held & _SHIFTS else pair[0])

    def _finish(self) -> Code | None:
        text, self._chars = "".join(self._chars), []
        if self._gs_substitute:
            text = text.replace(self._gs_substitute, "\x1d")
        return parse_scan(text, self._default) if text else None


def parse_scan(text: str, default_symbology: str = "code128") -> Code:
    """Build a ``Code`` from a scanner line, reading its AIM prefix when there is one."""
    aim = text[:3]
    symbology = AIM_SYMBOLOGIES.get(aim)
    if symbology is None:
        aim_out = next((k for k, v in AIM_SYMBOLOGIES.items() if v == default_symbology), None)
        return Code(default_symbology, text, text.encode("utf-8"), aim_out)
    body = text[3:]
    if symbology.startswith("gs1"):
        body = body.removeprefix("\x1d")
    return Code(symbology, body, body.encode("utf-8"), aim)


class HidScanner:
    """Reads a handheld scanner (evdev, the ``hid`` extra) on its own thread.

    ``on_code`` is called from that thread; the station's callback only posts an event.
    ``open_device`` is injectable so the read loop can be tested without ``/dev/input``.
    """

    def __init__(
        self,
        device_path: str,
        on_code: Callable[[Code], None],
        *,
        default_symbology: str = "code128",
        gs_substitute: str | None = None,
        open_device: Callable[[str], Any] | None = None,
    ) -> None:
        self._decoder = KeystrokeDecoder(default_symbology, gs_substitute)
        self._on_code = on_code
        self._device = self._open(device_path, open_device)
        self._thread = threading.Thread(target=self._run, name="hid-scanner", daemon=True)
        self._thread.start()

    @staticmethod
    def _open(path: str, open_device: Callable[[str], Any] | None) -> Any:
        try:
            if open_device is None:
                import evdev

                open_device = evdev.InputDevice
            device = open_device(path)
        except ImportError as exc:
            raise ReaderUnavailable(
                "handheld scanner support is not installed: install python3-evdev (Debian; the "
                "image's package list has it) or the 'hid' extra, or empty [reader] hid_device"
            ) from exc
        except PermissionError as exc:
            raise ReaderUnavailable(
                "handheld scanner not readable: the station must be in the 'input' group and "
                "its unit needs the 20-hid-scanner.conf drop-in (CLINICAM_HID_SCANNER=1)"
            ) from exc
        except OSError as exc:
            raise ReaderUnavailable(
                "handheld scanner not found: check [reader] hid_device (use a stable "
                "/dev/input/by-id/ path) and the USB cable"
            ) from exc
        try:
            device.grab()
        except OSError as exc:
            device.close()
            raise ReaderUnavailable(
                "handheld scanner is held by another process (EVIOCGRAB failed): stop it "
                "so scans cannot reach a console"
            ) from exc
        return device

    def _run(self) -> None:
        from evdev import ecodes

        try:
            for event in self._device.read_loop():
                if event.type != _EV_KEY:
                    continue
                name = ecodes.KEY.get(event.code)
                if isinstance(name, list):
                    name = name[0]
                code = self._decoder.key(str(name), event.value) if name else None
                if code is not None:
                    self._on_code(code)
        except OSError:
            log.warning("handheld scanner disconnected")

    def close(self) -> None:
        """Release the grab and close the device; the read thread ends with it."""
        with contextlib.suppress(OSError):
            self._device.ungrab()
        self._device.close()
