"""Reader plumbing: format restriction, presentation filter, HID keystrokes."""

from __future__ import annotations

import numpy as np
import pytest
from clinicam.common.errors import ReaderUnavailable
from clinicam.drivers.hid import HidScanner, KeystrokeDecoder, parse_scan
from clinicam.drivers.readers import (
    Code,
    PresentationFilter,
    PyzbarReader,
    ZxingReader,
    check_formats,
    make_reader,
)
from clinicam.drivers.scenes import Scene, Symbol
from evdev import InputEvent, ecodes

GSRN = "796123456789012343"


def frame_with(*symbols):
    return Scene(tuple(symbols), seed=3).render(1280, 720)


def test_formats_restrict_what_is_returned():
    frame = frame_with(Symbol(f"(8018){GSRN}", "gs1-128", 3.0, center=(0.5, 0.3)),
                       Symbol("CLINICAM:END", "qr", 5.0, center=(0.5, 0.75)))
    for cls in (ZxingReader, PyzbarReader):
        assert {c.symbology for c in cls(["gs1-128", "qr"]).decode(frame)} == {"gs1-128", "qr"}
        assert {c.symbology for c in cls(["qr"]).decode(frame)} == {"qr"}
        assert cls(["code128", "qr"]).decode(frame)[0].symbology == "qr"  # GS1 not allowed


def test_bad_arguments():
    with pytest.raises(ValueError):
        check_formats(["aztec"])
    with pytest.raises(ValueError):
        check_formats([])
    with pytest.raises(ReaderUnavailable):
        PyzbarReader(["datamatrix", "pdf417"])
    with pytest.raises(ValueError):
        make_reader("tesseract")
    with pytest.raises(ValueError):
        ZxingReader().decode(np.zeros((10, 10, 3), np.uint8))
    assert isinstance(make_reader("pyzbar"), PyzbarReader)


def test_repr_hides_payload():
    code = Code("code128", "MRN12345678", b"MRN12345678", "]C0")
    assert "12345678" not in repr(code) and "12345678" not in str(code)


def test_presentation_filter(clock):
    f = PresentationFilter(clear_after_s=1.0, clock=clock)
    a = Code("qr", "CLINICAM:END", b"CLINICAM:END", "]Q1")
    b = Code("gs1-128", "8018" + GSRN, b"", "]C1")
    assert f.feed([a]) == [a]
    for _ in range(5):  # held in view, including a missed frame
        clock.advance(0.3)
        assert f.feed([a] if _ != 2 else []) == []
    assert f.feed([a, b, b]) == [b]  # a second code is new; duplicates in a frame once
    clock.advance(1.0)
    assert f.feed([]) == []
    clock.advance(0.1)
    assert f.feed([a]) == [a]  # removed for a while and shown again: new presentation
    f.reset()
    assert f.feed([a]) == [a]
    with pytest.raises(ValueError):
        PresentationFilter(0)


# --- HID ---------------------------------------------------------------------------------

def keys(text: str) -> list[tuple[str, int]]:
    shifted = {'"': "KEY_APOSTROPHE", ":": "KEY_SEMICOLON", "(": "KEY_9", ")": "KEY_0"}
    out: list[tuple[str, int]] = []
    for ch in text:
        if ch == "\x1d":
            out += [("KEY_LEFTCTRL", 1), ("KEY_RIGHTBRACE", 1), ("KEY_RIGHTBRACE", 0),
                    ("KEY_LEFTCTRL", 0)]
        elif ch == "]":
            out += [("KEY_RIGHTBRACE", 1), ("KEY_RIGHTBRACE", 0)]
        elif ch.isupper() or ch in shifted:
            name = shifted.get(ch, f"KEY_{ch}")
            out += [("KEY_LEFTSHIFT", 1), (name, 1), (name, 0), ("KEY_LEFTSHIFT", 0)]
        else:
            name = {"-": "KEY_MINUS", "/": "KEY_SLASH"}.get(ch, f"KEY_{ch.upper()}")
            out += [(name, 1), (name, 0)]
    return [*out, ("KEY_ENTER", 1), ("KEY_ENTER", 0)]


def feed(decoder, text):
    results = [decoder.key(name, value) for name, value in keys(text)]
    return [r for r in results if r is not None]


def test_keystrokes_to_codes():
    d = KeystrokeDecoder()
    assert feed(d, "CLINICAM:SITE:56459004") == [
        Code("code128", "CLINICAM:SITE:56459004", b"CLINICAM:SITE:56459004", "]C0")]
    got = feed(d, f"]C18018{GSRN}\x1d801912")[0]
    assert (got.symbology, got.text, got.aim) == ("gs1-128", f"8018{GSRN}\x1d801912", "]C1")
    got = feed(d, f"]d2\x1d8018{GSRN}")[0]
    assert (got.symbology, got.text) == ("gs1-datamatrix", f"8018{GSRN}")
    assert feed(d, "") == []


def test_gs_substitute_and_default_symbology():
    d = KeystrokeDecoder(default_symbology="qr", gs_substitute="|")
    d.key("KEY_A", 1)
    d.key("KEY_LEFTSHIFT", 1)
    d.key("KEY_BACKSLASH", 1)
    d.key("KEY_LEFTSHIFT", 0)
    d.key("KEY_B", 1)
    assert d.key("KEY_ENTER", 1) == Code("qr", "a\x1db", b"a\x1db", "]Q1")
    assert parse_scan("]E04006381333931") == Code("ean13", "4006381333931",
                                                  b"4006381333931", "]E0")
    with pytest.raises(ValueError):
        KeystrokeDecoder(default_symbology="aztec")


class FakeDevice:
    def __init__(self, events, grab_ok=True):
        self.events, self.grab_ok, self.calls = events, grab_ok, []

    def grab(self):
        self.calls.append("grab")
        if not self.grab_ok:
            raise OSError(16, "Device or resource busy")

    def ungrab(self):
        self.calls.append("ungrab")

    def close(self):
        self.calls.append("close")

    def read_loop(self):
        assert self.calls == ["grab"]  # nothing is read before the exclusive grab
        yield from self.events


def evdev_events(text):
    return [InputEvent(0, 0, ecodes.EV_KEY, ecodes.ecodes[name], value)
            for name, value in keys(text)]


def test_hid_scanner_grabs_then_reads():
    got = []
    device = FakeDevice(evdev_events("]Q1CLINICAM:END"))
    scanner = HidScanner("/dev/input/event-test", got.append, open_device=lambda p: device)
    scanner._thread.join(timeout=5)
    scanner.close()
    assert got == [Code("qr", "CLINICAM:END", b"CLINICAM:END", "]Q1")]
    assert device.calls == ["grab", "ungrab", "close"]


def test_hid_scanner_refuses_ungrabbable_device():
    device = FakeDevice([], grab_ok=False)
    with pytest.raises(ReaderUnavailable):
        HidScanner("/dev/input/x", print, open_device=lambda p: device)
    assert device.calls == ["grab", "close"]
    with pytest.raises(ReaderUnavailable):
        HidScanner("/nonexistent/input", print)
