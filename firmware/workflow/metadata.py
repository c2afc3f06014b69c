"""Part 0 of a sealed capture: the metadata of DESIGN §6 (normative keys).

Built in RAM from the session, the still and the device, then sealed with the image;
it is the only place the patient's id travels, and only encrypted. The keys follow the
IHE / HIMSS-SIIM photo-documentation guidance so the relay can file a DICOM or FHIR
object without guessing.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from clinicam.firmware.codes.classify import OperatorId, PatientId

SNOMED = "http://snomed.info/sct"


@dataclass(frozen=True)
class DeviceInfo:
    id: str
    site: str
    location: str
    firmware: str


@dataclass(frozen=True)
class SessionFacts:
    """What the session knows when the shutter is pressed (from the workflow)."""

    session_id: str
    index: int
    patient: PatientId
    operator: OperatorId | None = None
    purpose: str | None = None
    body_site: tuple[str, str] | None = None  # (SNOMED CT code, display)
    laterality: str | None = None
    view: str | None = None
    consent: str | None = None


@dataclass(frozen=True)
class CameraFacts:
    width: int
    height: int
    model: str | None = None
    exposure_us: int | None = None
    analogue_gain: float | None = None
    lens_position: float | None = None


def rfc3339_ms(moment: datetime) -> str:
    """UTC with milliseconds and ``Z``, as the wire format wants (DESIGN §4, §6)."""
    utc = moment.astimezone(UTC)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"


def tz_offset(moment: datetime) -> str:
    """The station's local UTC offset at ``moment`` as ``+01:00`` (for DICOM)."""
    offset = moment.astimezone().utcoffset() or timedelta(0)
    minutes = int(offset.total_seconds() // 60)
    sign = "+" if minutes >= 0 else "-"
    return f"{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"


def build_metadata(
    session: SessionFacts,
    camera: CameraFacts,
    device: DeviceInfo,
    *,
    captured_at: datetime,
    clock_synced: bool,
) -> dict[str, Any]:
    """The metadata object, but ``image.size`` and ``image.sha256``.

    The sealer fills those two from the very bytes it seals (it is the authority on
    them, and hashing the plaintext once is enough).
    """
    patient = session.patient
    operator = session.operator
    return {
        "patient": {"id": patient.id, "issuer": patient.issuer, "encounter": patient.encounter},
        "operator": None if operator is None else {"id": operator.id, "issuer": operator.issuer},
        "purpose": session.purpose,
        "laterality": session.laterality,
        "view": session.view,
        "consent": session.consent,
        "body_site": None
        if session.body_site is None
        else {"code": session.body_site[0], "system": SNOMED, "display": session.body_site[1]},
        "captured_at": rfc3339_ms(captured_at),
        "tz_offset": tz_offset(captured_at),
        "clock_synced": clock_synced,
        "session": {"id": session.session_id, "index": session.index},
        "image": {
            "media_type": "image/jpeg",
            "width": camera.width,
            "height": camera.height,
        },
        "camera": {
            "model": camera.model,
            "exposure_us": camera.exposure_us,
            "analogue_gain": camera.analogue_gain,
            "lens_position": camera.lens_position,
        },
        "device": {"id": device.id, "site": device.site, "location": device.location, "firmware": device.firmware},
    }
