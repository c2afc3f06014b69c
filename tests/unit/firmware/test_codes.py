"""Classification of scanned codes (DESIGN §6): wristbands, badges, cards, rejections."""

from __future__ import annotations

import re

import pytest
from clinicam.common.errors import CodeRejected
from clinicam.drivers.readers import SYMBOLOGIES, Code
from clinicam.firmware.codes.classify import (
    CARD_VALUES,
    CardCode,
    CodeRules,
    OperatorId,
    PatientId,
    SiteRule,
    classify,
    gs1,
    luhn_ok,
    mod11_ok,
)
from clinicam.protocol.bodysites import BODY_SITES
from hypothesis import given, settings
from hypothesis import strategies as st

GSRN_P = "79612345678901234" + gs1.gs1_check_digit("79612345678901234")
GSRN_O = "79698765432109876" + gs1.gs1_check_digit("79698765432109876")
BAD_CHECK = GSRN_P[:-1] + str((int(GSRN_P[-1]) + 1) % 10)

RULES = CodeRules(
    rules=(
        SiteRule("mrn-luhn", "patient", r"MRN(?P<id>[0-9]{6,12})(?:/(?P<encounter>[0-9]{4}))?",
                 "urn:oid:2.999.1", check="luhn", symbologies=("code128", "qr")),
        SiteRule("nhs", "patient", r"NHS(?P<id>\d{10})", "https://fhir.nhs.uk/Id/nhs-number",
                 check="mod11"),
        SiteRule("badge", "operator", r"EMP(?P<id>\d+)", "urn:oid:2.999.2", check="gs1",
                 min_length=6, max_length=10),
    )
)


def code(text: str, symbology: str = "code128") -> Code:
    return Code(symbology, text, text.encode(), None)


def rejected(c: Code, rules: CodeRules = RULES) -> str:
    with pytest.raises(CodeRejected) as info:
        classify(c, rules)
    assert c.text not in str(info.value) or len(c.text) < 3
    assert c.text not in repr(info.value) or len(c.text) < 3
    return info.value.reason


# --- GS1 -------------------------------------------------------------------------------

@pytest.mark.parametrize("symbology", ["gs1-128", "gs1-qr", "gs1-datamatrix"])
def test_gs1_patient(symbology):
    got = classify(code(f"8018{GSRN_P}\x1d80190042", symbology), RULES)
    assert got == PatientId(GSRN_P, "GS1", "0042")


def test_gs1_operator_and_forms():
    assert classify(code(f"8017{GSRN_O}", "gs1-128"), RULES) == OperatorId(GSRN_O, "GS1")
    # A handheld scanner sending the AIM prefix or the human-readable form.
    assert classify(code(f"]C18017{GSRN_O}"), RULES) == OperatorId(GSRN_O, "GS1")
    assert classify(code(f"(8018){GSRN_P}"), RULES) == PatientId(GSRN_P, "GS1", None)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        (f"8018{BAD_CHECK}", "check-digit"),
        (f"8017{BAD_CHECK}", "check-digit"),
        (f"01{GSRN_P[:14]}", "unknown"),  # a GTIN, not a person
        (f"8018{GSRN_P}\x1d8017{GSRN_O}", "unknown"),  # ambiguous
        (f"8018{GSRN_P[:10]}", "length"),
        (f"8018{GSRN_P}12", "length"),
    ],
)
def test_gs1_rejections(text, reason):
    assert rejected(code(text, "gs1-128")) == reason


def test_gs1_disabled():
    assert rejected(code(f"8018{GSRN_P}", "gs1-128"), CodeRules(gs1=False)) == "unknown"


# --- site rules and check digits -------------------------------------------------------

def test_check_digit_schemes():
    assert luhn_ok("79927398713") and not luhn_ok("79927398710")
    assert mod11_ok("9434765919") and not mod11_ok("9434765918")  # NHS example number
    assert not mod11_ok("1234567890")  # check would be 10: never issued


def test_site_rule_luhn_with_encounter():
    assert classify(code("MRN79927398713/0007"), RULES) == PatientId(
        "79927398713", "urn:oid:2.999.1", "0007")
    assert rejected(code("MRN79927398710")) == "check-digit"
    assert rejected(code("MRN79927398713", "pdf417")) == "symbology"


def test_site_rule_mod11_and_gs1():
    assert classify(code("NHS9434765919"), RULES) == PatientId(
        "9434765919", "https://fhir.nhs.uk/Id/nhs-number", None)
    assert rejected(code("NHS9434765918")) == "check-digit"
    assert classify(code("EMP12345670"), RULES) == OperatorId(
        "12345670", "urn:oid:2.999.2")
    assert rejected(code("EMP12345671")) == "check-digit"


def test_length_bounds():
    assert rejected(code("EMP00")) == "length"
    assert rejected(code("EMP" + "1" * 11)) == "length"


def test_non_ascii_digits_rejected():
    # Arabic-Indic and full-width digits: \d under re.ASCII does not match them, and the
    # classifier refuses non-ASCII text before any rule runs.
    assert rejected(code("NHS٩٤٣٤٧٦٥٩١٩")) == "non-ascii"
    assert rejected(code("MRN７９９２７３９８７１３")) == "non-ascii"


