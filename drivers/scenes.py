"""Rendered scenes for the simulated camera, the demo and the decode tests.

A scene is what the camera would see: zero or more symbols printed on white labels (a
wristband, a badge, a card), placed on a textured background at a size, angle and
position, under imperfect conditions (blur, sensor noise, low contrast, JPEG
artefacts). Symbols are real: drawn by zxing-cpp's writer, segno (QR) or
python-barcode (Code 128, GS1-128, EAN-13), so the path from frame to decoded code is
the real one. Rendering is seeded and deterministic.

GS1 content is given in the human-readable form, ``(8018)796…(8019)12``.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageFilter

REFERENCE_WIDTH = 1280  # module_px is given for a frame this wide and scales with width

_ZXING_FORMATS = {
    "code128": "Code128",
    "gs1-128": "Code128",
    "qr": "QRCode",
    "gs1-qr": "QRCode",
    "datamatrix": "DataMatrix",
    "gs1-datamatrix": "DataMatrix",
    "pdf417": "PDF417",
    "ean13": "EAN13",
}
_LINEAR = {"code128", "gs1-128", "ean13"}


@dataclass(frozen=True)
class Symbol:
    """One printed symbol: its content, how it is drawn and where it sits in the frame."""

    content: str
    symbology: str
    module_px: float = 3.0  # module size on a REFERENCE_WIDTH frame
    angle: float = 0.0  # degrees, counter-clockwise
    center: tuple[float, float] = (0.5, 0.5)  # as fractions of the frame
    renderer: str = "zxing"  # "zxing", "segno" (qr) or "python-barcode" (linear)


@dataclass(frozen=True)
class Conditions:
    blur: float = 0.0  # Gaussian radius in pixels, on a REFERENCE_WIDTH frame
    noise: float = 0.0  # standard deviation of sensor noise, in grey levels
    contrast: float = 1.0  # 1 = black on white; 0.3 = greys close together
    jpeg_quality: int | None = None  # re-encode once at this quality


@dataclass(frozen=True)
class Scene:
    symbols: tuple[Symbol, ...] = ()
    conditions: Conditions = field(default_factory=Conditions)
    seed: int = 0

    def render(self, width: int = 1280, height: int = 720) -> np.ndarray:
        """The scene as a ``height`` x ``width`` uint8 luminance frame."""
        return render(self, width, height)


def module_matrix(content: str, symbology: str, renderer: str = "zxing") -> np.ndarray:
    """The symbol as a 2-D 0/1 array (1 = dark), one element per module, with quiet zone."""
    if renderer == "segno":
        return _segno_matrix(content, symbology)
    if renderer == "python-barcode":
        return _python_barcode_matrix(content, symbology)
    if renderer != "zxing":
        raise ValueError("renderer must be zxing, segno or python-barcode")
    return _zxing_matrix(content, symbology)


def _zxing_matrix(content: str, symbology: str) -> np.ndarray:
    import zxingcpp

    fmt = getattr(zxingcpp.BarcodeFormat, _ZXING_FORMATS[symbology])
    kwargs = {"gs1": True} if symbology.startswith("gs1") else {}
    barcode = zxingcpp.create_barcode(content, fmt, **kwargs)
    image = np.asarray(zxingcpp.write_barcode_to_image(barcode, scale=1))
    dark = (image < 128).astype(np.uint8)
    return dark[dark.shape[0] // 2 : dark.shape[0] // 2 + 1] if symbology in _LINEAR else dark


def _segno_matrix(content: str, symbology: str) -> np.ndarray:
    import segno

    if symbology != "qr":
        raise ValueError("segno renders plain QR codes only")
    qr = segno.make_qr(content, error="m")
    return np.pad(np.array(list(qr.matrix), dtype=np.uint8), 4)


def _python_barcode_matrix(content: str, symbology: str) -> np.ndarray:
    import barcode

    names = {"code128": "code128", "gs1-128": "gs1_128", "ean13": "ean13"}
    if symbology not in names:
        raise ValueError("python-barcode renders code128, gs1-128 and ean13 here")
    if symbology == "gs1-128":
        content = content.replace("(", "").replace(")", "")
    modules = barcode.get(names[symbology], content).build()[0]
    row = np.array([int(c) for c in modules], dtype=np.uint8)
    return np.pad(row, 10)[None, :]


def _label(symbol: Symbol, scale: float) -> Image.Image:
    matrix = module_matrix(symbol.content, symbol.symbology, symbol.renderer)
    if matrix.shape[0] == 1:  # linear: bars as tall as a wristband barcode
        matrix = np.repeat(matrix, max(30, matrix.shape[1] // 5), axis=0)
    module = max(symbol.module_px * scale, 0.5)
    pad = round(module * 6)
    img = Image.fromarray(((1 - matrix) * 255).astype(np.uint8), "L")
    size = (max(1, round(img.width * module)), max(1, round(img.height * module)))
    img = img.resize(size, Image.Resampling.BILINEAR if module < 2 else Image.Resampling.NEAREST)
    label = Image.new("L", (img.width + 2 * pad, img.height + 2 * pad), 255)
    label.paste(img, (pad, pad))
    return label


def symbol_image(symbol: Symbol, scale: float = 1.0) -> tuple[Image.Image, Image.Image]:
    """A white label carrying ``symbol``, rotated, and the mask of where it covers."""
    label = _label(symbol, scale)
    mask = Image.new("L", label.size, 255)
    bilinear = Image.Resampling.BILINEAR
    return (label.rotate(symbol.angle, bilinear, expand=True),
            mask.rotate(symbol.angle, bilinear, expand=True))


def _background(width: int, height: int, rng: np.random.Generator) -> np.ndarray:
    # A smooth, uneven grey (bedsheet, skin, wall): low-resolution noise scaled up.
    coarse = rng.uniform(70, 170, size=(6, 8)).astype(np.uint8)
    return np.asarray(Image.fromarray(coarse, "L").resize((width, height),
                                                         Image.Resampling.BICUBIC))


def render(scene: Scene, width: int, height: int) -> np.ndarray:
    """Render ``scene`` into a luminance frame (see ``Scene.render``)."""
    rng = np.random.default_rng(scene.seed)
    scale = width / REFERENCE_WIDTH
    frame = Image.fromarray(_background(width, height, rng).copy(), "L")
    for symbol in scene.symbols:
        label, mask = symbol_image(symbol, scale)
        x = int(symbol.center[0] * width - label.width / 2)
        y = int(symbol.center[1] * height - label.height / 2)
        frame.paste(label, (x, y), mask)
    return _degrade(np.asarray(frame), scene.conditions, scale, rng)


def _degrade(frame: np.ndarray, c: Conditions, scale: float, rng: np.random.Generator
             ) -> np.ndarray:
    out = frame.astype(np.float32)
    if c.contrast != 1.0:
        out = 128 + (out - 128) * c.contrast
    if c.blur > 0:
        blurred = Image.fromarray(np.clip(out, 0, 255).astype(np.uint8), "L")
        out = np.asarray(blurred.filter(ImageFilter.GaussianBlur(c.blur * scale)), np.float32)
    if c.noise > 0:
        out = out + rng.normal(0, c.noise, size=out.shape).astype(np.float32)
    result = np.clip(out, 0, 255).astype(np.uint8)
    if c.jpeg_quality is not None:
        buf = io.BytesIO()
        Image.fromarray(result, "L").save(buf, format="JPEG", quality=c.jpeg_quality)
        result = np.asarray(Image.open(buf).convert("L"))
    return result
