"""A seeded corpus of camera frames with known codes, for the decode tests and benchmark.

Each sample is a rendered scene (``clinicam.drivers.scenes``) and the set of codes it
holds, as ``(symbology, text)`` with GS1 text in the readers' normalised form. Every
sample is decodable by construction: at least ~2 px per module at the frame's
resolution, and linear symbols only at angles where a scan line can cross the whole
symbol (small tilts, 90°, 180°); 2-D symbols take any angle. Identifiers are synthetic.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass

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
