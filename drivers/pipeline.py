"""A reading pipeline for hard frames, behind the ``CodeReader`` interface.

One bare zxing-cpp call reads clean frames and misses hard ones: linear codes at 30° or
45°, 1 px modules, blur, a band curving round a wrist. Calling it again with every option
costs several times the frame time and still misses most of them. This pipeline instead:

1. **fast pass**: zxing-cpp on the whole frame with the costly searches off (no
   downscaled, inverted or 90°-turned copies; ``return_errors`` on, so a symbol
   located but not decoded comes back with its position): a fifth of a plain call;
2. **locate**: a structure tensor on a subsampled frame marks blocks with strong edges;
   blocks whose edges share one direction are bars (a linear candidate, with its angle),
   the others are 2-D candidates. Regions already read are dropped;
3. **region passes**, best candidate first, within a budget: crop the region, turn a
   linear candidate's bars upright, upscale it, sharpen it and stretch its contrast
   locally, and decode only that crop with only the formats it can hold.

False decodes stay at zero by refusing rather than guessing:

- a GS1 element string must parse and every check digit in it must hold (the ``gs1``
  validator, injected by the station because GS1 rules live in the firmware layer);
- a linear code read only after preprocessing needs a *second, independent* read: a
  different preprocessing of the same region, or the same code on the next frame. A
  single read comes back as *tentative*, never as a code;
- a located symbol that would not decode stays *unresolved*: the camera may retry it
  on the next frame or in a crop of the full-resolution still (``read_region``).

Nothing here logs or formats a decoded payload.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from clinicam.drivers.readers import (
    _FROM_ZXING,
    DEFAULT_FORMATS,
    Code,
    Point,
    ZxingReader,
    base_formats,
)
from PIL import Image, ImageFilter

LINEAR_FORMATS = frozenset({"code128", "ean13"})
Box = tuple[int, int, int, int]  # x0, y0, x1, y1 in frame pixels


@dataclass(frozen=True)
class Region:
    """Where a symbol probably is: a box, and for bars the angle of the bars' normal
    (degrees, 0 = bars upright)."""

    box: Box
    linear: bool
    angle: float = 0.0
    score: float = 0.0
    quad: tuple[tuple[float, float], ...] | None = None  # corners zxing located (2-D)

    def scaled(self, factor: float) -> Region:
        x0, y0, x1, y1 = self.box
        box = (int(x0 * factor), int(y0 * factor), int(x1 * factor), int(y1 * factor))
        return Region(box, self.linear, self.angle, self.score)


@dataclass(frozen=True)
class PassOutcome:
    """One pass of one frame, for ``clinicam scan -v`` and the benchmark: never a payload."""

    name: str
    ms: float
    outcome: str  # "read N", "nothing", "located, not decoded", "refused: …", "tentative"
    region: Region | None = None


@dataclass
class Reading:
    """What the pipeline made of one frame."""

    codes: list[Code] = field(default_factory=list)  # accepted: report these
    tentative: list[Code] = field(default_factory=list)  # one preprocessed linear read
    unresolved: list[Region] = field(default_factory=list)  # located, not decoded
    passes: list[PassOutcome] = field(default_factory=list)
    refused: int = 0  # preprocessed GS1 reads dropped: syntax or check digit failed


@dataclass(frozen=True)
class Budget:
    """How much one frame may cost beyond the fast pass.

    ``regions`` bounds the work whatever the clock says (deterministic, so the benchmark
    and the tests see the same passes); ``ms`` (from the start of the frame) stops early
    on a loaded machine so a hard frame cannot stall the camera loop: frames queue up
    nowhere (the lores stream keeps only the newest), so the cost of a stop is a later
    frame read, never a late one. Regions left over are reported unresolved.
    """

    regions: int = 4
    ms: float = 500.0


def _codes_key(codes: Iterable[Code]) -> set[tuple[str, str]]:
    return {(c.symbology, c.text) for c in codes}


class PipelineReader:
    """zxing-cpp fast pass + located, preprocessed region passes (see the module doc)."""

    name = "pipeline"

    def __init__(
        self,
        formats: Sequence[str] = DEFAULT_FORMATS,
        *,
        gs1: Callable[[str], bool] | None = None,
        budget: Budget | None = None,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self._zx = ZxingReader(formats)
        self._z: Any = self._zx._z
        self.formats = self._zx.formats
        self._gs1 = gs1 or _gs1_check_digits
        self.budget = budget or Budget()
        self._clock = clock
        bases = base_formats(self.formats)
        self._linear = [f for f in bases if f in LINEAR_FORMATS]
        self._square = [f for f in bases if f not in LINEAR_FORMATS]
        self._mask_all = self._zx._mask
        # Upright bars may be a stacked PDF417 as well as a linear code; a region without
        # one bar direction may be anything (1 px bars alias into a texture).
        self._mask_linear = self._mask(self._linear + [f for f in bases if f == "pdf417"])
        self._mask_square = self._mask_all
        self._pdf417 = "pdf417" in bases

    def _mask(self, names: Sequence[str]) -> Any:
        from clinicam.drivers.readers import _ZXING_NAMES

        return self._z.BarcodeFormats([getattr(self._z.BarcodeFormat, _ZXING_NAMES[n])
                                       for n in names]) if names else None

    # --- CodeReader --------------------------------------------------------------------

    def decode(self, frame: np.ndarray) -> list[Code]:
        """The accepted codes of ``frame`` (tentative reads are not codes)."""
        return self.read(frame).codes

    # --- the passes --------------------------------------------------------------------

    def read(self, frame: np.ndarray, confirmed: Iterable[Code] = ()) -> Reading:
        """Run the passes on ``frame``. A tentative read that matches one of
        ``confirmed`` (last frame's tentative reads) is accepted: two frames agree."""
        if frame.dtype != np.uint8 or frame.ndim != 2:
            raise ValueError("frame must be a 2-D uint8 luminance array")
        reading = Reading()
        start = self._clock()
        # No 90° scan lines either: the locator turns linear candidates of any angle
        # upright, so this pass costs a fraction of a plain call.
        results = self._call(frame, self._mask_all, rotate=False, return_errors=True)
        located = self._take(results, reading, "fast pass", start)
        t_loc = self._clock()
        regions = [r for r in locate(frame) if not _covered(r, reading.codes)]
        regions = _merge_located(regions, located)
        reading.passes.append(PassOutcome("locate", _ms(t_loc, self._clock()),
                                          f"{len(regions)} candidate(s)"))
        self._region_passes(frame, regions, reading, start)
        self._confirm(reading, confirmed)
        return reading

    def read_region(self, crop: np.ndarray, region: Region, scale: float,
                    origin: Point) -> Reading:
        """Read a crop of a sharper image (the still stream) of ``region``: ``crop`` is
        ``scale`` times the frame's resolution and starts at ``origin`` in frame pixels.
        The same acceptance rules apply; positions come back in frame pixels."""
        reading = Reading()
        start = self._clock()
        h, w = crop.shape
        local = Region((0, 0, w, h), region.linear, region.angle, region.score)
        self._one_region(crop, local, reading, start, "still crop")
        back = [_moved(c, origin, 1 / scale) for c in reading.codes]
        reading.codes = back
        reading.tentative = [_moved(c, origin, 1 / scale) for c in reading.tentative]
        return reading

    def _region_passes(self, frame: np.ndarray, regions: list[Region], reading: Reading,
                       start: float) -> None:
        for n, region in enumerate(regions):
            over_time = _ms(start, self._clock()) > self.budget.ms
            if n >= self.budget.regions or over_time or _covered(region, reading.codes):
                if not _covered(region, reading.codes):
                    reading.unresolved.append(region)
                continue
            crop, origin = _crop(frame, region.box, margin=0.25)
            local = _shift(region, origin)
            before = len(reading.codes) + len(reading.tentative)
            self._one_region(crop, local, reading, self._clock(), f"region {n + 1}", origin)
            if len(reading.codes) + len(reading.tentative) == before:
                reading.unresolved.append(region)

    def _one_region(self, crop: np.ndarray, region: Region, reading: Reading, t0: float,
                    label: str, origin: Point = (0, 0)) -> None:
        if self._mask_linear is not None and not region.linear:
            # The subsampled locator sees 1 px bars as texture: look again at full
            # resolution before treating the region as a 2-D symbol.
            angle, coherent = _bars(crop, region.angle, near_only=False)
            region = dataclasses.replace(region, linear=coherent > 0.5, angle=angle)
        before = len(reading.codes) + len(reading.tentative)
        if region.quad is not None and self._rectified(crop, region.quad, reading, label,
                                                       origin):
            return
        if region.linear and self._mask_linear is not None:
            self._linear_region(crop, region, reading, label, origin)
            if len(reading.codes) + len(reading.tentative) > before:
                return
        self._square_region(crop, reading, label, origin)
        if len(reading.codes) + len(reading.tentative) == before and self._pdf417:
            # A turned PDF417: its detector wants the rows level. Its edges are mostly
            # the bars within rows, so the crop's overall edge direction levels it.
            self._linear_region(crop, Region(region.box, True, _edges_angle(crop)), reading,
                                f"{label} level", origin)

    def _linear_region(self, crop: np.ndarray, region: Region, reading: Reading, label: str,
                       origin: Point) -> None:
        upright, back = _upright(crop, _bars(crop, region.angle)[0])
        first: set[tuple[str, str]] | None = None
        for variant, image in _linear_variants(upright):
            t = self._clock()
            results = self._call(image.pixels, self._mask_linear, rotate=False,
                                 binarizer=image.binarizer)
            raw = self._codes(results, image.to_frame(back, origin))
            codes = self._checked(raw, reading)
            name = f"{label} ({variant})"
            stacked = [c for c in codes if c.symbology == "pdf417"]
            if stacked:  # Reed-Solomon protected, like a 2-D symbol: one read is enough
                self._accept(stacked, reading)
                reading.passes.append(PassOutcome(name, _ms(t, self._clock()),
                                                  f"read {len(stacked)}", region))
                return
            found = _codes_key(codes)
            if not codes:
                outcome = "refused: GS1 syntax or check digit" if raw else "nothing"
                reading.passes.append(PassOutcome(name, _ms(t, self._clock()), outcome,
                                                  region))
                continue
            if first is None:
                first = found
                reading.tentative.extend(codes)
                reading.passes.append(PassOutcome(name, _ms(t, self._clock()),
                                                  "tentative: needs a second read", region))
                continue
            agreed = self._accept([c for c in codes if (c.symbology, c.text) in first], reading)
            outcome = "agrees: accepted" if agreed else "no agreement: refused"
            reading.passes.append(PassOutcome(name, _ms(t, self._clock()), outcome, region))
            return

    def _rectified(self, crop: np.ndarray, quad: tuple[tuple[float, float], ...],
                   reading: Reading, label: str, origin: Point) -> bool:
        """A 2-D symbol zxing located but could not sample (a card tilted 40°): warp
        the located quadrilateral to a square, twice its size, and read that."""
        t = self._clock()
        side = _quad_size(quad) * 2.0
        pad = side * 0.15
        dst = [(pad, pad), (side + pad, pad), (side + pad, side + pad), (pad, side + pad)]
        size = int(side + 2 * pad)
        if size < 16 or size > 2000:
            return False
        coeffs = perspective_coefficients(dst, list(quad))
        warped = Image.fromarray(crop, "L").transform(
            (size, size), Image.Transform.PERSPECTIVE, coeffs, Image.Resampling.BICUBIC,
            fillcolor=255)
        results = self._call(np.asarray(warped), self._mask_square)
        corners = tuple((round(x) + origin[0], round(y) + origin[1]) for x, y in quad)
        raw = [Code(c.symbology, c.text, c.raw, c.aim, corners)
               for c in self._codes(results, None)]
        codes = self._accept(raw, reading)
        outcome = f"read {len(codes)}" if codes else (
            "refused: GS1 syntax or check digit" if raw else "nothing")
        reading.passes.append(PassOutcome(f"{label} (rectified from located corners)",
                                          _ms(t, self._clock()), outcome))
        return bool(codes)

    def _square_region(self, crop: np.ndarray, reading: Reading, label: str,
                       origin: Point) -> None:
        for variant, image in _square_variants(crop):
            t = self._clock()
            results = self._call(image.pixels, self._mask_square)
            raw = self._codes(results, image.to_frame(None, origin))
            codes = self._accept(raw, reading)
            outcome = f"read {len(codes)}" if codes else (
                "refused: GS1 syntax or check digit" if raw else "nothing")
            reading.passes.append(PassOutcome(f"{label} ({variant})", _ms(t, self._clock()),
                                              outcome))
            if codes:
                return

    # --- acceptance ---------------------------------------------------------------------

    def _take(self, results: list[Any], reading: Reading, name: str, t0: float
              ) -> list[Region]:
        """Accept the valid results of the fast pass as one plain call would (a misprinted
        GS1 check digit is the band's real content: the classifier refuses it with a
        reason the nurse sees); return where invalid ones were located."""
        located = [_region_of(r) for r in results if not r.valid and _plausible(r)]
        codes = self._codes(results, None)
        self._accept(codes, reading, checked=False)
        parts = [f"read {len(codes)}" if codes else "nothing"]
        if located:
            parts.append(f"{len(located)} located, not decoded")
        reading.passes.append(PassOutcome(name, _ms(t0, self._clock()), "; ".join(parts)))
        return located

    def _codes(self, results: Iterable[Any], mapping: Callable[[Point], Point] | None
               ) -> list[Code]:
        out = []
        for result in results:
            if not result.valid:
                continue
            code = self._zx._to_code(result)
            if code is None or code.symbology not in self.formats:
                continue
            if mapping is not None and code.position is not None:
                code = Code(code.symbology, code.text, code.raw, code.aim,
                            tuple(mapping(p) for p in code.position))
            out.append(code)
        return out

    def _accept(self, codes: Iterable[Code], reading: Reading, checked: bool = True
                ) -> list[Code]:
        """Accept codes and return those accepted; a preprocessed GS1 read whose element
        string does not parse or whose check digit fails is a probable misread, dropped
        (``checked``)."""
        accepted = self._checked(codes, reading) if checked else list(codes)
        for code in accepted:
            if code not in reading.codes:
                reading.codes.append(code)
        keys = _codes_key(reading.codes)
        reading.tentative = [c for c in reading.tentative if (c.symbology, c.text) not in keys]
        return accepted

    def _checked(self, codes: Iterable[Code], reading: Reading) -> list[Code]:
        out = []
        for code in codes:
            if code.symbology.startswith("gs1-") and not self._gs1(code.text):
                reading.refused += 1
            else:
                out.append(code)
        return out

    def _confirm(self, reading: Reading, confirmed: Iterable[Code]) -> None:
        earlier = _codes_key(confirmed)
        agreed = self._accept(
            [c for c in reading.tentative if (c.symbology, c.text) in earlier], reading)
        if agreed:
            reading.passes.append(PassOutcome("previous frame", 0.0,
                                              f"agrees: accepted {len(agreed)}"))

    def _call(self, pixels: np.ndarray, mask: Any, *, rotate: bool = True,
              downscale: bool = False, return_errors: bool = False,
              binarizer: str = "LocalAverage") -> list[Any]:
        return list(self._z.read_barcodes(
            np.ascontiguousarray(pixels), formats=mask, try_rotate=rotate,
            try_downscale=downscale, try_invert=False, text_mode=self._z.TextMode.Plain,
            binarizer=getattr(self._z.Binarizer, binarizer), return_errors=return_errors))


# --- locating candidates ----------------------------------------------------------------

_STEP = 2  # subsample: the tensor at half resolution
_BLOCK = 8  # block side at that resolution (16 frame pixels)


def locate(frame: np.ndarray, max_regions: int = 8) -> list[Region]:
    """Candidate symbol regions, strongest first (see the module doc)."""
    small = frame[::_STEP, ::_STEP].astype(np.float32)
    gx = small[1:-1, 2:] - small[1:-1, :-2]
    gy = small[2:, 1:-1] - small[:-2, 1:-1]
    h, w = gx.shape
    h, w = h - h % _BLOCK, w - w % _BLOCK

    def blocks(a: np.ndarray) -> np.ndarray:
        return a[:h, :w].reshape(h // _BLOCK, _BLOCK, w // _BLOCK, _BLOCK).sum(axis=(1, 3))

    jxx, jyy, jxy = blocks(gx * gx), blocks(gy * gy), blocks(gx * gy)
    energy = jxx + jyy
    coherence = np.sqrt((jxx - jyy) ** 2 + 4 * jxy**2) / np.maximum(energy, 1e-6)
    # Edges of a symbol are strong against the frame's own texture, not absolutely:
    # low contrast symbols count, a uniformly busy background does not.
    threshold = max(float(np.percentile(energy, 75)) * 4, 400.0 * _BLOCK * _BLOCK)
    strong = energy > threshold
    regions = []
    for cells in _components(strong):
        region = _region(cells, jxx, jyy, jxy, coherence, energy)
        if region is not None:
            regions.append(region)
    regions.sort(key=lambda r: -r.score)
    return regions[:max_regions]


def _components(mask: np.ndarray) -> list[list[tuple[int, int]]]:
    """8-connected components of a small boolean grid (no SciPy on the Pi image)."""
    seen = np.zeros_like(mask)
    out = []
    rows, cols = mask.shape
    for start in zip(*np.nonzero(mask), strict=True):
        if seen[start]:
            continue
        stack, cells = [start], []
        seen[start] = True
        while stack:
            y, x = stack.pop()
            cells.append((int(y), int(x)))
            for dy in (-1, 0, 1):
                for dx in (-1, 0, 1):
                    ny, nx = y + dy, x + dx
                    if 0 <= ny < rows and 0 <= nx < cols and mask[ny, nx] and not seen[ny, nx]:
                        seen[ny, nx] = True
                        stack.append((ny, nx))
        out.append(cells)
    return out


def _region(cells: list[tuple[int, int]], jxx: np.ndarray, jyy: np.ndarray, jxy: np.ndarray,
            coherence: np.ndarray, energy: np.ndarray) -> Region | None:
    if len(cells) < 3:  # smaller than 3 blocks (~48x48 px): no symbol worth a pass
        return None
    ys, xs = zip(*cells, strict=True)
    sel = (np.array(ys), np.array(xs))
    coh = coherence[sel]
    txx, tyy, txy = float(jxx[sel].sum()), float(jyy[sel].sum()), float(jxy[sel].sum())
    whole = math.sqrt((txx - tyy) ** 2 + 4 * txy**2) / max(txx + tyy, 1e-6)
    linear = whole > 0.5 and float(np.median(coh)) > 0.6
    # The bars' direction from the coherent blocks only: a label's own border would
    # pull it towards the label's axis by several degrees.
    w = np.where(coh > 0.7, coh * coh, 0.0) if linear else np.ones_like(coh)
    sxx, syy = float((jxx[sel] * w).sum()), float((jyy[sel] * w).sum())
    sxy = float((jxy[sel] * w).sum())
    angle = math.degrees(0.5 * math.atan2(2 * sxy, sxx - syy))  # gradient direction
    cell = _STEP * _BLOCK
    box = (min(xs) * cell, min(ys) * cell, (max(xs) + 1) * cell + _STEP,
           (max(ys) + 1) * cell + _STEP)
    return Region(box, linear, angle, float(energy[sel].sum()))


def _covered(region: Region, codes: Iterable[Code]) -> bool:
    x0, y0, x1, y1 = region.box
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    for code in codes:
        if code.position:
            px = [p[0] for p in code.position]
            py = [p[1] for p in code.position]
            if min(px) - 8 <= cx <= max(px) + 8 and min(py) - 8 <= cy <= max(py) + 8:
                return True
    return False


def _merge_located(regions: list[Region], located: list[Region]) -> list[Region]:
    """Candidates where zxing also located a symbol it could not decode go first. A
    located symbol without strong edges around it is dropped: noise makes zxing 'find'
    small DataMatrix symbols in almost any frame."""
    confirmed = []
    for r in regions:
        hits = [o for o in located if _overlap(r.box, o.box)]
        if hits:
            quads = [o.quad for o in hits if o.quad is not None]
            # The largest located quadrilateral: noise also 'locates' tiny symbols.
            quad = max(quads, key=_quad_size) if quads else None
            confirmed.append(Region(r.box, r.linear, r.angle, r.score, quad))
    return confirmed + [r for r in regions if not any(_overlap(r.box, o.box) for o in located)]


def _quad_size(quad: tuple[tuple[float, float], ...]) -> float:
    return max(math.dist(quad[i], quad[(i + 1) % 4]) for i in range(4))


def _overlap(a: Box, b: Box) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def _plausible(result: Any) -> bool:
    """A located symbol big enough to be worth a pass (noise makes tiny DataMatrix
    'finds' in almost any frame)."""
    if result.format.name not in _FROM_ZXING:  # e.g. rMQR, which the QR family includes
        return False
    pos = result.position
    xs = [p.x for p in (pos.top_left, pos.top_right, pos.bottom_right, pos.bottom_left)]
    ys = [p.y for p in (pos.top_left, pos.top_right, pos.bottom_right, pos.bottom_left)]
    return max(max(xs) - min(xs), max(ys) - min(ys)) >= 24


def _region_of(result: Any) -> Region:
    pos = result.position
    pts = [(p.x, p.y) for p in (pos.top_left, pos.top_right, pos.bottom_right, pos.bottom_left)]
    xs, ys = [p[0] for p in pts], [p[1] for p in pts]
    pad = 12
    linear = result.format.name in ("Code128", "EAN13")
    angle = math.degrees(math.atan2(pts[1][1] - pts[0][1], pts[1][0] - pts[0][0]))
    quad = None if linear else tuple((float(x), float(y)) for x, y in pts)
    return Region((min(xs) - pad, min(ys) - pad, max(xs) + pad, max(ys) + pad), linear, angle,
                  float("inf"), quad)


# --- preprocessing ---------------------------------------------------------------------


@dataclass(frozen=True)
class _Image:
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


def _crop(frame: np.ndarray, box: Box, margin: float) -> tuple[np.ndarray, Point]:
    x0, y0, x1, y1 = box
    mx, my = int((x1 - x0) * margin) + 8, int((y1 - y0) * margin) + 8
    h, w = frame.shape
    x0, y0 = max(0, x0 - mx), max(0, y0 - my)
    x1, y1 = min(w, x1 + mx), min(h, y1 + my)
    return frame[y0:y1, x0:x1], (x0, y0)


def _shift(region: Region, origin: Point) -> Region:
    x0, y0, x1, y1 = region.box
    box = (x0 - origin[0], y0 - origin[1], x1 - origin[0], y1 - origin[1])
    quad = None if region.quad is None else tuple(
        (x - origin[0], y - origin[1]) for x, y in region.quad)
    return Region(box, region.linear, region.angle, region.score, quad)


def _moved(code: Code, origin: Point, factor: float) -> Code:
    if code.position is None:
        return code
    pos = tuple((int(p[0] * factor) + origin[0], int(p[1] * factor) + origin[1])
                for p in code.position)
    return Code(code.symbology, code.text, code.raw, code.aim, pos)


def _upright(crop: np.ndarray, angle: float) -> tuple[np.ndarray, Callable[[Point], Point]]:
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


def _stretch(img: Image.Image) -> Image.Image:
    """Local contrast: the crop's 2nd..98th percentile to full range."""
    a = np.asarray(img, np.float32)
    h, w = a.shape
    lo, hi = np.percentile(a[h // 5 : h - h // 5, w // 5 : w - w // 5], (1, 99))
    if hi - lo < 8:
        return img
    return Image.fromarray(np.clip((a - lo) * (255 / (hi - lo)), 0, 255).astype(np.uint8), "L")


def _upscale(img: Image.Image, factor: float, limit: int = 1600) -> tuple[Image.Image, float]:
    factor = min(factor, limit / max(img.width, img.height))
    if factor <= 1.01:
        return img, 1.0
    size = (round(img.width * factor), round(img.height * factor))
    return img.resize(size, Image.Resampling.BICUBIC), factor


def _bars(crop: np.ndarray, rough: float, near_only: bool = True) -> tuple[float, float]:
    """The bars' angle measured again at full resolution on the crop, and the share of
    the crop's strong blocks that are bars: the subsampled locator aliases fine bars
    and can be 10° out, more than a scan line tolerates. With ``near_only`` only bars
    within 15° of ``rough`` count (not a striped gown around the band)."""
    a = crop.astype(np.float32)
    gx = a[1:-1, 2:] - a[1:-1, :-2]
    gy = a[2:, 1:-1] - a[:-2, 1:-1]
    b = 8
    h, w = gx.shape[0] - gx.shape[0] % b, gx.shape[1] - gx.shape[1] % b
    if h < b or w < b:
        return rough, 0.0

    def blocks(m: np.ndarray) -> np.ndarray:
        return m[:h, :w].reshape(h // b, b, w // b, b).sum(axis=(1, 3))

    jxx, jyy, jxy = blocks(gx * gx), blocks(gy * gy), blocks(gx * gy)
    energy = jxx + jyy
    coh = np.sqrt((jxx - jyy) ** 2 + 4 * jxy**2) / np.maximum(energy, 1e-6)
    own = np.degrees(0.5 * np.arctan2(2 * jxy, jxx - jyy))
    strong = energy > np.percentile(energy, 50)
    keep = (coh > 0.8) & strong
    if near_only:
        keep &= np.abs((own - rough + 90) % 180 - 90) < 15
    if not keep.any():
        return rough, 0.0
    sxx, syy, sxy = float(jxx[keep].sum()), float(jyy[keep].sum()), float(jxy[keep].sum())
    angle = math.degrees(0.5 * math.atan2(2 * sxy, sxx - syy))
    if not near_only:  # one direction must dominate for the crop to be bars
        keep &= np.abs((own - angle + 90) % 180 - 90) < 15
    return angle, float(keep.sum()) / max(1, int(strong.sum()))


def perspective_coefficients(dst: list[tuple[float, float]], src: list[tuple[float, float]]
                 ) -> tuple[float, ...]:
    """Coefficients for PIL's PERSPECTIVE transform taking ``dst`` corners to ``src``."""
    rows, rhs = [], []
    for (x, y), (u, v) in zip(dst, src, strict=True):
        rows.append([x, y, 1, 0, 0, 0, -u * x, -u * y])
        rows.append([0, 0, 0, x, y, 1, -v * x, -v * y])
        rhs.extend([u, v])
    return tuple(float(c) for c in np.linalg.solve(np.array(rows), np.array(rhs)))


def _edges_angle(crop: np.ndarray) -> float:
    """The direction of the strongest edges of the whole crop (gradient direction)."""
    a = crop.astype(np.float32)
    gx = a[1:-1, 2:] - a[1:-1, :-2]
    gy = a[2:, 1:-1] - a[:-2, 1:-1]
    sxx, syy, sxy = float((gx * gx).sum()), float((gy * gy).sum()), float((gx * gy).sum())
    return math.degrees(0.5 * math.atan2(2 * sxy, sxx - syy))


def _bar_average(img: Image.Image, rows: int = 10) -> Image.Image:
    """Average along upright bars in strips of ``rows``: noise, JPEG blocks and glare
    speckle fall by ~sqrt(rows) while the bar edges stay put."""
    return img.resize((img.width, max(12, img.height // rows)), Image.Resampling.BOX)


def _wiener_rows(img: Image.Image, sigma: float, k: float = 0.02) -> Image.Image:
    """Deconvolve a Gaussian blur of ``sigma`` along x (across upright bars)."""
    a = np.asarray(img, np.float32)
    freq = np.fft.rfftfreq(a.shape[1])
    otf = np.exp(-2 * (np.pi * sigma * freq) ** 2)
    spec = np.fft.rfft(a - a.mean(), axis=1) * (otf / (otf**2 + k))
    out = np.fft.irfft(spec, n=a.shape[1], axis=1) + a.mean()
    return Image.fromarray(np.clip(out, 0, 255).astype(np.uint8), "L")


def _wiener(img: Image.Image, sigma: float, k: float = 0.02) -> Image.Image:
    """Deconvolve an isotropic Gaussian blur of ``sigma`` pixels (2-D symbols)."""
    a = np.asarray(img, np.float32)
    fy = np.fft.fftfreq(a.shape[0])[:, None]
    fx = np.fft.rfftfreq(a.shape[1])[None, :]
    otf = np.exp(-2 * (np.pi * sigma) ** 2 * (fx**2 + fy**2))
    spec = np.fft.rfft2(a - a.mean()) * (otf / (otf**2 + k))
    out = np.fft.irfft2(spec, s=a.shape) + a.mean()
    return Image.fromarray(np.clip(out, 0, 255).astype(np.uint8), "L")


def _linear_variants(upright: np.ndarray) -> Iterable[tuple[str, _Image]]:
    """Independent views of an upright linear crop (two must agree), likeliest first.

    Sharpening comes last: on a clean band its overshoot splits thin spaces."""
    img = _stretch(Image.fromarray(upright, "L"))
    up, f = _upscale(img, 2.0)
    yield "upright x2", _Image(np.asarray(up), f)
    averaged = _bar_average(img)
    rows = img.height / averaged.height
    wide = averaged.resize((averaged.width * 3, averaged.height), Image.Resampling.BICUBIC)
    yield "bar-averaged x3", _Image(np.asarray(wide), 3.0, rows=rows)
    yield "upright x1", _Image(np.asarray(img), 1.0)
    for sigma in (2.0, 1.4):  # two blur guesses: two independent reads of a blurred band
        sharp = _stretch(_wiener_rows(averaged, sigma, 0.01))
        wide = sharp.resize((sharp.width * 2, sharp.height), Image.Resampling.BICUBIC)
        yield f"bar-averaged deconvolved σ{sigma} x2", _Image(np.asarray(wide), 2.0, rows=rows)
    up3, f3 = _upscale(img.filter(ImageFilter.UnsharpMask(radius=2, percent=300, threshold=0)),
                       3.0)
    yield "upright x3 sharpened", _Image(np.asarray(up3), f3)
    yield "upright x2 global threshold", _Image(np.asarray(up), f, "GlobalHistogram")


def _square_variants(crop: np.ndarray) -> Iterable[tuple[str, _Image]]:
    img = _stretch(Image.fromarray(crop, "L"))
    up, f = _upscale(img.filter(ImageFilter.UnsharpMask(radius=1, percent=200, threshold=0)),
                     2.0)
    yield "x2 sharpen", _Image(np.asarray(up), f)
    sharp, f2 = _upscale(_stretch(_wiener(img, 1.8, 0.01)), 2.0)
    yield "deconvolved x2", _Image(np.asarray(sharp), f2)
    up3, f3 = _upscale(img.filter(ImageFilter.UnsharpMask(radius=2, percent=300, threshold=0)),
                       3.0)
    yield "x3 deblur", _Image(np.asarray(up3), f3)


def _ms(t0: float, t1: float) -> float:
    return (t1 - t0) * 1000


def _gs1_check_digits(text: str) -> bool:
    """Fallback GS1 check when no validator is injected: every fixed-length numeric field
    that carries a mod-10 check digit must hold it (AIs 00, 01, 02, 414, 8017, 8018).

    The station injects ``clinicam.firmware.codes.gs1.plausible`` (the full parser)."""
    checked = {"00": 18, "01": 14, "02": 14, "414": 13, "8017": 18, "8018": 18}
    for ai, length in checked.items():
        if text.startswith(ai):
            value = text[len(ai): len(ai) + length]
            if len(value) != length or not value.isdigit():
                return False
            body, digit = value[:-1], value[-1]
            total = sum(int(d) * (3 if i % 2 == 0 else 1) for i, d in enumerate(reversed(body)))
            return str((10 - total % 10) % 10) == digit
    return True


class StreamReader:
    """The pipeline on a stream of scan frames (the station's camera thread).

    Adds what one frame cannot give: a preprocessed linear read that was tentative on
    one frame is accepted when the next frame reads the same; and a located symbol no
    pass resolved is read once more from a crop of the full-resolution still stream
    when the camera offers one (``StillCropper``), at most once per ``crop_every_s``
    because on a Pi each crop waits for a still-stream frame.
    """

    name = "pipeline"

    def __init__(self, pipeline: PipelineReader, cropper: Any = None, *,
                 crop_every_s: float = 0.3, clock: Callable[[], float] = time.monotonic
                 ) -> None:
        self.pipeline, self.cropper = pipeline, cropper
        self.formats = pipeline.formats
        self._crop_every_s, self._clock = crop_every_s, clock
        self._tentative: list[Code] = []
        self._last_crop = -math.inf
        self.last: Reading | None = None

    def decode(self, frame: np.ndarray) -> list[Code]:
        reading = self.pipeline.read(frame, confirmed=self._tentative)
        if self.cropper is not None and reading.unresolved and self._crop_due():
            self._still_crop(reading, reading.unresolved[0])
        self._tentative = reading.tentative
        self.last = reading
        return reading.codes

    def _crop_due(self) -> bool:
        now = self._clock()
        if now - self._last_crop < self._crop_every_s:
            return False
        self._last_crop = now
        return True

    def _still_crop(self, reading: Reading, region: Region) -> None:
        t0 = self.pipeline._clock()
        crop, scale, origin = self.cropper.capture_region(region.box)
        extra = self.pipeline.read_region(crop, region, scale, origin)
        confirmed = _codes_key(self._tentative)
        agreed = [c for c in extra.tentative if (c.symbology, c.text) in confirmed]
        accepted = self.pipeline._accept([*extra.codes, *agreed], reading)
        reading.tentative.extend(c for c in extra.tentative if c not in agreed)
        reading.passes.extend(extra.passes)
        reading.passes.append(PassOutcome("still crop", _ms(t0, self.pipeline._clock()),
                                          f"read {len(accepted)}" if accepted else "nothing",
                                          region))
