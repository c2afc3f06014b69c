"""Preprocessing of a candidate region before it is decoded again.

Each view is an image zxing-cpp is given plus how its pixels map back to the frame, so
positions stay true. Views of one region are independent enough that two of them
agreeing counts as two reads (``clinicam.drivers.pipeline``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np
from clinicam.drivers.locate import Box, Region
from clinicam.drivers.readers import Code, Point
from PIL import Image, ImageFilter


@dataclass(frozen=True)
class Prepared:
    """A preprocessed crop and how its pixels map back to the crop it came from."""

    pixels: np.ndarray
    scale: float  # crop px -> these px, along x (and along y unless ``rows``)
    binarizer: str = "LocalAverage"
    rows: float | None = None  # crop rows averaged into one of these

    def to_frame(self, back: Callable[[Point], Point] | None, origin: Point
                 ) -> Callable[[Point], Point]:
        def mapping(p: Point) -> Point:
            q = (p[0] / self.scale, p[1] * self.rows if self.rows else p[1] / self.scale)
            if back is not None:
                q = back((int(q[0]), int(q[1])))
            return (int(q[0]) + origin[0], int(q[1]) + origin[1])

        return mapping


def crop_box(frame: np.ndarray, box: Box, margin: float) -> tuple[np.ndarray, Point]:
    x0, y0, x1, y1 = box
    mx, my = int((x1 - x0) * margin) + 8, int((y1 - y0) * margin) + 8
    h, w = frame.shape
    x0, y0 = max(0, x0 - mx), max(0, y0 - my)
    x1, y1 = min(w, x1 + mx), min(h, y1 + my)
    return frame[y0:y1, x0:x1], (x0, y0)


def shift(region: Region, origin: Point) -> Region:
    x0, y0, x1, y1 = region.box
    box = (x0 - origin[0], y0 - origin[1], x1 - origin[0], y1 - origin[1])
    quad = None if region.quad is None else tuple(
        (x - origin[0], y - origin[1]) for x, y in region.quad)
    return Region(box, region.linear, region.angle, region.score, quad)


def moved(code: Code, origin: Point, factor: float) -> Code:
    if code.position is None:
        return code
    pos = tuple((int(p[0] * factor) + origin[0], int(p[1] * factor) + origin[1])
                for p in code.position)
    return Code(code.symbology, code.text, code.raw, code.aim, pos)


def upright(crop: np.ndarray, angle: float) -> tuple[np.ndarray, Callable[[Point], Point]]:
    """Rotate so the bars stand upright (gradient along x); and the map back."""
    img = Image.fromarray(crop, "L")
    # Fill with the crop's own median: white corners would defeat the contrast stretch.
    fill = int(np.median(crop))
    rotated = img.rotate(angle, Image.Resampling.BILINEAR, expand=True, fillcolor=fill)
    a = math.radians(angle)
    cx, cy = img.width / 2, img.height / 2
    rx, ry = rotated.width / 2, rotated.height / 2

    def back(p: Point) -> Point:
        dx, dy = p[0] - rx, p[1] - ry
        # PIL rotates counter-clockwise for positive angles (y down): invert that.
        x = dx * math.cos(a) - dy * math.sin(a) + cx
        y = dx * math.sin(a) + dy * math.cos(a) + cy
        return (int(x), int(y))

    return np.asarray(rotated), back


def stretch(img: Image.Image) -> Image.Image:
    """Local contrast: the crop's 2nd..98th percentile to full range."""
    a = np.asarray(img, np.float32)
    h, w = a.shape
    lo, hi = np.percentile(a[h // 5 : h - h // 5, w // 5 : w - w // 5], (1, 99))
    if hi - lo < 8:
        return img
    return Image.fromarray(np.clip((a - lo) * (255 / (hi - lo)), 0, 255).astype(np.uint8), "L")


def upscale(img: Image.Image, factor: float, limit: int = 1600) -> tuple[Image.Image, float]:
    factor = min(factor, limit / max(img.width, img.height))
    if factor <= 1.01:
        return img, 1.0
    size = (round(img.width * factor), round(img.height * factor))
    return img.resize(size, Image.Resampling.BICUBIC), factor


def perspective_coefficients(dst: list[tuple[float, float]], src: list[tuple[float, float]]
                 ) -> tuple[float, ...]:
    """Coefficients for PIL's PERSPECTIVE transform taking ``dst`` corners to ``src``."""
    rows, rhs = [], []
    for (x, y), (u, v) in zip(dst, src, strict=True):
        rows.append([x, y, 1, 0, 0, 0, -u * x, -u * y])
        rows.append([0, 0, 0, x, y, 1, -v * x, -v * y])
        rhs.extend([u, v])
    return tuple(float(c) for c in np.linalg.solve(np.array(rows), np.array(rhs)))


def bar_average(img: Image.Image, rows: int = 10) -> Image.Image:
    """Average along upright bars in strips of ``rows``: noise, JPEG blocks and glare
    speckle fall by ~sqrt(rows) while the bar edges stay put."""
    return img.resize((img.width, max(12, img.height // rows)), Image.Resampling.BOX)


def wiener_rows(img: Image.Image, sigma: float, k: float = 0.02) -> Image.Image:
    """Deconvolve a Gaussian blur of ``sigma`` along x (across upright bars)."""
    a = np.asarray(img, np.float32)
    freq = np.fft.rfftfreq(a.shape[1])
    otf = np.exp(-2 * (np.pi * sigma * freq) ** 2)
    spec = np.fft.rfft(a - a.mean(), axis=1) * (otf / (otf**2 + k))
    out = np.fft.irfft(spec, n=a.shape[1], axis=1) + a.mean()
    return Image.fromarray(np.clip(out, 0, 255).astype(np.uint8), "L")


def wiener(img: Image.Image, sigma: float, k: float = 0.02) -> Image.Image:
    """Deconvolve an isotropic Gaussian blur of ``sigma`` pixels (2-D symbols)."""
    a = np.asarray(img, np.float32)
    fy = np.fft.fftfreq(a.shape[0])[:, None]
    fx = np.fft.rfftfreq(a.shape[1])[None, :]
    otf = np.exp(-2 * (np.pi * sigma) ** 2 * (fx**2 + fy**2))
    spec = np.fft.rfft2(a - a.mean()) * (otf / (otf**2 + k))
    out = np.fft.irfft2(spec, s=a.shape) + a.mean()
    return Image.fromarray(np.clip(out, 0, 255).astype(np.uint8), "L")


def linear_variants(upright: np.ndarray) -> Iterable[tuple[str, Prepared]]:
    """Independent views of an upright linear crop (two must agree), likeliest first.

    Sharpening comes last: on a clean band its overshoot splits thin spaces."""
    img = stretch(Image.fromarray(upright, "L"))
    up, f = upscale(img, 2.0)
    yield "upright x2", Prepared(np.asarray(up), f)
    averaged = bar_average(img)
    rows = img.height / averaged.height
    wide = averaged.resize((averaged.width * 3, averaged.height), Image.Resampling.BICUBIC)
    yield "bar-averaged x3", Prepared(np.asarray(wide), 3.0, rows=rows)
    yield "upright x1", Prepared(np.asarray(img), 1.0)
    for sigma in (2.0, 1.4):  # two blur guesses: two independent reads of a blurred band
        sharp = stretch(wiener_rows(averaged, sigma, 0.01))
        wide = sharp.resize((sharp.width * 2, sharp.height), Image.Resampling.BICUBIC)
        yield f"bar-averaged deconvolved σ{sigma} x2", Prepared(np.asarray(wide), 2.0, rows=rows)
    up3, f3 = upscale(img.filter(ImageFilter.UnsharpMask(radius=2, percent=300, threshold=0)),
                       3.0)
    yield "upright x3 sharpened", Prepared(np.asarray(up3), f3)
    yield "upright x2 global threshold", Prepared(np.asarray(up), f, "GlobalHistogram")


def square_variants(crop: np.ndarray) -> Iterable[tuple[str, Prepared]]:
    img = stretch(Image.fromarray(crop, "L"))
    up, f = upscale(img.filter(ImageFilter.UnsharpMask(radius=1, percent=200, threshold=0)),
                     2.0)
    yield "x2 sharpen", Prepared(np.asarray(up), f)
    sharp, f2 = upscale(stretch(wiener(img, 1.8, 0.01)), 2.0)
    yield "deconvolved x2", Prepared(np.asarray(sharp), f2)
    up3, f3 = upscale(img.filter(ImageFilter.UnsharpMask(radius=2, percent=300, threshold=0)),
                       3.0)
    yield "x3 deblur", Prepared(np.asarray(up3), f3)



def _line_kernel(length: float, degrees: float) -> np.ndarray:
    n = max(3, int(np.ceil(length)) | 1)
    kernel = np.zeros((n, n), np.float32)
    c = n // 2
    a = math.radians(degrees)
    for t in np.linspace(-length / 2, length / 2, 4 * n):
        kernel[round(c + t * math.sin(a)), round(c + t * math.cos(a))] = 1
    return kernel / kernel.sum()


def deconvolve_motion(crop: np.ndarray, length: float, degrees: float, k: float = 0.01
                      ) -> Image.Image:
    """Wiener-deconvolve a straight streak of ``length`` pixels at ``degrees``."""
    a = crop.astype(np.float32)
    kernel = _line_kernel(length, degrees)
    otf = np.fft.rfft2(kernel, s=a.shape)
    spec = np.fft.rfft2(a - a.mean()) * (np.conj(otf) / (np.abs(otf) ** 2 + k))
    c = kernel.shape[0] // 2
    out = np.roll(np.fft.irfft2(spec, s=a.shape), (-c, -c), axis=(0, 1)) + a.mean()
    return Image.fromarray(np.clip(out, 0, 255).astype(np.uint8), "L")


def motion_variants(crop: np.ndarray, edges: float) -> Iterable[tuple[str, Prepared]]:
    """A crop deblurred for streaks of 4, 6 and 8 px, along and across the direction
    ``edges`` (the strongest edges' gradient; motion weakens edges along itself)."""
    for length in (4, 6, 8):
        for turn in (90, 0):
            sharp = stretch(deconvolve_motion(crop, length, -edges + turn))
            up, f = upscale(sharp, 2.0)
            yield f"motion {length} px at {(turn - edges) % 180:.0f}° x2", Prepared(
                np.asarray(up), f)
