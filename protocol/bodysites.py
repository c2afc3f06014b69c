"""Built-in body sites for ``CLINICAM:SITE:<code>`` cards (DESIGN §6).

SNOMED CT body-structure concepts (system ``http://snomed.info/sct``) for the sites
photographed most in wound care, dermatology and theatre, with the DICOM "Body Part
Examined" defined term (PS3.16 Annex L / CID 4031) where one corresponds, for the
DICOM sink. The list is deliberately short: every code here was checked, and a site
not listed is better printed as a new card after checking than guessed.

Order is the order cards are printed in.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType


@dataclass(frozen=True)
class BodySite:
    code: str  # SNOMED CT concept id
    display: str
    dicom: str | None  # DICOM Body Part Examined defined term, or None


SNOMED_SYSTEM = "http://snomed.info/sct"

_SITES: tuple[BodySite, ...] = (
    BodySite("69536005", "Head", "HEAD"),
    BodySite("41695006", "Scalp", None),
    BodySite("89545001", "Face", "FACE"),
    BodySite("52795006", "Forehead", None),
    BodySite("81745001", "Eye", "EYE"),
    BodySite("80243003", "Eyelid", None),
    BodySite("117590005", "Ear", "EAR"),
    BodySite("45206002", "Nose", "NOSE"),
    BodySite("60819002", "Cheek", None),
    BodySite("48477009", "Lip", None),
    BodySite("123851003", "Mouth", "MOUTH"),
    BodySite("21974007", "Tongue", "TONGUE"),
    BodySite("30291003", "Chin", None),
    BodySite("45048000", "Neck", "NECK"),
    BodySite("43799004", "Chest", "CHEST"),
    BodySite("76752008", "Breast", "BREAST"),
    BodySite("91470000", "Axilla", "AXILLA"),
    BodySite("113345001", "Abdomen", "ABDOMEN"),
    BodySite("22943007", "Trunk", None),
    BodySite("12921003", "Pelvis", "PELVIS"),
    BodySite("26893007", "Groin", None),
    BodySite("38864007", "Perineum", "PERINEUM"),
    BodySite("54735007", "Sacrum", "SSPINE"),
    BodySite("46862004", "Buttock", "BUTTOCK"),
    BodySite("53120007", "Upper limb", None),
    BodySite("16982005", "Shoulder", "SHOULDER"),
    BodySite("40983000", "Upper arm", "ARM"),
    BodySite("16953009", "Elbow", "ELBOW"),
    BodySite("14975008", "Forearm", "FOREARM"),
    BodySite("74670003", "Wrist", "WRIST"),
    BodySite("85562004", "Hand", "HAND"),
    BodySite("7569003", "Finger", "FINGER"),
    BodySite("76505004", "Thumb", None),
    BodySite("72651009", "Nail", None),
    BodySite("61685007", "Lower limb", None),
    BodySite("29836001", "Hip", "HIP"),
    BodySite("68367000", "Thigh", "THIGH"),
    BodySite("72696002", "Knee", "KNEE"),
    BodySite("30021000", "Lower leg", "LEG"),
    BodySite("70258002", "Ankle", "ANKLE"),
    BodySite("56459004", "Foot", "FOOT"),
    BodySite("76853006", "Heel", "HEEL"),
    BodySite("29707007", "Toe", "TOE"),
    BodySite("78883009", "Great toe", None),
    BodySite("39937001", "Skin", None),
)

BODY_SITES: MappingProxyType[str, BodySite] = MappingProxyType({s.code: s for s in _SITES})
