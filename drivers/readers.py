"""Barcode readers: camera frames in, normalised ``Code`` values out.

Two engines sit behind one ``CodeReader`` protocol so the station can use whichever the
benchmark shows best (``bench/bench_decode.py``): zxing-cpp, which also reads GS1
DataMatrix and PDF417 and is several times faster when restricted to the configured
formats, and pyzbar (libzbar). Both return *identical* ``Code`` values for the same
symbol: zbar drops the leading FNC1 of a GS1 symbol and knows nothing of AIM
identifiers, so its results are normalised here from zbar's GS1 modifier bit.

Nothing in this module logs or formats a decoded payload: codes carry identifiers.
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
from clinicam.common.errors import ReaderUnavailable

SYMBOLOGIES: tuple[str, ...] = (
    "code128",
    "gs1-128",
    "qr",
    "gs1-qr",
    "datamatrix",
    "gs1-datamatrix",
    "pdf417",
    "ean13",
)

# Engine formats; each symbology belongs to one (the GS1 variants to their base format).
FORMATS: tuple[str, ...] = ("code128", "qr", "datamatrix", "pdf417", "ean13")
_BASE: dict[str, str] = {
    "code128": "code128",
    "gs1-128": "code128",
    "qr": "qr",
    "gs1-qr": "qr",
    "datamatrix": "datamatrix",
    "gs1-datamatrix": "datamatrix",
    "pdf417": "pdf417",
    "ean13": "ean13",
}
DEFAULT_FORMATS: tuple[str, ...] = (
    "code128",
    "gs1-128",
    "qr",
    "gs1-qr",
    "datamatrix",
    "gs1-datamatrix",
)

# AIM symbology identifiers (ISO/IEC 15424) for the plain and the GS1 form of each format.
_AIM: dict[str, tuple[str, str | None]] = {
    "code128": ("]C0", "]C1"),
    "qr": ("]Q1", "]Q3"),
    "datamatrix": ("]d1", "]d2"),
    "pdf417": ("]L2", None),
    "ean13": ("]E0", None),
}

Point = tuple[int, int]

# Our format names <-> zxing-cpp's BarcodeFormat member names.
_ZXING_NAMES: dict[str, str] = {
    "code128": "Code128",
    "qr": "QRCode",
    "datamatrix": "DataMatrix",
    "pdf417": "PDF417",
    "ean13": "EAN13",
}
_FROM_ZXING: dict[str, str] = {v: k for k, v in _ZXING_NAMES.items()}


@dataclass(frozen=True)
class Code:
    """One decoded symbol.

    ``text`` is the payload as text; for a GS1 symbology it is the element string with
    ``"\\x1d"`` separators and no leading FNC1 or AIM prefix. ``position`` (the corner
    points in frame pixels, when known) is not part of equality: two engines locate a
    symbol slightly differently but read the same code.
    """

    symbology: str
    text: str
    raw: bytes
    aim: str | None = None
    position: tuple[Point, ...] | None = field(default=None, compare=False)

    def __repr__(self) -> str:
        # A repr that ends up in a traceback or log must not carry the identifier.
        return f"Code(symbology={self.symbology!r}, length={len(self.text)})"


class CodeReader(Protocol):
    """Decodes every supported symbol in a luminance frame."""

    def decode(self, frame: np.ndarray) -> list[Code]: ...


def check_formats(formats: Iterable[str]) -> tuple[str, ...]:
    """Validate configured symbology names (``[reader] formats``) and return them."""
    wanted = tuple(dict.fromkeys(f.lower() for f in formats))
    if not wanted or any(f not in _BASE for f in wanted):
        raise ValueError(f"reader formats must be a non-empty subset of {', '.join(SYMBOLOGIES)}")
    return wanted


def base_formats(symbologies: Iterable[str]) -> tuple[str, ...]:
    """The engine formats needed to read ``symbologies`` (``gs1-128`` needs ``code128``)."""
    return tuple(dict.fromkeys(_BASE[s] for s in symbologies))


def _as_luminance(frame: np.ndarray) -> np.ndarray:
    if frame.dtype != np.uint8 or frame.ndim != 2:
        raise ValueError("frame must be a 2-D uint8 luminance array")
    return np.ascontiguousarray(frame)


class ZxingReader:
    """zxing-cpp, restricted to the configured formats (the 2-D detectors dominate cost)."""

    name = "zxing"

    def __init__(self, formats: Sequence[str] = DEFAULT_FORMATS) -> None:
        try:
            import zxingcpp
        except ImportError as exc:
            raise ReaderUnavailable(
                "zxing-cpp is not installed: pip install zxing-cpp, or set reader engine "
                "to 'pyzbar'"
            ) from exc
        self._z = zxingcpp
        self.formats = check_formats(formats)
        self._mask = zxingcpp.BarcodeFormats(
            [getattr(zxingcpp.BarcodeFormat, _ZXING_NAMES[f]) for f in base_formats(self.formats)]
        )

    def decode(self, frame: np.ndarray) -> list[Code]:
        """Decode every symbol of the configured formats in ``frame``."""
        results = self._z.read_barcodes(
            _as_luminance(frame), formats=self._mask, text_mode=self._z.TextMode.Plain
        )
        codes = (self._to_code(r) for r in results if r.valid)
        return [c for c in codes if c is not None and c.symbology in self.formats]

    def _to_code(self, result: Any) -> Code | None:
        base = _FROM_ZXING.get(result.format.name)
        if base is None:
            return None
        gs1 = result.content_type == self._z.ContentType.GS1
        raw = bytes(result.bytes)
        pos = result.position
        corners = tuple(
            (int(p.x), int(p.y))
            for p in (pos.top_left, pos.top_right, pos.bottom_right, pos.bottom_left)
        )
        return _make_code(base, gs1, raw, corners)


def _make_code(base: str, gs1: bool, raw: bytes, position: tuple[Point, ...] | None) -> Code:
    """Build the normalised ``Code`` both engines agree on."""
    plain_aim, gs1_aim = _AIM[base]
    if gs1 and gs1_aim is not None:
        raw = raw.removeprefix(b"\x1d")
        symbology, aim = f"gs1-{base}" if base != "code128" else "gs1-128", gs1_aim
    else:
        symbology, aim = base, plain_aim
    text = raw.decode("utf-8", errors="replace")
    return Code(symbology=symbology, text=text, raw=raw, aim=aim, position=position)


class PyzbarReader:
    """libzbar through pyzbar's ctypes bindings: Code 128 / GS1-128, QR, EAN-13.

    pyzbar's own ``decode()`` hides zbar's symbol modifiers, so this walks the symbols
    itself to read ``ZBAR_MOD_GS1`` and tell GS1-128 from plain Code 128.
    """

    name = "pyzbar"
    SUPPORTED = ("code128", "qr", "ean13")
    _MOD_GS1 = 1

    def __init__(self, formats: Sequence[str] = DEFAULT_FORMATS) -> None:
        try:
            from pyzbar import pyzbar, wrapper
        except ImportError as exc:  # ImportError also covers a missing libzbar0
            raise ReaderUnavailable(
                "pyzbar or libzbar0 is missing: apt install libzbar0 and pip install pyzbar"
            ) from exc
        wanted = check_formats(formats)
        self.formats = tuple(f for f in wanted if _BASE[f] in self.SUPPORTED)
        if not self.formats:
            raise ReaderUnavailable("zbar reads none of the configured formats: use zxing")
        self._pz, self._w = pyzbar, wrapper
        self._types = {
            "code128": pyzbar.ZBarSymbol.CODE128,
            "qr": pyzbar.ZBarSymbol.QRCODE,
            "ean13": pyzbar.ZBarSymbol.EAN13,
        }
        self._names = {int(v): k for k, v in self._types.items()}
        lib = wrapper.load_libzbar()
        self._get_modifiers = _zbar_fn(lib, "zbar_symbol_get_modifiers", wrapper)
        self._get_type = _zbar_fn(lib, "zbar_symbol_get_type", wrapper)

    def decode(self, frame: np.ndarray) -> list[Code]:
        """Decode the configured formats in ``frame``."""
        pixels = _as_luminance(frame)
        height, width = pixels.shape
        data = pixels.tobytes()
        with self._pz._image_scanner() as scanner, self._pz._image() as image:
            self._configure(scanner)
            w = self._w
            w.zbar_image_set_format(image, self._pz._FOURCC["L800"])
            w.zbar_image_set_size(image, width, height)
            buffer = ctypes.c_char_p(data)
            w.zbar_image_set_data(image, ctypes.cast(buffer, ctypes.c_void_p), len(data), None)
            if w.zbar_scan_image(scanner, image) < 0:
                raise ReaderUnavailable("zbar refused the frame format")
            codes = map(self._to_code, self._pz._symbols_for_image(image))
            return [c for c in codes if c is not None and c.symbology in self.formats]

    def _configure(self, scanner: Any) -> None:
        enable = self._pz.ZBarConfig.CFG_ENABLE
        wanted = {int(self._types[f]) for f in base_formats(self.formats)}
        for symbol in self._pz.ZBarSymbol:
            on = int(symbol) in wanted
            self._w.zbar_image_scanner_set_config(scanner, symbol, enable, int(on))

    def _to_code(self, symbol: Any) -> Code | None:
        base = self._names.get(self._get_type(symbol))
        if base is None:
            return None
        w = self._w
        length = w.zbar_symbol_get_data_length(symbol)
        raw = ctypes.string_at(w.zbar_symbol_get_data(symbol), length)
        gs1 = bool(self._get_modifiers(symbol) & self._MOD_GS1)
        n = w.zbar_symbol_get_loc_size(symbol)
        points = tuple(
            (int(w.zbar_symbol_get_loc_x(symbol, i)), int(w.zbar_symbol_get_loc_y(symbol, i)))
            for i in range(n)
        )
        return _make_code(base, gs1, raw, _bounding_box(points))


def _bounding_box(points: tuple[Point, ...]) -> tuple[Point, ...] | None:
    # zbar reports every scan line crossing a linear symbol; callers want four corners.
    if not points:
        return None
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    left, top, right, bottom = min(xs), min(ys), max(xs), max(ys)
    return ((left, top), (right, top), (right, bottom), (left, bottom))


def _zbar_fn(lib: Any, name: str, wrapper: Any) -> Callable[[Any], int]:
    fn = getattr(lib, name)
    fn.restype = ctypes.c_uint if "modifiers" in name else ctypes.c_int
    fn.argtypes = [ctypes.POINTER(wrapper.zbar_symbol)]
    return fn


def make_reader(engine: str = "auto", formats: Sequence[str] = DEFAULT_FORMATS) -> CodeReader:
    """Build the configured engine; ``auto`` is the pipeline (zxing-cpp plus region passes
    for hard frames) when zxing-cpp is installed, else pyzbar.

    The benchmarks (``bench/bench_decode.py``, ``bench/bench_decode_hard.py``) measured
    zxing-cpp faster than pyzbar, and the pipeline reading 92 % of hard wristband,
    badge and card codes where one plain zxing-cpp call reads 63 %, in about the same
    time; hence the preference. A named engine that cannot be loaded raises
    ``ReaderUnavailable`` instead of silently falling back.
    """
    if engine == "zxing":
        return ZxingReader(formats)
    if engine == "pyzbar":
        return PyzbarReader(formats)
    if engine not in ("auto", "pipeline"):
        raise ValueError("reader engine must be one of auto, zxing, pyzbar, pipeline")
    from clinicam.drivers.pipeline import PipelineReader

    if engine == "pipeline":
        return PipelineReader(formats)
    try:
        return PipelineReader(formats)
    except ReaderUnavailable:
        return PyzbarReader(formats)


class PresentationFilter:
    """Reports a code once per presentation, not once per frame.

    A code counts as still presented while it was last seen less than ``clear_after_s``
    ago; decoders miss the odd frame, so a short gap must not re-trigger a scan. Once it
    has been out of view for ``clear_after_s``, showing it again is a new presentation
    (a nurse re-scanning the same wristband on purpose).
    """

    def __init__(self, clear_after_s: float = 1.0, clock: Callable[[], float] | None = None):
        if clear_after_s <= 0:
            raise ValueError("clear_after_s must be > 0 seconds")
        import time

        self._clear_after_s = clear_after_s
        self._clock = clock or time.monotonic
        self._last_seen: dict[tuple[str, str], float] = {}

    def feed(self, codes: Iterable[Code]) -> list[Code]:
        """Return the codes of this frame that start a new presentation."""
        now = self._clock()
        self._last_seen = {
            k: t for k, t in self._last_seen.items() if now - t < self._clear_after_s
        }
        fresh: list[Code] = []
        for code in codes:
            key = (code.symbology, code.text)
            if key not in self._last_seen and all(c != code for c in fresh):
                fresh.append(code)
            self._last_seen[key] = now
        return fresh

    def reset(self) -> None:
        """Forget everything in view (after a wipe: nothing of a session may linger)."""
        self._last_seen.clear()
