"""``clinicam scan IMAGE…``: decode the codes in image files and say how the site's rules
classify them.

Installers use it with test wristbands and printed card sheets to check a site's rules
before a station goes live. It must not become a way to read identifiers off a
photograph: values are masked to their last four characters unless ``--reveal`` is
given, and ``--json`` carries the text only with ``--reveal``. Card contents are printed
sheets, not identifiers, and are always shown.

A PDF (the card sheet ``clinicam cards`` writes by default) is read page by page:
poppler's ``pdftoppm`` rasterises each page in memory (nothing is written to disk).

Exit status: 0 when every image was read (whatever it held), 2 when a file could not be
read or the arguments (or the configuration) are wrong.
"""

from __future__ import annotations

import argparse
import io
import json
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

import numpy as np
from clinicam.common.errors import ClinicamError, CodeRejected
from clinicam.drivers.pipeline import PassOutcome, PipelineReader
from clinicam.drivers.readers import SYMBOLOGIES, Code, CodeReader, make_reader
from clinicam.firmware.codes.classify import CardCode, CodeRules, OperatorId, PatientId, classify

EXIT_OK = 0
EXIT_USAGE = 2


def register(subparsers: Any) -> None:
    """Add the ``scan`` command to the ``clinicam`` parser."""
    p = subparsers.add_parser(
        "scan",
        help="decode and classify codes in image files",
        description="Decode the barcodes in each image and classify them with the site's "
        "rules. Values are masked unless --reveal is given.",
    )
    p.add_argument("images", nargs="+", metavar="IMAGE",
                   help="image files (PNG, JPEG…) or PDF card sheets (every page is read)")
    p.add_argument("--reader", "--engine", dest="reader",
                   choices=("auto", "zxing", "pyzbar", "pipeline"), default="auto",
                   help="barcode engine: auto (the station's default: the pipeline, "
                   "zxing-cpp with region passes for hard frames), zxing (one plain call), "
                   "pyzbar")
    p.add_argument("-v", "--verbose", dest="passes", action="store_true",
                   help="with the pipeline engine: each pass and its outcome (why a band "
                   "does not read); never the decoded text")
    p.add_argument("--json", action="store_true", help="one JSON object per image per line")
    p.add_argument("--reveal", action="store_true",
                   help="show the full decoded text (test wristbands only)")
    p.add_argument("--config", metavar="STATION_TOML", type=Path,
                   help="station config whose [codes] rules and [reader] formats to apply "
                   "(default: /etc/clinicam/station.toml when present, else GS1 and cards, "
                   "every format)")
    p.set_defaults(func=run)


def mask(text: str) -> str:
    """All but the last four characters hidden; short values entirely."""
    if len(text) <= 4:
        return "*" * len(text)
    return "*" * (len(text) - 4) + text[-4:]


def load_site(path: Path | None) -> tuple[CodeRules, tuple[str, ...]]:
    """The site's rules and reader formats from the station config, or the built-in GS1
    and cards with every format when there is no config."""
    from clinicam.firmware import config

    if path is None:
        if not config.DEFAULT_PATH.exists():
            return CodeRules(), SYMBOLOGIES
        path = config.DEFAULT_PATH
    station = config.load_station_config(path)
    return CodeRules.from_config(station.codes), tuple(station.reader.formats)


PDF_DPI = 150  # card QR modules are ~1 mm: 6 px each at 150 dpi, plenty for both engines


class Unreadable(Exception):
    """A file ``scan`` cannot read; the message says why in a few words."""


