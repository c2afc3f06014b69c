"""GS1 element strings: the wristband (AI 8018) and badge (AI 8017) standard.

A GS1 symbol carries application identifiers (AIs) followed by their data. Readers and
handheld scanners present the same content in several forms, all accepted here and
normalised to one: the bare element string with ``"\\x1d"`` (GS) between a
variable-length field and the next AI, no leading FNC1/GS and no AIM prefix.

- ``8018796123456789012343\\x1d801912``  (what the readers return)
- ``]C18018796123456789012343``           (a scanner sending its AIM prefix)
- ``(8018)796123456789012343(8019)12``    (the human-readable form)

Only the AIs a clinic station meets are known; an unknown AI cannot be split reliably
(its length is unknown), so the whole string is refused rather than guessed.
Errors never carry the scanned text (DESIGN §3.1).
"""

from __future__ import annotations

import re

from clinicam.common.errors import CodeRejected

GS = "\x1d"

# Assigning authority written into metadata for GS1 ids (DESIGN §6: "issuer: GS1").
GS1_ISSUER = "GS1"

AI_PATIENT = "8018"  # GSRN - recipient
AI_OPERATOR = "8017"  # GSRN - provider
AI_ENCOUNTER = "8019"  # SRIN: service relation instance number (an episode of care)

# AI -> (fixed length, or None for variable; maximum length; digits only)
AIS: dict[str, tuple[int | None, int, bool]] = {
    "00": (18, 18, True),
    "01": (14, 14, True),
    "02": (14, 14, True),
    "10": (None, 20, False),
    "11": (6, 6, True),
    "13": (6, 6, True),
    "15": (6, 6, True),
    "17": (6, 6, True),
    "21": (None, 20, False),
    "240": (None, 30, False),
    "8017": (18, 18, True),
    "8018": (18, 18, True),
    "8019": (None, 10, True),
}

_AIM_GS1_PREFIXES = ("]C1", "]d2", "]Q3", "]e0", "]J1")
_PAREN = re.compile(r"\(([0-9]{2,4})\)([^()]*)", re.ASCII)


def check_digit_ok(digits: str) -> bool:
    """GS1 mod 10: weights 3 and 1 alternating from the rightmost data digit."""
    if not digits or not (digits.isascii() and digits.isdigit()):
        return False
    return gs1_check_digit(digits[:-1]) == digits[-1]


def gs1_check_digit(data: str) -> str:
    """The GS1 mod-10 check digit for ``data`` (ASCII digits, check digit not included)."""
    total = sum(int(d) * (3 if i % 2 == 0 else 1) for i, d in enumerate(reversed(data)))
    return str((10 - total % 10) % 10)


def is_gs1_text(text: str) -> bool:
    """Whether ``text`` announces itself as GS1 (AIM prefix, leading FNC1 or ``(AI)``)."""
    return text.startswith((*_AIM_GS1_PREFIXES, GS)) or bool(_PAREN.match(text))


def parse(text: str) -> dict[str, str]:
    """Split an element string in any accepted form into ``{AI: value}``.

    Raises ``CodeRejected`` with ``gs1-syntax`` (cannot be split), ``length`` (a field
    too short or too long) or ``non-ascii``.
    """
    if not text.isascii():
        raise CodeRejected("non-ascii")
    for prefix in _AIM_GS1_PREFIXES:
        text = text.removeprefix(prefix)
    text = text.removeprefix(GS)
    fields = _parse_parens(text) if text.startswith("(") else _parse_bare(text)
    for ai, value in fields.items():
        _check_field(ai, value)
    return fields


def _parse_parens(text: str) -> dict[str, str]:
    fields: dict[str, str] = {}
    pos = 0
    for match in _PAREN.finditer(text):
        if match.start() != pos or match.group(1) in fields:
            raise CodeRejected("gs1-syntax")
        fields[match.group(1)] = match.group(2)
        pos = match.end()
    if pos != len(text) or not fields:
        raise CodeRejected("gs1-syntax")
    return fields


def _parse_bare(text: str) -> dict[str, str]:
    fields: dict[str, str] = {}
    pos = 0
    while pos < len(text):
        ai = _ai_at(text, pos)
        if ai is None or ai in fields:
            # After a fixed-length field, leftover data means that field was too long.
            raise CodeRejected("length" if fields and _last_fixed(fields) else "gs1-syntax")
        fixed, _, _ = AIS[ai]
        start = pos + len(ai)
        end = start + fixed if fixed is not None else _field_end(text, start)
        fields[ai] = text[start:end]
        pos = end + 1 if text[end : end + 1] == GS else end
    if not fields:
        raise CodeRejected("gs1-syntax")
    return fields


def _ai_at(text: str, pos: int) -> str | None:
    return next((text[pos : pos + n] for n in (2, 3, 4) if text[pos : pos + n] in AIS), None)


def _field_end(text: str, start: int) -> int:
    end = text.find(GS, start)
    return len(text) if end < 0 else end


def _last_fixed(fields: dict[str, str]) -> bool:
    return AIS[next(reversed(fields))][0] is not None


def _check_field(ai: str, value: str) -> None:
    fixed, maximum, digits = AIS.get(ai, (None, 0, False))
    if maximum == 0:
        raise CodeRejected("gs1-syntax")
    if not value or len(value) > maximum or (fixed is not None and len(value) != fixed):
        raise CodeRejected("length")
    if GS in value or (digits and not value.isdigit()):
        raise CodeRejected("gs1-syntax")


# AIs whose value ends in a GS1 mod-10 check digit.
CHECKED_AIS = frozenset({"00", "01", "02", "8017", "8018"})


def plausible(text: str) -> bool:
    """Whether ``text`` parses as an element string whose check digits all hold.

    The camera's reading pipeline injects this to drop a GS1 read that came out of a
    preprocessed pass and fails it: there it is a probable misread, not a misprinted
    band (DESIGN §10, hard frames)."""
    try:
        fields = parse(text)
    except CodeRejected:
        return False
    return all(check_digit_ok(v) for ai, v in fields.items() if ai in CHECKED_AIS)


def gsrn(fields: dict[str, str], ai: str) -> str:
    """The 18-digit GSRN under ``ai`` with its check digit verified."""
    value = fields[ai]
    if not check_digit_ok(value):
        raise CodeRejected("check-digit")
    return value
