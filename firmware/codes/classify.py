"""What a scanned code means: a patient's wristband, an operator's badge, or a card.

The rules are DESIGN §6: GS1 is built in (AI 8018 patient, AI 8017 operator, GSRN check
digit verified), the site adds regular-expression rules for its own wristbands and
badges, and ``CLINICAM:<KIND>:<VALUE>`` cards steer the session. Anything else is
rejected with a short reason code, never guessed: a wrong-patient photo is the main
clinical risk of the station.

A rejection never carries the scanned text, not even indirectly (``int(text)`` would
put it in a ``ValueError`` message), so it is safe to log and to show.

Reason codes: ``unknown`` (no rule matches), ``check-digit``, ``length``,
``symbology`` (a rule matched but not for this symbology), ``non-ascii``,
``gs1-syntax`` (a GS1 symbol that cannot be split), ``bad-card``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from clinicam.common.errors import CodeRejected
from clinicam.drivers.readers import SYMBOLOGIES, Code
from clinicam.firmware.codes import gs1
from clinicam.protocol.bodysites import BODY_SITES

REASONS: frozenset[str] = frozenset(
    {"unknown", "check-digit", "length", "symbology", "non-ascii", "gs1-syntax", "bad-card"}
)
CHECKS = ("none", "gs1", "luhn", "mod11")
CARD_PREFIX = "CLINICAM:"

# Cards (normative, DESIGN §6): kind -> allowed values -> display label.
CARD_VALUES: Mapping[str, Mapping[str, str]] = {
    "PURPOSE": {
        "WOUND": "Wound",
        "PRE-OP": "Pre-operative",
        "POST-OP": "Post-operative",
        "DERM": "Dermatology",
        "OTHER": "Other",
    },
    "LAT": {"LEFT": "Left", "RIGHT": "Right", "BILATERAL": "Bilateral"},
    "VIEW": {
        "ANTERIOR": "Anterior",
        "POSTERIOR": "Posterior",
        "LATERAL": "Lateral",
        "CLOSE-UP": "Close-up",
        "OVERVIEW": "Overview",
    },
    "CONSENT": {"VERBAL": "Verbal", "WRITTEN": "Written", "ON-FILE": "On file"},
    "SITE": {code: site.display for code, site in BODY_SITES.items()},
    "VOID": {"": "Void last capture"},
    "END": {"": "End session"},
}


@dataclass(frozen=True)
class PatientId:
    id: str
    issuer: str
    encounter: str | None = None

    def __repr__(self) -> str:
        return f"PatientId(issuer={self.issuer!r}, <id withheld>)"


@dataclass(frozen=True)
class OperatorId:
    id: str
    issuer: str

    def __repr__(self) -> str:
        return f"OperatorId(issuer={self.issuer!r}, <id withheld>)"


@dataclass(frozen=True)
class CardCode:
    kind: str  # PURPOSE, SITE, LAT, VIEW, CONSENT, VOID, END
    value: str  # upper case; the SNOMED CT code for SITE; "" for VOID and END
    display: str


Classified = PatientId | OperatorId | CardCode


@dataclass(frozen=True)
class SiteRule:
    """A site's own wristband or badge format (``[[codes.rules]]``).

    ``pattern`` must match the whole text and name the identifier ``(?P<id>…)``;
    ``(?P<encounter>…)`` is optional. It is compiled with ``re.ASCII`` so ``\\d`` cannot
    match Arabic-Indic or full-width digits. ``check`` applies to the ``id`` group,
    ``min_length``/``max_length`` bound it, ``symbologies`` (empty: any) limit where the
    rule applies.
    """

    name: str
    kind: str  # "patient" or "operator"
    pattern: str
    issuer: str
    check: str = "none"
    symbologies: tuple[str, ...] = ()
    min_length: int = 1
    max_length: int = 64

    def __post_init__(self) -> None:
        if self.kind not in ("patient", "operator"):
            raise ValueError(f"rule {self.name!r}: kind must be 'patient' or 'operator'")
        if self.check not in CHECKS:
            raise ValueError(f"rule {self.name!r}: check must be one of {', '.join(CHECKS)}")
        if any(s not in SYMBOLOGIES for s in self.symbologies):
            raise ValueError(f"rule {self.name!r}: symbologies must be among {SYMBOLOGIES}")
        if not 1 <= self.min_length <= self.max_length:
            raise ValueError(f"rule {self.name!r}: need 1 <= min_length <= max_length")
        if "id" not in self.regex.groupindex:
            raise ValueError(f"rule {self.name!r}: pattern needs a named group (?P<id>...)")

    @property
    def regex(self) -> re.Pattern[str]:
        return _compile(self.pattern)

    @classmethod
    def from_config(cls, rule: Any) -> SiteRule:
        """Accept a ``SiteRule``, the config loader's rule section, or a plain dict."""
        if isinstance(rule, SiteRule):
            return rule
        get = rule.get if isinstance(rule, Mapping) else lambda k, d=None: getattr(rule, k, d)
        return cls(
            name=str(get("name")),
            kind=str(get("kind")),
            pattern=str(get("pattern")),
            issuer=str(get("issuer")),
            check=str(get("check", "none")),
            symbologies=tuple(get("symbologies", ()) or ()),
            min_length=int(get("min_length", 1)),
            max_length=int(get("max_length", 64)),
        )


