"""Seeded corpora of camera frames with known codes, for the decode tests and benchmark.

Each sample is a rendered scene (``clinicam.drivers.scenes``) and the set of codes it
holds, as ``(symbology, text)`` with GS1 text in the readers' normalised form.
Identifiers are synthetic. There are two corpora, and figures must say which:

- ``samples()``, the *easy* corpus: decodable by construction (at least ~2 px per
  module, linear symbols only at angles a scan line crosses whole: small tilts, 90°,
  180°). A regression floor, not a measure of the real world.
- ``hard_samples()``, the *hard* corpus: wristband, badge and card codes at least as
  hard as a ward is (1 px modules, blur σ 2, 30°/45° linear codes, tilt, curvature,
  glare, noise σ 20, JPEG 15, textured backgrounds, several codes, medication EAN-13
  distractors, frames with no code), one named condition per sample, all at 1280x720.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from clinicam.drivers.scenes import Conditions, Scene, Symbol, module_matrix

SIZES: tuple[tuple[int, int], ...] = ((1280, 720), (640, 480))
ZBAR_SYMBOLOGIES = frozenset({"code128", "gs1-128", "qr", "gs1-qr", "ean13"})
LINEAR = frozenset({"code128", "gs1-128", "ean13"})

CONDITIONS: dict[str, Conditions] = {
    "clean": Conditions(),
    "tilted": Conditions(),
    "rot90": Conditions(),
    "rot180": Conditions(),
    "blur": Conditions(blur=1.0),
    "noise": Conditions(noise=10.0),
    "low-contrast": Conditions(contrast=0.35),
    "jpeg": Conditions(jpeg_quality=30),
    "mixed": Conditions(blur=0.6, noise=5.0, contrast=0.6, jpeg_quality=50),
}


@dataclass(frozen=True)
class Sample:
    name: str  # payload kind
    condition: str
    size: tuple[int, int]
    scene: Scene
    expected: frozenset[tuple[str, str]]

    @property
    def zbar_readable(self) -> frozenset[tuple[str, str]]:
        """The codes of this sample that zbar can read at all."""
        return frozenset(c for c in self.expected if c[0] in ZBAR_SYMBOLOGIES)

    def render(self) -> object:
        return self.scene.render(*self.size)


def gs1_check_digit(data: str) -> str:
    total = sum(int(d) * (3 if i % 2 == 0 else 1) for i, d in enumerate(reversed(data)))
    return str((10 - total % 10) % 10)


def _gsrn(rng: random.Random, valid: bool = True) -> str:
    body = "".join(rng.choice("0123456789") for _ in range(17))
    check = int(gs1_check_digit(body))
    return body + str(check if valid else (check + 1 + rng.randrange(9)) % 10)


def _payloads(rng: random.Random) -> list[tuple[str, str, str, str, str]]:
    """(name, symbology, content to render, expected text, renderer)."""
    p, o, bad_p, bad_o = _gsrn(rng), _gsrn(rng), _gsrn(rng, False), _gsrn(rng, False)
    srin = str(rng.randrange(10**5, 10**6))
    mrn = f"MRN{rng.randrange(10**7, 10**8)}"
    return [
        ("mrn-code128", "code128", mrn, mrn, "python-barcode"),
        ("gs1-8018", "gs1-128", f"(8018){p}(8019){srin}", f"8018{p}\x1d8019{srin}", "zxing"),
        ("gs1-8018-bad", "gs1-128", f"(8018){bad_p}", f"8018{bad_p}", "python-barcode"),
        ("gs1-8017", "gs1-128", f"(8017){o}", f"8017{o}", "zxing"),
        ("gs1-8017-bad", "gs1-128", f"(8017){bad_o}", f"8017{bad_o}", "zxing"),
        ("qr-id", "qr", mrn, mrn, "segno"),
        ("qr-card", "qr", "CLINICAM:SITE:56459004", "CLINICAM:SITE:56459004", "zxing"),
        ("gs1-qr", "gs1-qr", f"(8018){p}", f"8018{p}", "zxing"),
        ("gs1-datamatrix", "gs1-datamatrix", f"(8018){p}", f"8018{p}", "zxing"),
        ("pdf417", "pdf417", mrn, mrn, "zxing"),
    ]


def _angle(condition: str, symbology: str, rng: random.Random) -> float:
    if condition == "rot90":
        return 90.0
    if condition == "rot180":
        return 180.0
    if condition == "tilted":
        return rng.uniform(-6, 6) if symbology in LINEAR else rng.uniform(15, 75)
    return 0.0


def _module(symbol_modules: int, room_px: int, size: tuple[int, int],
            rng: random.Random) -> float | None:
    """A module size (for a 1280-wide frame) giving >= 2.5 px per module at ``size`` and a
    symbol no wider than 90 % of ``room_px``; None when no such size exists."""
    scale = size[0] / 1280
    low = 2.5 / scale
    high = min(low * 1.8, 0.9 * room_px / (symbol_modules * scale))
    return None if high < low else rng.uniform(low, high)


def _place(content: str, symbology: str, renderer: str, condition: str,
           sizes: tuple[tuple[int, int], ...], rng: random.Random
           ) -> tuple[tuple[int, int], Symbol] | None:
    angle = _angle(condition, symbology, rng)
    modules = max(module_matrix(content, symbology, renderer).shape) + 4
    for size in rng.sample(list(sizes), len(sizes)):
        room = size[1] if angle in (90.0, 270.0) else size[0]
        module = _module(modules, room, size, rng)
        if module is not None:
            center = (rng.uniform(0.45, 0.55), rng.uniform(0.45, 0.55))
            return size, Symbol(content, symbology, module, angle, center, renderer)
    return None  # too large for every frame size offered: not a decodable sample


def samples(seed: int = 4, sizes: tuple[tuple[int, int], ...] = SIZES) -> Iterator[Sample]:
    """Every payload kind under every condition, at one of ``sizes`` chosen by the seed."""
    rng = random.Random(seed)
    for name, symbology, content, text, renderer in _payloads(rng):
        for condition, cond in CONDITIONS.items():
            placed = _place(content, symbology, renderer, condition, sizes, rng)
            if placed is None:
                continue
            size, symbol = placed
            scene = Scene((symbol,), cond, seed=rng.randrange(2**31))
            yield Sample(name, condition, size, scene, frozenset({(symbology, text)}))
    yield from _extras(rng, sizes)


def _extras(rng: random.Random, sizes: tuple[tuple[int, int], ...]) -> Iterator[Sample]:
    med = "400638133393"
    med += gs1_check_digit(med)
    wrist = _payloads(rng)[1]
    for size in sizes:
        seed = rng.randrange(2**31)
        yield Sample("no-code", "clean", size, Scene((), Conditions(noise=4.0), seed),
                     frozenset())
        scale = 1280 / size[0]
        yield Sample("ean13-medication", "clean", size,
                     Scene((Symbol(med, "ean13", 3.0 * scale, 0.0, (0.5, 0.5)),), seed=seed),
                     frozenset({("ean13", med)}))
        two = (
            Symbol(wrist[2], "gs1-128", 2.6 * scale, 0.0, (0.5, 0.28), "zxing"),
            Symbol("CLINICAM:PURPOSE:WOUND", "qr", 3.5 * scale, 20.0, (0.5, 0.72), "segno"),
        )
        yield Sample("two-codes", "clean", size, Scene(two, seed=seed),
                     frozenset({("gs1-128", wrist[3]), ("qr", "CLINICAM:PURPOSE:WOUND")}))


# --- the hard corpus -------------------------------------------------------------------

HARD_SIZE = (1280, 720)
BACKGROUNDS = ("smooth", "skin", "cloth", "gradient")
# What the station must read (wristband, badge, card); EAN-13s are distractors.
WANTED_KINDS = frozenset({"wristband", "badge", "card"})


@dataclass(frozen=True)
class HardSample:
    """One hard frame: ``expected`` holds every code in it, ``wanted`` the subset that
    is a wristband, badge or card (the ones the ≥ 92 % goal counts)."""

    kind: str  # payload kind of the main symbol, or "no-code"
    condition: str
    scene: Scene
    expected: frozenset[tuple[str, str]]
    wanted: frozenset[tuple[str, str]]
    size: tuple[int, int] = HARD_SIZE

    @property
    def wanted_zbar(self) -> frozenset[tuple[str, str]]:
        """The wanted codes zbar can read at all."""
        return frozenset(c for c in self.wanted if c[0] in ZBAR_SYMBOLOGIES)

    def render(self) -> object:
        return self.scene.render(*self.size)


def _hard_payloads(rng: random.Random) -> list[tuple[str, str, str, str, str, str]]:
    """(kind, name, symbology, content, expected text, renderer)."""
    p, o = _gsrn(rng), _gsrn(rng)
    srin = str(rng.randrange(10**5, 10**6))
    mrn = f"MRN{rng.randrange(10**7, 10**8)}"
    card = rng.choice(["CLINICAM:PURPOSE:WOUND", "CLINICAM:LAT:LEFT", "CLINICAM:END"])
    return [
        ("wristband", "gs1-128", "gs1-128", f"(8018){p}(8019){srin}", f"8018{p}\x1d8019{srin}",
         "zxing"),
        ("wristband", "mrn-code128", "code128", mrn, mrn, "python-barcode"),
        ("wristband", "gs1-datamatrix", "gs1-datamatrix", f"(8018){p}", f"8018{p}", "zxing"),
        ("wristband", "qr", "qr", mrn, mrn, "segno"),
        ("wristband", "pdf417", "pdf417", mrn, mrn, "zxing"),
        ("badge", "gs1-128-badge", "gs1-128", f"(8017){o}", f"8017{o}", "zxing"),
        ("badge", "gs1-qr-badge", "gs1-qr", f"(8017){o}", f"8017{o}", "zxing"),
        ("card", "card-qr", "qr", card, card, "zxing"),
    ]


# condition -> (module px range for 1-D, for 2-D; Symbol overrides; Conditions fields)
_Spec = tuple[tuple[float, float], tuple[float, float], dict[str, Any], dict[str, Any]]
_NOMINAL = ((2.0, 3.2), (2.5, 4.0))


def _hard_conditions(rng: random.Random) -> dict[str, _Spec]:
    sign = rng.choice((-1, 1))
    return {
        "nominal": (*_NOMINAL, {"angle": rng.uniform(-8, 8)}, {}),
        "rot30": (*_NOMINAL, {"angle": sign * 30 + rng.uniform(-3, 3)}, {}),
        "rot45": (*_NOMINAL, {"angle": sign * 45 + rng.uniform(-3, 3)}, {}),
        "rot-any": (*_NOMINAL, {"angle": rng.uniform(0, 360)}, {}),
        "module-1px": ((1.0, 1.15), (1.5, 1.7), {"angle": rng.uniform(-4, 4)}, {}),
        "module-1.5px": ((1.45, 1.6), (1.5, 1.6), {"angle": rng.uniform(-4, 4)}, {}),
        "blur-1.5": ((2.6, 3.4), (3.0, 4.0), {"angle": rng.uniform(-6, 6)}, {"blur": 1.5}),
        "blur-2.0": ((3.0, 3.8), (3.5, 4.5), {"angle": rng.uniform(-6, 6)}, {"blur": 2.0}),
        "motion": ((2.6, 3.4), (3.0, 4.0), {"angle": rng.uniform(-6, 6)},
                   {"motion": rng.uniform(4, 8), "motion_angle": rng.uniform(0, 180)}),
        "noise-20": ((1.6, 2.4), (2.0, 3.0), {"angle": rng.uniform(-6, 6)}, {"noise": 20.0}),
        "low-contrast": ((1.6, 2.4), (2.0, 3.0), {"angle": rng.uniform(-6, 6)},
                         {"contrast": 60 / 255, "noise": 4.0, "blur": 0.8}),
        "jpeg-15": ((2.2, 3.2), (2.8, 4.0), {"angle": rng.uniform(-6, 6)}, {"jpeg_quality": 15}),
        "tilt-40": ((2.4, 3.2), (3.0, 4.0),
                    {"tilt": sign * rng.uniform(30, 40), "angle": rng.uniform(-6, 6)}, {}),
        "curved": ((2.4, 3.2), (3.0, 4.0),
                   {"curvature": rng.uniform(0.2, 0.35), "angle": rng.uniform(-6, 6)}, {}),
        "glare": (*_NOMINAL, {"angle": rng.uniform(-8, 8)}, {"glare": rng.uniform(0.6, 1.0)}),
    }


HARD_CONDITIONS: tuple[str, ...] = (*_hard_conditions(random.Random(0)), "multi", "no-code")


def _fit_module(content: str, symbology: str, renderer: str, wanted: float, angle: float,
                room: float) -> float:
    """``wanted``, or smaller if the symbol (rotated) would not fit ``room`` pixels."""
    matrix = module_matrix(content, symbology, renderer)
    w = matrix.shape[1] + 16
    h = max(30, matrix.shape[1] // 5) + 12 if matrix.shape[0] == 1 else matrix.shape[0] + 12
    a = math.radians(angle)
    span_x = abs(w * math.cos(a)) + abs(h * math.sin(a))
    span_y = abs(w * math.sin(a)) + abs(h * math.cos(a))
    return min(wanted, room * HARD_SIZE[0] / span_x, room * HARD_SIZE[1] / span_y)


def _hard_symbol(payload: tuple[str, str, str, str, str, str], spec: _Spec,
                 rng: random.Random, center: tuple[float, float], room: float) -> Symbol:
    _, _, symbology, content, _, renderer = payload
    linear_range, square_range, overrides, _ = spec
    low, high = linear_range if symbology in LINEAR else square_range
    angle = float(overrides.get("angle", 0.0))
    module = _fit_module(content, symbology, renderer, rng.uniform(low, high), angle, room)
    extra = {k: v for k, v in overrides.items() if k != "angle"}
    return Symbol(content, symbology, module, angle, center, renderer, **extra)


def hard_samples(seed: int = 15, per_condition: int = 16) -> Iterator[HardSample]:
    """``per_condition`` frames of every hard condition (payload kinds in turn), then as
    many frames with several codes and with no code. About one frame in four also
    carries a medication EAN-13 beside the code."""
    rng = random.Random(seed)
    for condition in HARD_CONDITIONS[:-2]:
        for i in range(per_condition):
            payloads = _hard_payloads(rng)
            payload = payloads[(i + seed) % len(payloads)]
            spec = _hard_conditions(rng)[condition]
            yield _single(condition, payload, spec, rng)
    for _ in range(per_condition):
        yield _multi(rng)
    for _ in range(per_condition):
        cond = Conditions(noise=rng.uniform(2, 20), background=rng.choice(BACKGROUNDS))
        yield HardSample("no-code", "no-code", Scene((), cond, rng.randrange(2**31)),
                         frozenset(), frozenset())


def _single(condition: str, payload: tuple[str, str, str, str, str, str], spec: _Spec,
            rng: random.Random) -> HardSample:
    kind, _, symbology, _, text, _ = payload
    distractor = rng.random() < 0.25
    center = (rng.uniform(0.3, 0.45), rng.uniform(0.4, 0.6)) if distractor else (
        rng.uniform(0.42, 0.58), rng.uniform(0.42, 0.58))
    symbols = [_hard_symbol(payload, spec, rng, center, 0.55 if distractor else 0.9)]
    expected = {(symbology, text)}
    if distractor:
        med = _medication(rng)
        symbols.append(Symbol(med, "ean13", rng.uniform(2.0, 3.0), rng.uniform(-10, 10),
                              (0.8, rng.uniform(0.3, 0.7))))
        expected.add(("ean13", med))
    fields = dict(spec[3]) | {"background": rng.choice(BACKGROUNDS)}
    scene = Scene(tuple(symbols), Conditions(**fields), rng.randrange(2**31))
    return HardSample(kind, condition, scene, frozenset(expected),
                      frozenset({(symbology, text)}))


def _multi(rng: random.Random) -> HardSample:
    """A wristband and a card (and sometimes a badge) in one frame, a little rotated."""
    payloads = _hard_payloads(rng)
    chosen = [payloads[rng.randrange(5)], payloads[7]]
    if rng.random() < 0.5:
        chosen.append(payloads[5 + rng.randrange(2)])
    centres = [(0.27, 0.35), (0.73, 0.65), (0.3, 0.78)]
    spec: _Spec = (*_NOMINAL, {"angle": rng.uniform(-20, 20)}, {})
    symbols = tuple(_hard_symbol(p, spec, rng, c, 0.4) for p, c in zip(chosen, centres, strict=False))
    cond = Conditions(noise=rng.uniform(0, 8), background=rng.choice(BACKGROUNDS))
    codes = frozenset((p[2], p[4]) for p in chosen)
    return HardSample("wristband", "multi", Scene(symbols, cond, rng.randrange(2**31)),
                      codes, codes)


def _medication(rng: random.Random) -> str:
    body = "40" + "".join(rng.choice("0123456789") for _ in range(10))
    return body + gs1_check_digit(body)
