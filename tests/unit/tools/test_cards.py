"""The printed card sheet decodes back, card by card, with a real barcode engine.

Every page is rendered (PNG with Pillow; PDF with reportlab, rasterised by poppler's
``pdftoppm``) and read with zxing-cpp: each payload must appear exactly once, and
each must mean what its label says to the station's own card parser.
"""

from __future__ import annotations

import math
import shutil
import subprocess
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import segno
import zxingcpp
from clinicam.common.errors import ConfigError
from clinicam.firmware.codes.classify import CARD_VALUES, parse_card
from clinicam.protocol.bodysites import BODY_SITES
from clinicam.tools import cards
from clinicam.tools.cards import DPI, MODULE, QUIET, Card, sheet_cards, write_pdf, write_png
from clinicam.tools.cli import main
from PIL import Image

LEG, FOOT = "30021000", "56459004"


def decode(images: list[Path]) -> Counter[str]:
    found: Counter[str] = Counter()
    for path in images:
        with Image.open(path) as page:
            results = zxingcpp.read_barcodes(page, formats=zxingcpp.BarcodeFormat.QRCode)
        found.update(r.text for r in results if r.valid)
    return found


def payloads(sheet: list[Card]) -> Counter[str]:
    return Counter(card.payload for card in sheet)


def test_sheet_has_every_card_value_once_in_print_order() -> None:
    sheet = sheet_cards()
    expected = sum(len(values) for values in CARD_VALUES.values())
    assert len(sheet) == expected == len(set(payloads(sheet)))
    assert [c.kind for c in sheet][:5] == ["PURPOSE"] * 5
    assert [c.payload for c in sheet][-2:] == ["CLINICAM:VOID", "CLINICAM:END"]
    assert [c.value for c in sheet if c.kind == "SITE"] == list(BODY_SITES)


def test_every_printed_payload_means_its_label_to_the_station() -> None:
    for card in sheet_cards():
        parsed = parse_card(card.payload)
        assert (parsed.kind, parsed.value, parsed.display) == (card.kind, card.value, card.label)


def test_configured_sites_only_and_unknown_sites_refused() -> None:
    sites = [c.value for c in sheet_cards([FOOT, LEG, FOOT]) if c.kind == "SITE"]
    assert sites == [FOOT, LEG]
    with pytest.raises(ConfigError, match="999999 are not in the built-in table"):
        sheet_cards([LEG, "999999"])


def test_png_pages_decode_to_every_payload_exactly_once(tmp_path: Path) -> None:
    sheet = sheet_cards()
    pages = write_png(sheet, tmp_path / "sheet.png")
    assert len(pages) == math.ceil(len(sheet) / cards.PER_PAGE) > 1
    assert [p.name for p in pages][:2] == ["sheet-1.png", "sheet-2.png"]
    with Image.open(pages[0]) as first:
        assert first.size == cards.PAGE
        assert round(first.info["dpi"][0]) == DPI
    assert decode(pages) == payloads(sheet)


@pytest.mark.skipif(shutil.which("pdftoppm") is None, reason="needs poppler-utils (pdftoppm)")
def test_pdf_rasterised_decodes_to_every_payload_exactly_once(tmp_path: Path) -> None:
    sheet = sheet_cards()
    (pdf,) = write_pdf(sheet, tmp_path / "sheet.pdf")
    assert pdf.read_bytes().startswith(b"%PDF")
    subprocess.run(["pdftoppm", "-r", "150", "-png", str(pdf), str(tmp_path / "page")], check=True)
    pages = sorted(tmp_path.glob("page-*.png"))
    assert len(pages) == math.ceil(len(sheet) / cards.PER_PAGE)
    assert decode(pages) == payloads(sheet)


def test_modules_are_at_least_half_a_millimetre_with_a_clean_quiet_zone(tmp_path: Path) -> None:
    (page,) = write_png(sheet_cards([LEG]), tmp_path / "one.png")
    with Image.open(page) as image:
        pixels = np.asarray(image.convert("L"))
        results = zxingcpp.read_barcodes(image, formats=zxingcpp.BarcodeFormat.QRCode)
    assert len(results) == 19
    for result in results:
        modules = len(segno.make_qr(result.text, error="q", boost_error=False).matrix)
        pos = result.position
        xs = [pos.top_left.x, pos.top_right.x, pos.bottom_left.x, pos.bottom_right.x]
        ys = [pos.top_left.y, pos.top_right.y, pos.bottom_left.y, pos.bottom_right.y]
        module_px = (max(xs) - min(xs) + 1) / modules
        assert module_px * 25.4 / DPI >= 0.5
        zone = QUIET * MODULE
        x0, x1, y0, y1 = min(xs), max(xs) + 1, min(ys), max(ys) + 1
        assert pixels[y0:y1, x0:x1].min() == 0  # positive control: the symbol itself is dark
        around = pixels[y0 - zone : y1 + zone, x0 - zone : x1 + zone].copy()
        around[zone:-zone, zone:-zone] = 255
        assert around.min() > 200, result.text


