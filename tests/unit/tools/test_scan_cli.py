"""``clinicam scan``: masked by default, JSON lines, site rules from the config, exit codes."""

from __future__ import annotations

import json

import pytest
from clinicam.drivers.scenes import Scene, Symbol
from clinicam.firmware.codes import gs1
from clinicam.tools.cli import main
from PIL import Image

GSRN = "79699887766554433" + gs1.gs1_check_digit("79699887766554433")
MRN = "MRN79927398713"


@pytest.fixture
def images(tmp_path, monkeypatch):
    from clinicam.firmware import config

    monkeypatch.setattr(config, "DEFAULT_PATH", tmp_path / "no-station.toml")

    def save(name, *symbols):
        path = tmp_path / name
        Image.fromarray(Scene(tuple(symbols), seed=5).render(1280, 720)).save(path)
        return str(path)

    return {
        "wrist": save("wrist.png", Symbol(f"(8018){GSRN}", "gs1-128", 3.0, center=(0.5, 0.3)),
                      Symbol("CLINICAM:LAT:LEFT", "qr", 5.0, center=(0.5, 0.75))),
        "mrn": save("mrn.png", Symbol(MRN, "code128", 3.0)),
        "empty": save("empty.png"),
    }


def test_masked_text_output(images, capsys):
    assert main(["scan", images["wrist"], images["empty"]]) == 0
    out = capsys.readouterr().out
    assert GSRN not in out and GSRN[-4:] in out
    assert "patient" in out and "card LAT:LEFT" in out
    assert "empty.png: 0 code(s)" in out


def test_json_lines_and_reveal(images, capsys):
    assert main(["scan", "--json", images["wrist"], images["mrn"]]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [x["file"] for x in lines] == [images["wrist"], images["mrn"]]
    assert GSRN not in json.dumps(lines) and all("text" not in c for c in lines[0]["codes"])
    kinds = {(c["symbology"], c["kind"], c["reason"]) for c in lines[0]["codes"]}
    assert kinds == {("gs1-128", "patient", None), ("qr", "card", None)}
    assert lines[1]["codes"][0]["reason"] == "unknown"  # no site rule without a config

    assert main(["scan", "--json", "--reveal", "--reader", "pyzbar", images["wrist"]]) == 0
    revealed = json.loads(capsys.readouterr().out)
    assert f"8018{GSRN}" in {c["text"] for c in revealed["codes"]}


def test_site_rules_from_config(images, tmp_path, capsys):
    conf = tmp_path / "station.toml"
    conf.write_text(
        '[[codes.rules]]\nname = "mrn"\nkind = "patient"\n'
        'pattern = "MRN(?P<id>[0-9]{6,12})"\nissuer = "urn:oid:2.999.7"\ncheck = "luhn"\n'
    )
    assert main(["scan", "--json", "--config", str(conf), images["mrn"]]) == 0
    code = json.loads(capsys.readouterr().out)["codes"][0]
    assert (code["kind"], code["issuer"], code["id"]) == ("patient", "urn:oid:2.999.7",
                                                          "*******8713")


def test_unreadable_file_and_bad_config(images, tmp_path, capsys):
    junk = tmp_path / "junk.png"
    junk.write_bytes(b"not an image")
    assert main(["scan", str(junk), images["empty"], str(tmp_path / "missing.png")]) == 2
    captured = capsys.readouterr()
    assert "empty.png: 0 code(s)" in captured.out  # the readable one is still reported
    assert f"{junk}: not an image" in captured.err
    assert f"{tmp_path / 'missing.png'}: no such file" in captured.err
    bad = tmp_path / "bad.toml"
    bad.write_text("[codes\n")
    assert main(["scan", "--config", str(bad), images["empty"]]) == 2


def test_bad_arguments():
    with pytest.raises(SystemExit) as info:
        main(["scan", "--reader", "tesseract", "x.png"])
    assert info.value.code == 2


def test_config_formats_restrict_the_reader(images, tmp_path, capsys):
    conf = tmp_path / "qr-only.toml"
    conf.write_text('[reader]\nformats = ["qr"]\n')
    assert main(["scan", "--json", "--config", str(conf), images["wrist"]]) == 0
    codes = json.loads(capsys.readouterr().out)["codes"]
    assert [c["symbology"] for c in codes] == ["qr"]


def test_the_default_card_sheet_pdf_is_read_page_by_page(tmp_path, capsys):
    """``clinicam cards`` writes cards.pdf by default; ``clinicam scan cards.pdf`` reads
    every card of every page (rasterised by poppler in memory)."""
    from clinicam.tools.cards import sheet_cards

    pdf = tmp_path / "cards.pdf"
    assert main(["cards", "--out", str(pdf)]) == 0
    capsys.readouterr()
    before = set(tmp_path.iterdir())
    assert main(["scan", "--json", str(pdf)]) == 0
    pages = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [p["page"] for p in pages] == list(range(1, len(pages) + 1)) and len(pages) > 1
    read = sorted(f"{c['card']}:{c['value']}" for p in pages for c in p["codes"])
    assert read == sorted(f"{c.kind}:{c.value}" for c in sheet_cards())
    assert set(tmp_path.iterdir()) == before  # no page image left behind


def test_a_broken_pdf_is_one_line(tmp_path, capsys):
    bad = tmp_path / "cards.pdf"
    bad.write_bytes(b"%PDF-1.4\nnot really\n")
    assert main(["scan", str(bad)]) == 2
    assert capsys.readouterr().err == f"clinicam scan: {bad}: not a readable PDF\n"


def test_engine_pipeline_verbose_shows_passes(tmp_path, monkeypatch, capsys):
    """``--engine pipeline -v``: each pass and its outcome, never the decoded text; a
    band turned 45° that the plain engine misses is read."""
    from clinicam.firmware import config

    monkeypatch.setattr(config, "DEFAULT_PATH", tmp_path / "no-station.toml")
    band = tmp_path / "band45.png"
    scene = Scene((Symbol(f"(8018){GSRN}", "gs1-128", 2.6, angle=45),), seed=4)
    Image.fromarray(scene.render(1280, 720)).save(band)
    assert main(["scan", "--engine", "zxing", "-v", str(band)]) == 0
    assert "0 code(s)" in capsys.readouterr().out  # one plain call misses it
    assert main(["scan", "--engine", "pipeline", "-v", str(band)]) == 0
    out = capsys.readouterr().out
    assert "1 code(s)" in out and "patient" in out and GSRN not in out
    assert "pass fast pass: nothing" in out and "agrees: accepted" in out
    assert main(["scan", "--engine", "pipeline", "-v", "--json", str(band)]) == 0
    line = json.loads(capsys.readouterr().out)
    assert line["passes"][0]["name"] == "fast pass" and GSRN not in json.dumps(line)
