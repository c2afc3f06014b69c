"""``clinicam scan IMAGE…``: decode the codes in image files and say how the site's rules
classify them.

Installers use it with test wristbands and printed card sheets to check a site's rules
before a station goes live. It must not become a way to read identifiers off a
photograph: values are masked to their last four characters unless ``--reveal`` is
given, and ``--json`` carries the text only with ``--reveal``. Card contents are printed
sheets, not identifiers, and are always shown.

Exit status: 0 when every image was read (whatever it held), 2 when a file could not be
read or the arguments (or the configuration) are wrong.
"""

from __future__ import annotations

import argparse
import json
import sys
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
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image files (PNG, JPEG…)")
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


def read_image(path: Path) -> np.ndarray:
    """The image as a luminance array; ``OSError`` when it is missing or not an image."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            return np.asarray(img.convert("L"))
    except (UnidentifiedImageError, ValueError) as exc:
        raise OSError("not a readable image") from exc


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
              verbose: bool = False) -> dict[str, Any]:
    frame = read_image(path)
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
    result = {"file": str(path), "codes": [describe(c, rules, reveal) for c in codes]}
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
    out.write(f"{result['file']}: {len(result['codes'])} code(s)\n")
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
            result = scan_file(path, reader, rules, args.reveal, args.passes)
        except OSError:
            err.write(f"clinicam scan: {path}: cannot read the image\n")
            status = EXIT_USAGE
            continue
        _print(result, args.json, args.reveal, out)
    return status
