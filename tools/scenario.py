"""The demo's ward round as a simulation script (see ``clinicam.firmware.simscript``).

Also used by the end-to-end tests, so the demo and the tests play the same round:
operator badge, patient A's wristband, consent, purpose, body site and laterality
cards, three photos, patient B's wristband (a switch), consent, two photos, END, and a
photo attempt with no patient (refused).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from clinicam.protocol.bodysites import BODY_SITES

Step = dict[str, Any]


@dataclass(frozen=True)
class DemoIds:
    """Synthetic GSRNs (18 digits with check digit); never real patients."""

    patient_a: str
    patient_b: str
    operator: str


def gs1_128(ai: str, gsrn: str) -> dict[str, str]:
    return {"content": f"({ai}){gsrn}", "symbology": "gs1-128"}


def card(kind: str, value: str = "") -> dict[str, str]:
    text = f"CLINICAM:{kind}:{value}" if value else f"CLINICAM:{kind}"
    return {"content": text, "symbology": "qr"}


def site_code(display: str) -> str:
    return next(code for code, site in BODY_SITES.items() if site.display == display)


def show(code: dict[str, str], for_s: float = 1.0) -> Step:
    return {"show": code, "for_s": for_s}


def photos(n: int) -> list[Step]:
    steps: list[Step] = []
    for _ in range(n):
        steps += [{"press": "short"}, {"wait_s": 0.3}]
    return steps


def ward_round(ids: DemoIds) -> list[Step]:
    leg = site_code("Lower leg")
    return [
        {"mark": "the nurse scans her badge"},
        show(gs1_128("8017", ids.operator)),
        {"mark": "patient A's wristband (GS1-128)"},
        show(gs1_128("8018", ids.patient_a)),
        {"mark": "consent, purpose, body site and laterality cards"},
        show(card("CONSENT", "VERBAL")),
        show(card("PURPOSE", "WOUND")),
        show(card("SITE", leg)),
        show(card("LAT", "LEFT")),
        {"mark": "three photos of the wound"},
        *photos(3),
        {"wait_for": {"stored": 3}, "timeout_s": 60},
        {"mark": "patient B's wristband: the session switches"},
        show(gs1_128("8018", ids.patient_b)),
        show(card("CONSENT", "WRITTEN")),
        show(card("PURPOSE", "DERM")),
        {"mark": "two photos"},
        *photos(2),
        {"wait_for": {"stored": 5}, "timeout_s": 60},
        {"mark": "END card closes the session"},
        show(card("END")),
        {"mark": "a photo with no patient bound: refused"},
        {"press": "short"},
        {"wait_s": 1.0},
    ]