def test_a_low_resolution_view_of_the_sheet_still_decodes(tmp_path: Path) -> None:
    sheet = sheet_cards([LEG])
    (page,) = write_png(sheet, tmp_path / "one.png")
    with Image.open(page) as image:
        small = image.resize((image.width // 3, image.height // 3), Image.Resampling.BILINEAR)
    small.save(tmp_path / "small.png")
    assert decode([tmp_path / "small.png"]) == payloads(sheet)


# --- the command ----------------------------------------------------------------------


def test_cli_reads_body_sites_from_the_station_config(tmp_path: Path, capsys) -> None:
    config = tmp_path / "station.toml"
    config.write_text(f'[cards]\nbody_sites = ["{FOOT}"]\n', encoding="utf-8")
    out = tmp_path / "sheet.png"
    assert main(["cards", "--site-config", str(config), "--out", str(out)]) == 0
    assert capsys.readouterr().out.split() == [str(out)]
    found = decode([out])
    assert f"CLINICAM:SITE:{FOOT}" in found and f"CLINICAM:SITE:{LEG}" not in found
    assert sum(found.values()) == 19


def test_cli_sites_option_overrides_and_pdf_is_written(tmp_path: Path) -> None:
    out = tmp_path / "sheet.pdf"
    assert main(["cards", "--out", str(out), "--sites", f"{LEG},{FOOT}"]) == 0
    assert out.read_bytes().startswith(b"%PDF")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--out", "{tmp}/sheet.jpg"], "must end in .pdf or .png"),
        (["--out", "{tmp}/missing/sheet.png"], "does not exist"),
        (["--out", "{tmp}/sheet.png", "--sites", "123"], "not in the built-in table"),
        (["--out", "{tmp}/sheet.png", "--site-config", "{tmp}/bad.toml"], "bad.toml"),
    ],
)
def test_cli_errors_are_one_clear_line(tmp_path: Path, capsys, argv: list[str], message: str) -> None:
    (tmp_path / "bad.toml").write_text('[cards]\nbody_sites = ["left-leg"]\n', encoding="utf-8")
    args = [a.format(tmp=tmp_path) for a in argv]
    assert main(["cards", *args]) == 1
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


# --- the printed card, read by the station's own reader, steers a session -------------


@pytest.mark.parametrize("engine", ["zxing", "pyzbar"])
def test_printed_cards_read_by_the_station_steer_the_session(tmp_path: Path, engine: str) -> None:
    from clinicam.drivers.readers import make_reader
    from clinicam.firmware.codes.classify import CodeRules, PatientId, classify
    from clinicam.firmware.workflow.events import (
        CaptureSealed,
        CodeScanned,
        ShutterPressed,
        TakeCapture,
        VoidCapture,
    )
    from clinicam.firmware.workflow.machine import step
    from clinicam.firmware.workflow.session import WorkflowPolicy, initial_state

    sheet = sheet_cards([LEG])
    (page,) = write_png(sheet, tmp_path / "one.png")
    with Image.open(page) as image:
        frame = np.asarray(image.convert("L"))
    codes = make_reader(engine, ["qr"]).decode(frame)
    scanned = {c.payload: classify(code, CodeRules()) for code in codes for c in sheet
               if c.payload == code.text}
    assert len(codes) == len(scanned) == len(sheet)

    def card(payload: str) -> CodeScanned:
        return CodeScanned(scanned[payload], 0.0)

    state = initial_state(WorkflowPolicy(require_consent=True), bytes(32), clock_synced=True)
    events = [
        CodeScanned(PatientId("CANARY-PAT-9", "GS1"), 0.0),
        card("CLINICAM:CONSENT:WRITTEN"),
        card("CLINICAM:PURPOSE:WOUND"),
        card(f"CLINICAM:SITE:{LEG}"),
        card("CLINICAM:LAT:RIGHT"),
        card("CLINICAM:VIEW:CLOSE-UP"),
        ShutterPressed(0.0),
    ]
    actions: list = []
    for event in events:
        state, actions = step(state, event)
    (take,) = [a for a in actions if isinstance(a, TakeCapture)]
    ctx = take.context
    assert (ctx.consent, ctx.purpose, ctx.body_site, ctx.laterality, ctx.view) == (
        "WRITTEN", "WOUND", (LEG, "Lower leg"), "RIGHT", "CLOSE-UP")
    state, _ = step(state, CaptureSealed("f" * 32))
    state, actions = step(state, card("CLINICAM:VOID"))
    assert actions[0] == VoidCapture("f" * 32)
    state, actions = step(state, card("CLINICAM:END"))
    assert state.session is None


def test_a_card_held_up_to_the_station_camera_reads_in_a_preview_frame(tmp_path: Path) -> None:
    """One card, tilted and at half the print resolution (~6 px per module), in a noisy
    grey 1280x720 preview frame: what the station sees when a nurse holds it up."""
    from clinicam.drivers.readers import make_reader

    (page,) = write_png(sheet_cards([LEG]), tmp_path / "one.png")
    x, y = cards.MARGIN + cards.CELL[0], cards.MARGIN + cards.HEADER  # the second card
    with Image.open(page) as image:
        card = image.crop((x, y, x + cards.CELL[0], y + cards.CELL[1]))
    card = card.resize((card.width // 2, card.height // 2), Image.Resampling.BILINEAR)
    card = card.rotate(17, expand=True, fillcolor=128, resample=Image.Resampling.BILINEAR)
    frame = Image.new("L", (1280, 720), 128)
    frame.paste(card, (500, 180))
    rng = np.random.default_rng(7)
    noisy = np.clip(np.asarray(frame, dtype=np.int16) + rng.normal(0, 12, (720, 1280)), 0, 255)
    codes = make_reader("auto", ["qr"]).decode(noisy.astype(np.uint8))
    assert [c.text for c in codes] == [sheet_cards()[1].payload]