_compiled: dict[str, re.Pattern[str]] = {}


def _compile(pattern: str) -> re.Pattern[str]:
    if pattern not in _compiled:
        try:
            _compiled[pattern] = re.compile(pattern, re.ASCII)
        except re.error as exc:
            raise ValueError("rule pattern is not a valid regular expression") from exc
    return _compiled[pattern]


@dataclass(frozen=True)
class CodeRules:
    """Everything ``classify`` needs: the site's rules and whether GS1 is accepted."""

    rules: tuple[SiteRule, ...] = ()
    gs1: bool = True

    @classmethod
    def from_config(cls, codes_section: Any) -> CodeRules:
        """Build from the station config's ``codes`` section (or an equivalent mapping)."""
        if isinstance(codes_section, Mapping):
            rules, use_gs1 = codes_section.get("rules", ()), codes_section.get("gs1", True)
        else:
            rules, use_gs1 = codes_section.rules, codes_section.gs1
        return cls(tuple(SiteRule.from_config(r) for r in rules), bool(use_gs1))


def classify(code: Code, rules: CodeRules) -> Classified:
    """Classify one scanned code, or raise ``CodeRejected(reason)``."""
    text = code.text
    if not text.isascii():
        raise CodeRejected("non-ascii")
    if text.upper().startswith(CARD_PREFIX):
        return parse_card(text)
    if code.symbology.startswith("gs1-") or gs1.is_gs1_text(text):
        if rules.gs1:
            return _classify_gs1(text)
        raise CodeRejected("unknown")
    return _classify_site(code, rules.rules)


def parse_card(text: str) -> CardCode:
    """``CLINICAM:<KIND>:<VALUE>`` (case-insensitive); ``VOID`` and ``END`` take no value."""
    parts = text.upper().split(":")
    if len(parts) == 2:
        parts.append("")
    if len(parts) != 3:
        raise CodeRejected("bad-card")
    _, kind, value = parts
    display = CARD_VALUES.get(kind, {}).get(value)
    if display is None:
        raise CodeRejected("bad-card")
    return CardCode(kind, value, display)


def _classify_gs1(text: str) -> PatientId | OperatorId:
    fields = gs1.parse(text)
    has_patient, has_operator = gs1.AI_PATIENT in fields, gs1.AI_OPERATOR in fields
    if has_patient == has_operator:  # neither, or an ambiguous both
        raise CodeRejected("unknown")
    if has_operator:
        return OperatorId(gs1.gsrn(fields, gs1.AI_OPERATOR), gs1.GS1_ISSUER)
    encounter = fields.get(gs1.AI_ENCOUNTER)
    return PatientId(gs1.gsrn(fields, gs1.AI_PATIENT), gs1.GS1_ISSUER, encounter)


def _classify_site(code: Code, rules: Iterable[SiteRule]) -> PatientId | OperatorId:
    failure: str | None = None
    for rule in rules:
        try:
            return _apply(rule, code)
        except CodeRejected as exc:
            failure = failure or (None if exc.reason == "unknown" else exc.reason)
    raise CodeRejected(failure or "unknown")


def _apply(rule: SiteRule, code: Code) -> PatientId | OperatorId:
    match = rule.regex.fullmatch(code.text)
    if match is None:
        raise CodeRejected("unknown")
    if rule.symbologies and code.symbology not in rule.symbologies:
        raise CodeRejected("symbology")
    ident = match.group("id") or ""
    if not rule.min_length <= len(ident) <= rule.max_length:
        raise CodeRejected("length")
    if not CHECK_DIGITS[rule.check](ident):
        raise CodeRejected("check-digit")
    if rule.kind == "operator":
        return OperatorId(ident, rule.issuer)
    encounter = match.groupdict().get("encounter") or None
    return PatientId(ident, rule.issuer, encounter)


def luhn_ok(digits: str) -> bool:
    """Luhn (ISO/IEC 7812-1): double every second digit from the right."""
    if not digits.isdigit() or len(digits) < 2:
        return False
    total = 0
    for i, d in enumerate(reversed(digits)):
        n = int(d) * (2 if i % 2 else 1)
        total += n - 9 if n > 9 else n
    return total % 10 == 0


def mod11_ok(digits: str) -> bool:
    """Weighted mod 11 as in the NHS number: weights n+1..2 over the n data digits,
    check = 11 - sum mod 11 (11 gives 0; 10 means the number cannot be issued)."""
    if not digits.isdigit() or len(digits) < 2:
        return False
    data = digits[:-1]
    total = sum(int(d) * w for d, w in zip(data, range(len(data) + 1, 1, -1), strict=True))
    check = 11 - total % 11
    return check != 10 and str(check % 11) == digits[-1]


CHECK_DIGITS = {
    "none": lambda ident: True,
    "gs1": lambda ident: ident.isdigit() and gs1.check_digit_ok(ident),
    "luhn": luhn_ok,
    "mod11": mod11_ok,
}
