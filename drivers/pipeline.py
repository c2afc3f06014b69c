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
from clinicam.drivers import locate, preprocess
from clinicam.drivers.locate import Region
from clinicam.drivers.readers import (
    _FROM_ZXING,
    DEFAULT_FORMATS,
    Code,
    Point,
    ZxingReader,
    base_formats,
)
from PIL import Image

LINEAR_FORMATS = frozenset({"code128", "ean13"})


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


def _base(code: Code) -> str:
    return "code128" if code.symbology == "gs1-128" else code.symbology


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
        regions = [r for r in locate.locate(frame) if not _covered(r, reading.codes)]
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
        back = [preprocess.moved(c, origin, 1 / scale) for c in reading.codes]
        reading.codes = back
        reading.tentative = [preprocess.moved(c, origin, 1 / scale) for c in reading.tentative]
        return reading

    def _region_passes(self, frame: np.ndarray, regions: list[Region], reading: Reading,
                       start: float) -> None:
        for n, region in enumerate(regions):
            over_time = _ms(start, self._clock()) > self.budget.ms
            if n >= self.budget.regions or over_time or _covered(region, reading.codes):
                if not _covered(region, reading.codes):
                    reading.unresolved.append(region)
                continue
            crop, origin = preprocess.crop_box(frame, region.box, margin=0.25)
            local = preprocess.shift(region, origin)
            before = len(reading.codes) + len(reading.tentative)
            self._one_region(crop, local, reading, self._clock(), f"region {n + 1}", origin)
            if len(reading.codes) + len(reading.tentative) == before:
                reading.unresolved.append(region)

    def _one_region(self, crop: np.ndarray, region: Region, reading: Reading, t0: float,
                    label: str, origin: Point = (0, 0)) -> None:
        if self._mask_linear is not None and not region.linear:
            # The subsampled locator sees 1 px bars as texture: look again at full
            # resolution before treating the region as a 2-D symbol.
            angle, coherent = locate.bars(crop, region.angle, near_only=False)
            region = dataclasses.replace(region, linear=coherent > 0.5, angle=angle)
        before = len(reading.codes) + len(reading.tentative)
        if region.quad is not None and self._rectified(crop, region.quad, reading, label,
                                                       origin):
            return
        if region.linear and self._mask_linear is not None:
            self._linear_region(crop, region, reading, label, origin)
            if len(reading.codes) + len(reading.tentative) > before:
                return
        if self._square_region(crop, reading, label, origin):
            return
        if len(reading.codes) + len(reading.tentative) == before and self._pdf417:
            # A turned PDF417: its detector wants the rows level. Its edges are mostly
            # the bars within rows, so the crop's overall edge direction levels it.
            self._linear_region(crop, Region(region.box, True, locate.edges_angle(crop)), reading,
                                f"{label} level", origin)
        if len(reading.codes) + len(reading.tentative) == before:
            # Last resort: a hand moving during the exposure. Undo a streak along the
            # direction the edges are weakest in, for a few lengths.
            self._square_region(crop, reading, f"{label} motion", origin,
                                preprocess.motion_variants(crop, locate.edges_angle(crop)))

    def _linear_region(self, crop: np.ndarray, region: Region, reading: Reading, label: str,
                       origin: Point) -> None:
        upright, back = preprocess.upright(crop, locate.bars(crop, region.angle)[0])
        first: set[tuple[str, str]] | None = None
        for variant, image in preprocess.linear_variants(upright):
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
        side = locate.quad_size(quad) * 2.0
        pad = side * 0.15
        dst = [(pad, pad), (side + pad, pad), (side + pad, side + pad), (pad, side + pad)]
        size = int(side + 2 * pad)
        if size < 16 or size > 2000:
            return False
        coeffs = preprocess.perspective_coefficients(dst, list(quad))
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
                       origin: Point, views: Iterable[tuple[str, preprocess.Prepared]] | None
                       = None) -> bool:
        """Decode views of a region with every format; a linear code among the results
        still needs two views to agree. True when something was accepted."""
        first: set[tuple[str, str]] | None = None
        for variant, image in views if views is not None else preprocess.square_variants(crop):
            t = self._clock()
            results = self._call(image.pixels, self._mask_square)
            raw = self._codes(results, image.to_frame(None, origin))
            checked = self._checked(raw, reading)
            linear = [c for c in checked if _base(c) in LINEAR_FORMATS]
            codes = self._accept([c for c in checked if c not in linear], reading, False)
            if linear and first is None:
                first = _codes_key(linear)
                reading.tentative.extend(linear)
            elif linear:
                seen = first or set()
                codes += self._accept([c for c in linear if (c.symbology, c.text) in seen],
                                      reading, False)
            outcome = f"read {len(codes)}" if codes else (
                "tentative: needs a second read" if linear else
                "refused: GS1 syntax or check digit" if raw else "nothing")
            reading.passes.append(PassOutcome(f"{label} ({variant})", _ms(t, self._clock()),
                                              outcome))
            if codes:
                return True
        return False

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
        hits = [o for o in located if locate.overlap(r.box, o.box)]
        if hits:
            quads = [o.quad for o in hits if o.quad is not None]
            # The largest located quadrilateral: noise also 'locates' tiny symbols.
            quad = max(quads, key=locate.quad_size) if quads else None
            confirmed.append(Region(r.box, r.linear, r.angle, r.score, quad))
    return confirmed + [r for r in regions if not any(locate.overlap(r.box, o.box) for o in located)]


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