def test_unknown():
    assert rejected(code("HELLO")) == "unknown"
    assert rejected(code("4006381333931", "ean13")) == "unknown"  # medication


def test_rule_from_dict_and_validation():
    rule = SiteRule.from_config({"name": "x", "kind": "patient", "pattern": "P(?P<id>[0-9]+)",
                                 "issuer": "urn:x", "check": "none"})
    assert classify(code("P12"), CodeRules((rule,))) == PatientId("12", "urn:x", None)
    with pytest.raises(ValueError):
        SiteRule("x", "patient", "P[0-9]+", "urn:x")  # no id group
    with pytest.raises(ValueError):
        SiteRule("x", "patient", "P(?P<id>[0-9]+)", "urn:x", check="crc")


# --- cards ------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("kind", "value"),
    [(k, v) for k, values in CARD_VALUES.items() for v in values],
)
def test_every_card_value(kind, value):
    text = f"clinicam:{kind.lower()}:{value.lower()}" if value else f"CLINICAM:{kind}"
    got = classify(code(text, "qr"), RULES)
    assert isinstance(got, CardCode) and (got.kind, got.value) == (kind, value)


def test_site_card_display():
    got = classify(code("CLINICAM:SITE:56459004", "qr"), RULES)
    assert got == CardCode("SITE", "56459004", "Foot")
    assert len(BODY_SITES) >= 40


@pytest.mark.parametrize(
    "text",
    ["CLINICAM:PURPOSE:LUNCH", "CLINICAM:SITE:123", "CLINICAM:LAT:UP", "CLINICAM:VIEW:TOP",
     "CLINICAM:CONSENT:MAYBE", "CLINICAM:VOID:NOW", "CLINICAM:END:1", "CLINICAM:FOO:BAR",
     "CLINICAM:", "CLINICAM:PURPOSE:WOUND:X", "CLINICAM:PURPOSE"],
)
def test_bad_cards(text):
    assert rejected(code(text, "qr")) == "bad-card"


# --- fuzzing ----------------------------------------------------------------------------

_ALPHABET = st.sampled_from([*list("0123456789()\x1d]CdQ:/ACLIMNPRSTEHVWXYZ"), "٣", "é"])


@settings(max_examples=400, deadline=None)
@given(text=st.one_of(st.text(max_size=40), st.text(_ALPHABET, max_size=40)),
       symbology=st.sampled_from(SYMBOLOGIES))
def test_fuzz_only_code_rejected(text, symbology):
    try:
        classify(Code(symbology, text, b"", None), RULES)
    except CodeRejected as exc:
        # The message is the fixed template with a closed-set reason, so no scanned text
        # can be in it (a substring check flaked on texts such as "code").
        assert re.fullmatch(r"[a-z][a-z0-9-]*", exc.reason)
        assert str(exc) == f"code rejected: {exc.reason}"


def test_body_site_table_is_well_formed():
    from clinicam.protocol.bodysites import SNOMED_SYSTEM

    assert SNOMED_SYSTEM == "http://snomed.info/sct"
    displays = [s.display for s in BODY_SITES.values()]
    assert len(set(displays)) == len(displays)
    for code, site in BODY_SITES.items():
        assert code == site.code and code.isascii() and code.isdigit() and code[0] != "0"
        assert 6 <= len(code) <= 18
        assert site.dicom is None or site.dicom.isupper()


_VERHOEFF_D = [
    [0, 1, 2, 3, 4, 5, 6, 7, 8, 9], [1, 2, 3, 4, 0, 6, 7, 8, 9, 5],
    [2, 3, 4, 0, 1, 7, 8, 9, 5, 6], [3, 4, 0, 1, 2, 8, 9, 5, 6, 7],
    [4, 0, 1, 2, 3, 9, 5, 6, 7, 8], [5, 9, 8, 7, 6, 0, 4, 3, 2, 1],
    [6, 5, 9, 8, 7, 1, 0, 4, 3, 2], [7, 6, 5, 9, 8, 2, 1, 0, 4, 3],
    [8, 7, 6, 5, 9, 3, 2, 1, 0, 4], [9, 8, 7, 6, 5, 4, 3, 2, 1, 0],
]
_VERHOEFF_P = [list(range(10)), [1, 5, 7, 6, 2, 8, 3, 0, 9, 4]]
for _ in range(6):  # each row is the previous one permuted by row 1
    _VERHOEFF_P.append([_VERHOEFF_P[1][x] for x in _VERHOEFF_P[-1]])


def _verhoeff_ok(number: str) -> bool:
    c = 0
    for i, digit in enumerate(reversed(number)):
        c = _VERHOEFF_D[c][_VERHOEFF_P[i % 8][int(digit)]]
    return c == 0


def test_body_site_codes_are_snomed_concept_ids():
    # An SCTID ends in a partition identifier ("00" for a concept) and a Verhoeff check
    # digit: a mistyped code fails here.
    assert _verhoeff_ok("2363") and not _verhoeff_ok("2364")  # the textbook example
    assert _verhoeff_ok("138875005") and _verhoeff_ok("404684003")  # SNOMED CT roots
    for code in BODY_SITES:
        assert code[-3:-1] == "00", code
        assert _verhoeff_ok(code), code