def read_image(path: Path) -> np.ndarray:
    """The image as a luminance array; ``Unreadable`` says why it cannot be."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            return np.asarray(img.convert("L"))
    except FileNotFoundError:
        raise Unreadable("no such file") from None
    except IsADirectoryError:
        raise Unreadable("is a directory") from None
    except PermissionError:
        raise Unreadable("permission denied") from None
    except (UnidentifiedImageError, ValueError, OSError) as exc:
        raise Unreadable("not an image (PNG, JPEG, TIFF… or a PDF card sheet)") from exc


def is_pdf(path: Path) -> bool:
    try:
        with path.open("rb") as f:
            return f.read(5) == b"%PDF-"
    except OSError:
        return False


def read_pdf_pages(path: Path, dpi: int = PDF_DPI) -> Iterator[np.ndarray]:
    """Each page of a PDF as a luminance array, rasterised by poppler in memory."""
    from PIL import Image

    if shutil.which("pdftoppm") is None or shutil.which("pdfinfo") is None:
        raise Unreadable("a PDF needs poppler (apt-get install poppler-utils); or give PNG pages: "
                         "clinicam cards --out cards.png")
    info = subprocess.run(["pdfinfo", str(path)], capture_output=True, text=True, check=False, timeout=60)
    pages = re.search(r"^Pages:\s+(\d+)", info.stdout, re.M)
    if info.returncode != 0 or pages is None:
        raise Unreadable("not a readable PDF")
    for page in range(1, int(pages.group(1)) + 1):
        raster = subprocess.run(
            # Without an output root, pdftoppm writes the page (PGM) to stdout: no file.
            ["pdftoppm", "-f", str(page), "-l", str(page), "-r", str(dpi), "-gray", str(path)],
            capture_output=True, check=False, timeout=120,
        )
        if raster.returncode != 0:
            raise Unreadable(f"page {page} of the PDF cannot be rasterised")
        try:
            with Image.open(io.BytesIO(raster.stdout)) as img:
                frame = np.asarray(img.convert("L"))
        except OSError as exc:
            raise Unreadable(f"page {page} of the PDF cannot be rasterised") from exc
        yield frame


def describe(code: Code, rules: CodeRules, reveal: bool) -> dict[str, Any]:
    """One code as the JSON object of the brief (plus its position)."""
    entry: dict[str, Any] = {"symbology": code.symbology}
    if reveal:
        entry["text"] = code.text
    try:
        result = classify(code, rules)
    except CodeRejected as exc:
        entry.update(kind=None, reason=exc.reason)
    else:
        entry.update(_kind(result, reveal), reason=None)
    entry["position"] = [list(p) for p in code.position] if code.position else None
    return entry


def _kind(result: PatientId | OperatorId | CardCode, reveal: bool) -> dict[str, Any]:
    if isinstance(result, CardCode):
        return {"kind": "card", "card": result.kind, "value": result.value,
                "display": result.display}
    shown = result.id if reveal else mask(result.id)
    out: dict[str, Any] = {"kind": "patient" if isinstance(result, PatientId) else "operator",
                           "issuer": result.issuer, "id": shown}
    if isinstance(result, PatientId):
        enc = result.encounter
        out["encounter"] = None if enc is None else (enc if reveal else mask(enc))
    return out


def _line(entry: dict[str, Any]) -> str:
    where = f" at {tuple(entry['position'][0])}" if entry["position"] else ""
    head = f"  {entry['symbology']}{where}: "
    if entry["reason"]:
        return head + f"rejected ({entry['reason']})"
    if entry["kind"] == "card":
        return head + f"card {entry['card']}:{entry['value']} ({entry['display']})"
    enc = f", encounter {entry['encounter']}" if entry.get("encounter") else ""
    return head + f"{entry['kind']} {entry['id']} (issuer {entry['issuer']}{enc})"


def scan_file(path: Path, reader: CodeReader, rules: CodeRules, reveal: bool,
              verbose: bool = False) -> Iterator[dict[str, Any]]:
    """One result per image: one for a picture, one per page for a PDF."""
    if is_pdf(path):
        for page, frame in enumerate(read_pdf_pages(path), start=1):
            yield {"file": str(path), "page": page, **scan_frame(frame, reader, rules, reveal, verbose)}
        return
    yield {"file": str(path), **scan_frame(read_image(path), reader, rules, reveal, verbose)}


def scan_frame(frame: np.ndarray, reader: CodeReader, rules: CodeRules, reveal: bool,
               verbose: bool = False) -> dict[str, Any]:
    passes = None
    if verbose and isinstance(reader, PipelineReader):
        reading = reader.read(frame)
        codes, passes = reading.codes, [_pass(p) for p in reading.passes]
        passes += [{"name": "unresolved", "ms": 0.0, "outcome": "located, not decoded",
                    "box": list(r.box)} for r in reading.unresolved]
        passes += [{"name": "tentative", "ms": 0.0, "outcome":
                    f"{c.symbology} read once: needs a second frame", "box": None}
                   for c in reading.tentative]
    else:
        codes = reader.decode(frame)
    result: dict[str, Any] = {"codes": [describe(c, rules, reveal) for c in codes]}
    if passes is not None:
        result["passes"] = passes
    return result


def _pass(p: PassOutcome) -> dict[str, Any]:
    box = list(p.region.box) if p.region else None
    return {"name": p.name, "ms": round(p.ms, 1), "outcome": p.outcome, "box": box}


def _print(result: dict[str, Any], as_json: bool, reveal: bool, out: TextIO) -> None:
    if as_json:
        out.write(json.dumps(result, ensure_ascii=True) + "\n")
        return
    page = f" page {result['page']}" if "page" in result else ""
    out.write(f"{result['file']}{page}: {len(result['codes'])} code(s)\n")
    for entry in result["codes"]:
        out.write(_line(entry) + (f"  text={entry['text']!r}" if reveal else "") + "\n")
    for p in result.get("passes", ()):
        where = f" at {tuple(p['box'])}" if p["box"] else ""
        out.write(f"  pass {p['name']}{where}: {p['outcome']} ({p['ms']:.1f} ms)\n")


def run(args: argparse.Namespace, out: TextIO | None = None, err: TextIO | None = None
        ) -> int:
    """Scan every image; never stop at the first unreadable one."""
    out, err = out or sys.stdout, err or sys.stderr
    try:
        rules, formats = load_site(args.config)
        reader = make_reader(args.reader, formats)
        if isinstance(reader, PipelineReader):
            from clinicam.firmware.codes.gs1 import plausible

            reader = PipelineReader(formats, gs1=plausible)
    except (ClinicamError, ValueError) as exc:
        err.write(f"clinicam scan: {exc}\n")
        return EXIT_USAGE
    status = EXIT_OK
    for name in args.images:
        path = Path(name)
        try:
            for result in scan_file(path, reader, rules, args.reveal, args.passes):
                _print(result, args.json, args.reveal, out)
        except Unreadable as exc:
            err.write(f"clinicam scan: {path}: {exc}\n")
            status = EXIT_USAGE
    return status
