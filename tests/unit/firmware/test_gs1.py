"""GS1 element strings: every accepted form normalises to the same fields."""

from __future__ import annotations

import pytest
from clinicam.common.errors import CodeRejected
from clinicam.firmware.codes import gs1


def gsrn(body17: str) -> str:
    return body17 + gs1.gs1_check_digit(body17)


GSRN = gsrn("79612345678901234")


def test_check_digit_known_value():
    # GS1 General Specifications example GTIN-13 6291041500213 (check digit 3).
    assert gs1.gs1_check_digit("629104150021") == "3"
    assert gs1.check_digit_ok("6291041500213")
    assert not gs1.check_digit_ok("6291041500214")


@pytest.mark.parametrize(
    "text",
    [
        f"8018{GSRN}\x1d80191234",
        f"]C18018{GSRN}\x1d80191234",
        f"]d2\x1d8018{GSRN}\x1d80191234",
        f"]Q38018{GSRN}\x1d80191234",
        f"(8018){GSRN}(8019)1234",
    ],
)
def test_forms_parse_alike(text):
    assert gs1.parse(text) == {"8018": GSRN, "8019": "1234"}


def test_variable_field_last_needs_no_separator():
    assert gs1.parse(f"80191234\x1d8018{GSRN}") == {"8019": "1234", "8018": GSRN}


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        (f"8018{GSRN[:-1]}", "length"),  # short
        (f"8018{GSRN}5", "length"),  # long
        (f"(8018){GSRN}5", "length"),
        ("(8018)", "length"),
        ("9999123", "gs1-syntax"),  # unknown AI
        ("(8018", "gs1-syntax"),
        (f"(8018){GSRN}(8018){GSRN}", "gs1-syntax"),  # repeated AI
        ("8018ABCDEFGHIJKLMNOPQR", "gs1-syntax"),
        ("8018١٢٣", "non-ascii"),
    ],
)
def test_rejections(text, reason):
    with pytest.raises(CodeRejected) as info:
        gs1.parse(text)
    assert info.value.reason == reason
    assert text not in str(info.value)


def test_is_gs1_text():
    assert gs1.is_gs1_text("]C1801812")
    assert gs1.is_gs1_text("(8018)12")
    assert gs1.is_gs1_text("\x1d8018")
    assert not gs1.is_gs1_text("8018796123")
    assert not gs1.is_gs1_text("MRN1234")
