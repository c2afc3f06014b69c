"""Rendered scenes for the simulated camera, the demo and the decode tests.

A scene is what the camera would see: zero or more symbols printed on white labels (a
wristband, a badge, a card), placed on a textured background at a size, angle and
position, under imperfect conditions: Gaussian and motion blur, sensor noise, low
contrast, JPEG artefacts, a label tilted away from the camera or wrapped round a wrist,
specular glare on a laminated card, and skin, cloth or gradient backgrounds. Symbols
are real: drawn by zxing-cpp's writer, segno (QR) or python-barcode (Code 128, GS1-128,
EAN-13), so the path from frame to decoded code is the real one. Rendering is seeded and deterministic.

GS1 content is given in the human-readable form, ``(8018)796…(8019)12``.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field

import numpy as np
from clinicam.drivers.preprocess import perspective_coefficients
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
    tilt: float = 0.0  # degrees the label turns away from the camera (about its vertical)
    curvature: float = 0.0  # label width / wrist circumference: 0 flat, 0.5 half-way round
    damage: tuple[float, float] | None = None  # a smear across the bars: (x from, x to) of the label


@dataclass(frozen=True)
class Conditions:
    blur: float = 0.0  # Gaussian radius in pixels, on a REFERENCE_WIDTH frame
    noise: float = 0.0  # standard deviation of sensor noise, in grey levels
    contrast: float = 1.0  # 1 = black on white; 0.3 = greys close together
    jpeg_quality: int | None = None  # re-encode once at this quality
    motion: float = 0.0  # motion blur length in pixels, on a REFERENCE_WIDTH frame
    motion_angle: float = 0.0  # direction of the motion, degrees
    glare: float = 0.0  # 0 none; 1 a highlight that saturates the middle of a label
    background: str = "smooth"  # "smooth", "skin", "cloth" or "gradient"


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
    if symbol.damage is not None:
        matrix = _smear(matrix, symbol.damage)
    module = max(symbol.module_px * scale, 0.5)
    pad = round(module * 6)
    img = Image.fromarray(((1 - matrix) * 255).astype(np.uint8), "L")
    size = (max(1, round(img.width * module)), max(1, round(img.height * module)))
    img = img.resize(size, Image.Resampling.BILINEAR if module < 2 else Image.Resampling.NEAREST)
    label = Image.new("L", (img.width + 2 * pad, img.height + 2 * pad), 255)
    label.paste(img, (pad, pad))
    return label


def _smear(matrix: np.ndarray, span: tuple[float, float]) -> np.ndarray:
    """Ink run across the bars between two fractions of the width (a damaged band).

    Every module in the span takes its left neighbour's colour, so bars merge: a symbol
    that no reader may "correct" into some other valid code.
    """
    out = matrix.copy()
    start, stop = (round(f * matrix.shape[1]) for f in span)
    out[:, start:stop] = 1
    return out


def _cylinder(label: Image.Image, curvature: float) -> Image.Image:
    """The label wrapped round a cylinder and seen from the front: modules near the
    edges are squeezed and darker (the band turns away from the light)."""
    pixels = np.asarray(label, np.float32)
    width = pixels.shape[1]
    theta_max = np.pi * min(curvature, 0.95)  # half the angle the label covers
    radius = width / (2 * theta_max)
    out_w = max(2, int(2 * radius * np.sin(theta_max)))
    xs = (np.arange(out_w) + 0.5 - out_w / 2) / radius
    theta = np.arcsin(np.clip(xs, -1, 1))
    src = theta * radius + width / 2 - 0.5
    lo = np.clip(np.floor(src).astype(int), 0, width - 1)
    hi = np.clip(lo + 1, 0, width - 1)
    frac = (src - np.floor(src))[None, :]
    warped = pixels[:, lo] * (1 - frac) + pixels[:, hi] * frac
    shade = 0.55 + 0.45 * np.cos(theta)[None, :]
    return Image.fromarray(np.clip(warped * shade, 0, 255).astype(np.uint8), "L")


def _tilt(label: Image.Image, degrees: float) -> Image.Image:
    """The label turned ``degrees`` about its vertical axis, in perspective (a camera
    about three label widths away): one side shrinks, modules shorten towards it."""
    w, h = label.size
    phi = np.radians(degrees)
    dist = 3.0 * w

    def project(x: float, y: float) -> tuple[float, float]:
        xr, zr = x * np.cos(phi), x * np.sin(phi)
        f = dist / (dist + zr)
        return xr * f, y * f

    corners = [project(x, y) for x, y in ((-w / 2, -h / 2), (w / 2, -h / 2),
                                           (w / 2, h / 2), (-w / 2, h / 2))]
    xs, ys = [c[0] for c in corners], [c[1] for c in corners]
    out_w, out_h = int(max(xs) - min(xs)) + 1, int(max(ys) - min(ys)) + 1
    dst = [(x - min(xs), y - min(ys)) for x, y in corners]
    src = [(0.0, 0.0), (float(w), 0.0), (float(w), float(h)), (0.0, float(h))]
    coeffs = perspective_coefficients(dst, src)
    return label.transform((out_w, out_h), Image.Transform.PERSPECTIVE, coeffs,
                           Image.Resampling.BILINEAR, fillcolor=0)


def symbol_image(symbol: Symbol, scale: float = 1.0) -> tuple[Image.Image, Image.Image]:
    """A white label carrying ``symbol``, rotated, and the mask of where it covers."""
    label = _label(symbol, scale)
    mask = Image.new("L", label.size, 255)
    if symbol.curvature > 0:
        label, mask = _cylinder(label, symbol.curvature), _cylinder(mask, symbol.curvature)
        mask = mask.point(lambda v: 255 if v > 0 else 0)
    if symbol.tilt:
        label = _tilt(label.point(lambda v: max(v, 1)), symbol.tilt)  # 0 marks outside
        mask = label.point(lambda v: 255 if v > 0 else 0)
    bilinear = Image.Resampling.BILINEAR
    return (label.rotate(symbol.angle, bilinear, expand=True),
            mask.rotate(symbol.angle, bilinear, expand=True))


def _background(kind: str, width: int, height: int, rng: np.random.Generator) -> np.ndarray:
    if kind == "smooth":  # bedsheet, wall: low-resolution noise scaled up
        coarse = rng.uniform(70, 170, size=(6, 8)).astype(np.uint8)
        return np.asarray(Image.fromarray(coarse, "L").resize((width, height),
                                                             Image.Resampling.BICUBIC))
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    if kind == "gradient":  # a window on one side
        angle = rng.uniform(0, 2 * np.pi)
        ramp = (xx * np.cos(angle) + yy * np.sin(angle)) / max(width, height)
        return np.clip(120 + 110 * ramp, 10, 250).astype(np.uint8)
    if kind == "skin":  # mid-grey with pores and soft shading
        base = _background("smooth", width, height, rng).astype(np.float32) * 0.5 + 70
        pores = rng.normal(0, 6, size=(height, width)).astype(np.float32)
        return np.clip(base + pores, 0, 255).astype(np.uint8)
    if kind == "cloth":  # a woven gown: fine periodic stripes, bar-like to a detector
        period = rng.uniform(4, 9)
        angle = rng.uniform(0, np.pi)
        weave = np.sin((xx * np.cos(angle) + yy * np.sin(angle)) * 2 * np.pi / period)
        cross = np.sin((-xx * np.sin(angle) + yy * np.cos(angle)) * 2 * np.pi / (period * 1.7))
        return np.clip(130 + 35 * weave + 15 * cross, 0, 255).astype(np.uint8)
    raise ValueError("background must be smooth, skin, cloth or gradient")


def render(scene: Scene, width: int, height: int) -> np.ndarray:
    """Render ``scene`` into a luminance frame (see ``Scene.render``)."""
    rng = np.random.default_rng(scene.seed)
    scale = width / REFERENCE_WIDTH
    background = _background(scene.conditions.background, width, height, rng)
    frame = Image.fromarray(background.copy(), "L")
    centres = []
    for symbol in scene.symbols:
        label, mask = symbol_image(symbol, scale)
        x = int(symbol.center[0] * width - label.width / 2)
        y = int(symbol.center[1] * height - label.height / 2)
        frame.paste(label, (x, y), mask)
        centres.append((symbol.center[0] * width, symbol.center[1] * height,
                        max(label.width, label.height)))
    out = np.asarray(frame).astype(np.float32)
    if scene.conditions.glare > 0:
        out = _glare(out, centres, scene.conditions.glare, rng)
    return _degrade(out, scene.conditions, scale, rng)


def _glare(frame: np.ndarray, centres: list[tuple[float, float, int]], strength: float,
           rng: np.random.Generator) -> np.ndarray:
    """A specular highlight on each label: an elongated bright spot that lifts the bars
    towards white (a ceiling lamp on a laminated card)."""
    yy, xx = np.mgrid[0 : frame.shape[0], 0 : frame.shape[1]].astype(np.float32)
    for cx, cy, size in centres:
        gx = cx + rng.uniform(-0.15, 0.15) * size
        gy = cy + rng.uniform(-0.1, 0.1) * size
        sx, sy = size * rng.uniform(0.06, 0.12), size * rng.uniform(0.2, 0.4)
        spot = np.exp(-(((xx - gx) / sx) ** 2 + ((yy - gy) / sy) ** 2) / 2)
        frame = frame + spot * strength * 230
    return frame


def _motion_kernel(length: float, angle: float) -> np.ndarray:
    n = max(3, int(np.ceil(length)) | 1)
    kernel = np.zeros((n, n), np.float32)
    c = n // 2
    for t in np.linspace(-length / 2, length / 2, 4 * n):
        kernel[round(c + t * np.sin(np.radians(angle))), round(c + t * np.cos(np.radians(angle)))] = 1
    return kernel / kernel.sum()


def _convolve(frame: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    c = kernel.shape[0] // 2
    padded = np.pad(frame, c, mode="edge")
    out = np.zeros_like(frame)
    for dy, dx in zip(*np.nonzero(kernel), strict=True):
        out += kernel[dy, dx] * padded[dy : dy + frame.shape[0], dx : dx + frame.shape[1]]
    return out


def _degrade(frame: np.ndarray, c: Conditions, scale: float, rng: np.random.Generator
             ) -> np.ndarray:
    out = frame.astype(np.float32)
    if c.contrast != 1.0:
        out = 128 + (out - 128) * c.contrast
    if c.blur > 0:
        blurred = Image.fromarray(np.clip(out, 0, 255).astype(np.uint8), "L")
        out = np.asarray(blurred.filter(ImageFilter.GaussianBlur(c.blur * scale)), np.float32)
    if c.motion > 0:
        out = _convolve(np.clip(out, 0, 255), _motion_kernel(c.motion * scale, c.motion_angle))
    if c.noise > 0:
        out = out + rng.normal(0, c.noise, size=out.shape).astype(np.float32)
    result = np.clip(out, 0, 255).astype(np.uint8)
    if c.jpeg_quality is not None:
        buf = io.BytesIO()
        Image.fromarray(result, "L").save(buf, format="JPEG", quality=c.jpeg_quality)
        result = np.asarray(Image.open(buf).convert("L"))
    return result
