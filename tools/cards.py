"""``clinicam cards``: the printable sheet of a site's code cards (DESIGN §6).

One card per value a clinician may scan to steer a session: every ``PURPOSE``, the
site's body sites, ``LAT``, ``VIEW``, ``CONSENT``, ``VOID`` and ``END``. The payloads
are the normative ``CLINICAM:<KIND>:<VALUE>`` (``CLINICAM:VOID``, ``CLINICAM:END``),
so a sheet printed today keeps working with later firmware.

Each card is a QR code (error correction Q, for glare on laminated cards) of 12 dots
per module at 300 dpi — about 1 mm, twice the 0.5 mm minimum, so the station's
1280×720 preview frames still resolve it at arm's length — with the 4-module quiet
zone QR needs, and a human-readable label. The same layout is drawn on a Pillow image
(PNG, one file per page) or a reportlab canvas (PDF, vector, A4).
"""

from __future__ import annotations

import argparse
import functools
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from clinicam.common.errors import ClinicamError, ConfigError
from clinicam.firmware.codes.classify import CARD_VALUES
from clinicam.protocol.bodysites import BODY_SITES
from PIL import Image, ImageDraw, ImageFont

log = logging.getLogger(__name__)

DPI = 300
PAGE = (2480, 3508)  # A4 in dots at 300 dpi
MARGIN = 118  # 10 mm
HEADER = 90
COLUMNS, ROWS = 4, 5
CELL = ((PAGE[0] - 2 * MARGIN) // COLUMNS, (PAGE[1] - 2 * MARGIN - HEADER) // ROWS)
MODULE = 12  # dots per QR module: 1.02 mm
QUIET = 4  # modules of quiet zone around every code
PER_PAGE = COLUMNS * ROWS

# Print order and the heading shown on each card.
KIND_TITLES: dict[str, str] = {
    "PURPOSE": "PURPOSE",
    "SITE": "BODY SITE",
    "LAT": "LATERALITY",
    "VIEW": "VIEW",
    "CONSENT": "CONSENT",
    "VOID": "VOID",
    "END": "END SESSION",
}


@dataclass(frozen=True)
class Card:
    """One printed card: what it encodes and what the clinician reads on it."""

    kind: str
    value: str
    label: str

    @property
    def payload(self) -> str:
        return f"CLINICAM:{self.kind}:{self.value}" if self.value else f"CLINICAM:{self.kind}"


def sheet_cards(body_sites: Sequence[str] = ()) -> list[Card]:
    """Every card of a site's sheet, in print order; ``body_sites`` empty means all built-in."""
    cards: list[Card] = []
    for kind in KIND_TITLES:
        if kind == "SITE":
            cards.extend(Card("SITE", code, BODY_SITES[code].display) for code in _sites(body_sites))
        else:
            cards.extend(Card(kind, value, label) for value, label in CARD_VALUES[kind].items())
    return cards


def _sites(selected: Sequence[str]) -> list[str]:
    if not selected:
        return list(BODY_SITES)
    unknown = [code for code in selected if code not in BODY_SITES]
    if unknown:
        raise ConfigError(
            f"body sites {', '.join(unknown)} are not in the built-in table: check the SNOMED CT "
            "codes in [cards] body_sites or --sites (see clinicam.protocol.bodysites)"
        )
    return list(dict.fromkeys(selected))


# --- layout, independent of the output format -----------------------------------------


class Surface(Protocol):
    """What a page needs from a drawing back end; coordinates in dots, origin top left."""

    def box(self, x: int, y: int, w: int, h: int) -> None: ...  # a cut line

    def fill(self, x: int, y: int, w: int, h: int) -> None: ...  # a black rectangle

    def text(self, x: int, y: int, text: str, size: int, bold: bool) -> None: ...  # centred

    def fit(self, text: str, size: int, bold: bool, width: int) -> int: ...  # size that fits


def pages(cards: Sequence[Card]) -> list[list[Card]]:
    """The cards cut into pages of :data:`PER_PAGE`."""
    return [list(cards[i : i + PER_PAGE]) for i in range(0, len(cards), PER_PAGE)] or [[]]


def draw_page(surface: Surface, cards: Sequence[Card], number: int, total: int) -> None:
    """Draw one page: a header line and a grid of cards with cut lines."""
    header = f"clinicam code cards · page {number}/{total} · cut along the grey lines, laminate matt"
    surface.text(PAGE[0] // 2, MARGIN + 20, header, 34, False)
    for i, card in enumerate(cards):
        row, col = divmod(i, COLUMNS)
        x = MARGIN + col * CELL[0]
        y = MARGIN + HEADER + row * CELL[1]
        surface.box(x, y, CELL[0], CELL[1])
        _draw_card(surface, card, x, y)


def _qr_matrix(payload: str) -> Sequence[Sequence[int]]:
    try:
        import segno
    except ImportError as exc:
        raise ClinicamError(
            "clinicam cards needs segno (and reportlab for PDF): pip install 'clinicam[cards]'"
        ) from exc
    return segno.make_qr(payload, error="q", boost_error=False).matrix


def _draw_card(surface: Surface, card: Card, x: int, y: int) -> None:
    matrix = _qr_matrix(card.payload)
    side = (len(matrix) + 2 * QUIET) * MODULE
    left = x + (CELL[0] - side) // 2 + QUIET * MODULE
    top = y + 24 + QUIET * MODULE
    for r, row in enumerate(matrix):
        for start, length in _dark_runs(row):
            surface.fill(left + start * MODULE, top + r * MODULE, length * MODULE, MODULE)
    centre, width = x + CELL[0] // 2, CELL[0] - 40
    below = y + 24 + side + 16  # clear of the quiet zone
    surface.text(centre, below, KIND_TITLES[card.kind], 34, False)
    surface.text(centre, below + 48, card.label, surface.fit(card.label, 58, True, width), True)
    surface.text(centre, below + 130, card.payload, 26, False)


def _dark_runs(row: Sequence[int]) -> list[tuple[int, int]]:
    """(start, length) of each run of dark modules: one rectangle per run, not per module."""
    runs: list[tuple[int, int]] = []
    start = None
    for i, dark in enumerate([*row, 0]):
        if dark and start is None:
            start = i
        elif not dark and start is not None:
            runs.append((start, i - start))
            start = None
    return runs


# --- PNG (Pillow) ---------------------------------------------------------------------


class _PilSurface:
    def __init__(self) -> None:
        self.image = Image.new("L", PAGE, 255)
        self._draw = ImageDraw.Draw(self.image)

    @staticmethod
    @functools.cache
    def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
        # Pillow's bundled scalable font; it has no bold face, so bold is drawn stroked.
        return ImageFont.load_default(size=size)

    def box(self, x: int, y: int, w: int, h: int) -> None:
        self._draw.rectangle((x, y, x + w - 1, y + h - 1), outline=170, width=2)

    def fill(self, x: int, y: int, w: int, h: int) -> None:
        self._draw.rectangle((x, y, x + w - 1, y + h - 1), fill=0)

    def text(self, x: int, y: int, text: str, size: int, bold: bool) -> None:
        stroke = 1 if bold else 0
        font = self._font(size)
        self._draw.text((x, y), text, fill=0, font=font, anchor="mt", stroke_width=stroke)

    def fit(self, text: str, size: int, bold: bool, width: int) -> int:
        while size > 20 and self._font(size).getlength(text) > width:
            size -= 2
        return size


def write_png(cards: Sequence[Card], out: Path) -> list[Path]:
    """One PNG per page at 300 dpi: ``out`` itself for one page, ``out-1.png``… for more."""
    sheets = pages(cards)
    paths = [out] if len(sheets) == 1 else [
        out.with_name(f"{out.stem}-{n}{out.suffix}") for n in range(1, len(sheets) + 1)
    ]
    for n, (chunk, path) in enumerate(zip(sheets, paths, strict=True), start=1):
        surface = _PilSurface()
        draw_page(surface, chunk, n, len(sheets))
        surface.image.save(path, format="PNG", dpi=(DPI, DPI))
    return paths


# --- PDF (reportlab) ------------------------------------------------------------------


class _PdfSurface:
    POINTS_PER_DOT = 72 / DPI

    def __init__(self, canvas: Any) -> None:
        self.c = canvas

    def _pt(self, dots: float) -> float:
        return dots * self.POINTS_PER_DOT

    def _rect(self, x: int, y: int, w: int, h: int, fill: bool) -> None:
        c = self.c
        c.rect(self._pt(x), self._pt(PAGE[1] - y - h), self._pt(w), self._pt(h),
               stroke=0 if fill else 1, fill=1 if fill else 0)

    def box(self, x: int, y: int, w: int, h: int) -> None:
        c = self.c
        c.setStrokeGray(0.65)
        c.setDash(6, 4)
        self._rect(x, y, w, h, fill=False)
        c.setDash()

    def fill(self, x: int, y: int, w: int, h: int) -> None:
        self.c.setFillGray(0)
        self._rect(x, y, w, h, fill=True)

    def text(self, x: int, y: int, text: str, size: int, bold: bool) -> None:
        c = self.c
        points = self._pt(size)
        c.setFont("Helvetica-Bold" if bold else "Helvetica", points)
        # reportlab places the baseline: move it down by the ascent (~0.75 em) to match "mt".
        c.drawCentredString(self._pt(x), self._pt(PAGE[1] - y) - points * 0.75, text)

    def fit(self, text: str, size: int, bold: bool, width: int) -> int:
        from reportlab.pdfbase.pdfmetrics import stringWidth

        font = "Helvetica-Bold" if bold else "Helvetica"
        while size > 20 and stringWidth(text, font, self._pt(size)) > self._pt(width):
            size -= 2
        return size


def write_pdf(cards: Sequence[Card], out: Path) -> list[Path]:
    """A vector A4 PDF with one page per :data:`PER_PAGE` cards."""

    try:
        from reportlab.lib.pagesizes import A4
        from reportlab.pdfgen.canvas import Canvas
    except ImportError as exc:
        raise ClinicamError("PDF output needs reportlab: pip install 'clinicam[cards]'") from exc
    canvas = Canvas(str(out), pagesize=A4, pageCompression=1)
    canvas.setTitle("clinicam code cards")
    canvas.setCreator("clinicam cards")
    sheets = pages(cards)
    for n, chunk in enumerate(sheets, start=1):
        draw_page(_PdfSurface(canvas), chunk, n, len(sheets))
        canvas.showPage()
    canvas.save()
    return [out]


WRITERS = {".pdf": write_pdf, ".png": write_png}


# --- CLI ------------------------------------------------------------------------------


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``clinicam cards``."""
    parser = subparsers.add_parser(
        "cards",
        help="print the site's code cards (purpose, body site…)",
        description="Render the site's code cards (purpose, body sites, laterality, view, "
        "consent, void, end) as a printable A4 PDF or 300 dpi PNG pages.",
    )
    parser.add_argument("--site-config", type=Path, metavar="STATION_TOML",
                        help="station config whose [cards] body_sites selects the body sites")
    parser.add_argument("--out", type=Path, required=True, metavar="SHEET.pdf|SHEET.png",
                        help="output file; the suffix chooses the format")
    parser.add_argument("--sites", metavar="CODE,…",
                        help="SNOMED CT body-site codes to print (overrides the config)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Render the sheet the arguments ask for; ConfigError reaches the CLI's handler."""
    writer = WRITERS.get(args.out.suffix.lower())
    if writer is None:
        raise ConfigError(f"--out {args.out.name}: the file name must end in .pdf or .png")
    cards = sheet_cards(_selected_sites(args))
    if not args.out.parent.is_dir():
        raise ConfigError(f"--out: folder {args.out.parent} does not exist; create it first")
    try:
        written = writer(cards, args.out)
    except OSError as exc:
        raise ConfigError(f"--out: cannot write {args.out}: {exc.strerror}") from exc
    for path in written:
        print(path)
    log.info("wrote %d cards on %d page(s)", len(cards), len(pages(cards)))
    return 0


def _selected_sites(args: argparse.Namespace) -> list[str]:
    if args.sites:
        return [code.strip() for code in args.sites.split(",") if code.strip()]
    if args.site_config is None:
        return []
    from clinicam.firmware.config import load_station_config

    return list(load_station_config(args.site_config).cards.body_sites)
