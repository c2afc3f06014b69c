"""The DICOM objects the relay files: a VL Photographic Image per capture and an IOCM
rejection note per void.

The station's JPEG goes into the object as is (JPEG Baseline transfer syntax), never
re-encoded: a clinical photo must reach the PACS exactly as taken, and the Image Pixel
attributes are read from the JPEG's own frame header so they cannot disagree with it.
Every UID is derived (``2.25.<int>``) from what identifies the thing it names, so a
re-delivered capture is the same instance, one session is one study, and a repeated
void is the same rejection note.

Patient Name and Birth Date come only from a configured demographics source: an
invented name on a clinical image is worse than none.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from io import BytesIO
from typing import Any, Protocol

from clinicam.protocol.reasons import SinkError
from clinicam.relay.sinks.jpeg_frame import read_jpeg_frame
from pydicom import config as dicom_config
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.sequence import Sequence
from pydicom.uid import UID, ExplicitVRLittleEndian, JPEGBaseline8Bit

VL_PHOTOGRAPHIC_IMAGE = "1.2.840.10008.5.1.4.1.1.77.1.4"
KEY_OBJECT_SELECTION = "1.2.840.10008.5.1.4.1.1.88.59"
IMPLEMENTATION_VERSION = "CLINICAM_0_1"
MANUFACTURER = "clinicam"
RECONCILE_DESCRIPTION = "RECONCILE: patient unknown to the EMR"

# Series number per purpose card, so a viewer lists a session's series in a stable order.
_SERIES_NUMBER = {"WOUND": 1, "PRE-OP": 2, "POST-OP": 3, "DERM": 4, "OTHER": 5}
_LATERALITY = {"LEFT": "L", "RIGHT": "R", "BILATERAL": "B"}


def derived_uid(*parts: str) -> str:
    """A ``2.25`` UID from a UUID (version 8, RFC 9562) hashed from ``parts``.

    Hashing instead of drawing makes the UID a pure function of what it names: the
    same capture re-delivered after a relay restart is the same SOP instance.
    """
    digest = bytearray(hashlib.sha256("\x1f".join(("clinicam", *parts)).encode()).digest()[:16])
    digest[6] = (digest[6] & 0x0F) | 0x80  # version 8
    digest[8] = (digest[8] & 0x3F) | 0x80  # RFC 4122 variant
    return "2.25." + str(int.from_bytes(digest, "big"))


IMPLEMENTATION_CLASS_UID = derived_uid("implementation", IMPLEMENTATION_VERSION)


def instance_uid(device: str, capture_id: str) -> str:
    """SOP Instance UID of a capture: from the device and capture id together."""
    return derived_uid("instance", device, capture_id)


def rejection_note_uid(device: str, capture_id: str) -> str:
    """SOP Instance UID of the rejection note voiding a capture (idempotent voids)."""
    return derived_uid("rejection", device, capture_id)


@dataclass(frozen=True)
class Demographics:
    """Patient Name (DICOM PN, ``Family^Given``) and birth date, from a record system."""

    name: str = ""
    birth_date: str = ""  # YYYYMMDD


def builtin_body_part_terms() -> dict[str, str]:
    """CID 4031 terms of the station's built-in body sites (``clinicam.protocol.bodysites``)."""
    from clinicam.protocol.bodysites import BODY_SITES

    return {code: site.dicom for code, site in BODY_SITES.items() if site.dicom}


class DemographicsLike(Protocol):
    """What a demographics source returns (``Demographics`` or the FHIR sink's own)."""

    @property
    def name(self) -> str: ...
    @property
    def birth_date(self) -> str: ...


# (patient id, issuer) -> demographics or None; e.g. ``FhirSink.demographics``.
DemographicsSource = Callable[[str, str], "DemographicsLike | None"]

# SNOMED CT body-structure code -> CID 4031 Body Part Examined defined term, when any.
BodyPartTerms = Mapping[str, str]


@contextlib.contextmanager
def _strict_writing() -> Iterator[None]:
    """Raise on any invalid value while we build an object.

    pydicom checks a value when it is assigned, under the *reading* validation mode,
    and again when writing: both are set to raise, then restored.
    """
    settings = dicom_config.settings
    previous = settings.reading_validation_mode, settings.writing_validation_mode
    settings.reading_validation_mode = settings.writing_validation_mode = dicom_config.RAISE
    try:
        yield
    finally:
        settings.reading_validation_mode, settings.writing_validation_mode = previous


def local_datetime(captured_at: str, tz_offset: str | None) -> tuple[datetime, str]:
    """The capture time in the station's local time, and DICOM's ``±HHMM`` offset."""
    utc = datetime.strptime(captured_at, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
    offset = tz_offset or "+00:00"
    sign = -1 if offset[0] == "-" else 1
    hours, minutes = int(offset[1:3]), int(offset[4:6])
    tz = timezone(sign * timedelta(hours=hours, minutes=minutes))
    return utc.astimezone(tz), offset[0] + offset[1:3] + offset[4:6]


def _ds(**attrs: Any) -> Dataset:
    item = Dataset()
    for keyword, value in attrs.items():
        setattr(item, keyword, value)
    return item


def _code_item(value: str, scheme: str, meaning: str) -> Dataset:
    # Code Value is SH (16 characters); longer codes (a GS1 GSRN badge has 18 digits) go
    # in Long Code Value (UC), as PS3.3 §8.8 prescribes, never truncated.
    key = "CodeValue" if len(value) <= 16 else "LongCodeValue"
    return _ds(**{key: value}, CodingSchemeDesignator=scheme, CodeMeaning=meaning[:64])


def _file_meta(sop_class: str, sop_instance: str, transfer_syntax: str) -> FileMetaDataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(sop_class)
    meta.MediaStorageSOPInstanceUID = UID(sop_instance)
    meta.TransferSyntaxUID = UID(transfer_syntax)
    meta.ImplementationClassUID = UID(IMPLEMENTATION_CLASS_UID)
    meta.ImplementationVersionName = IMPLEMENTATION_VERSION
    return meta


def _one(value: str) -> str:
    """A single value: a backslash would silently split it into several (DICOM VM)."""
    if "\\" in value:
        raise ValueError("a backslash in a single-valued DICOM attribute")
    return value


def _patient_study(ds: Dataset, md: Mapping[str, Any], demo: DemographicsLike | None) -> None:
    patient = md["patient"]
    ds.PatientName = demo.name if demo else ""
    ds.PatientID = _one(patient["id"])
    ds.IssuerOfPatientID = _one(patient["issuer"])
    ds.PatientBirthDate = demo.birth_date if demo else ""
    ds.PatientSex = ""
    if patient.get("encounter"):
        ds.AdmissionID = _one(patient["encounter"])
    ds.ReferringPhysicianName = ""
    ds.StudyID = ""
    ds.AccessionNumber = ""


def station_name(device_id: str) -> str:
    """Station Name (0008,1010) is SH, at most 16 characters; device ids run to 64.

    An id that fits is written as it is; a longer one keeps its first 11 characters and
    a 4-hex digest of the whole id, so two long ids with the same start stay apart. The
    full id is always in Device Serial Number (0018,1000, LO: 64 characters).
    """
    if len(device_id) <= 16:
        return device_id
    return f"{device_id[:11]}~{hashlib.sha256(device_id.encode()).hexdigest()[:4]}"


def _equipment(ds: Dataset, md: Mapping[str, Any]) -> None:
    device, camera = md["device"], md.get("camera") or {}
    ds.Manufacturer = MANUFACTURER
    ds.StationName = station_name(device["id"])
    ds.DeviceSerialNumber = device["id"]
    if device.get("site"):
        ds.InstitutionName = str(device["site"])[:64]  # [device] site
    if camera.get("model"):
        ds.ManufacturerModelName = str(camera["model"])[:64]
    if device.get("firmware"):
        ds.SoftwareVersions = str(device["firmware"])[:64]
    if device.get("location"):
        ds.InstitutionalDepartmentName = str(device["location"])[:64]


# The issuer of an operator's badge id is the coding scheme of its Person Identification
# Code (PS3.3 Table 10-1 and §8.8): a private designator, described in the Coding Scheme
# Identification Sequence (0008,0110) — by UID when the issuer is an OID.
GS1_SCHEME = "99GS1GSRN"
SITE_SCHEME = "99CLINICAMOP"


def id_scheme(issuer: str) -> tuple[str, Dataset]:
    """The coding scheme designator for ids of ``issuer``, and the item that declares it."""
    if issuer == "GS1":
        return GS1_SCHEME, _ds(CodingSchemeDesignator=GS1_SCHEME, CodingSchemeResponsibleOrganization="GS1",
                               CodingSchemeName="GS1 Global Service Relation Number (GSRN), AI 8017")
    item = _ds(CodingSchemeDesignator=SITE_SCHEME)
    if issuer.startswith("urn:oid:"):
        item.CodingSchemeUID = issuer[len("urn:oid:"):]
    if issuer:
        item.CodingSchemeName = f"operator ids issued by {issuer}"[:64]
        item.CodingSchemeExternalID = issuer[:1024]
    else:
        item.CodingSchemeName = "operator ids of the site's badge rules"
    return SITE_SCHEME, item


def _operator(ds: Dataset, md: Mapping[str, Any]) -> None:
    operator = md.get("operator")
    if not operator:
        return
    designator, scheme = id_scheme(str(operator.get("issuer") or ""))
    person = Dataset()
    person.PersonIdentificationCodeSequence = Sequence(
        [_code_item(_one(operator["id"]), designator, "Operator identifier")]
    )
    # The person's institution (Type 1C: this or an Institution Code Sequence): the site.
    person.InstitutionName = str(md["device"].get("site") or "unknown")[:64]
    ds.OperatorIdentificationSequence = Sequence([person])
    ds.CodingSchemeIdentificationSequence = Sequence([scheme])


def _anatomy(ds: Dataset, md: Mapping[str, Any], terms: BodyPartTerms) -> None:
    site = md.get("body_site")
    if site:
        ds.AnatomicRegionSequence = Sequence([_code_item(site["code"], "SCT", site["display"])])
        if site["code"] in terms:
            ds.BodyPartExamined = terms[site["code"]]
    laterality = _LATERALITY.get(md.get("laterality") or "")
    if laterality:
        ds.ImageLaterality = laterality


def _timing(ds: Dataset, md: Mapping[str, Any]) -> None:
    local, offset = local_datetime(md["captured_at"], md.get("tz_offset"))
    ds.TimezoneOffsetFromUTC = offset
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = local.strftime("%Y%m%d")
    ds.StudyTime = ds.SeriesTime = ds.ContentTime = local.strftime("%H%M%S.%f")
    ds.AcquisitionDateTime = local.strftime("%Y%m%d%H%M%S.%f")


def _pixels(ds: Dataset, jpeg: bytes) -> None:
    try:
        frame = read_jpeg_frame(jpeg)
    except (ValueError, IndexError) as exc:
        raise SinkError("sink-refused", "image is not a baseline JPEG: check the camera") from exc
    ds.SamplesPerPixel = frame.components
    ds.PhotometricInterpretation = frame.photometric
    if frame.components > 1:
        ds.PlanarConfiguration = 0
    ds.Rows, ds.Columns = frame.height, frame.width
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    ds.LossyImageCompression = "01"
    ds.LossyImageCompressionMethod = "ISO_10918_1"
    ds.PixelData = encapsulate([jpeg])
    ds["PixelData"].VR = "OB"
    # Encapsulated pixel data has undefined length; say so here, because pynetdicom
    # encodes the dataset without the file meta that tells pydicom's file writer.
    ds["PixelData"].is_undefined_length = True


def build_photo(
    capture: Any,
    *,
    demographics: DemographicsSource | None = None,
    body_part_terms: BodyPartTerms | None = None,
    reconcile: bool = False,
) -> Dataset:
    """The VL Photographic Image of an opened capture (DESIGN §6 metadata).

    ``reconcile`` flags the study for a PACS quarantine: the EMR did not know the
    patient, so a person must confirm the chart before the photo is relied on.
    """
    try:
        return _photo(capture, demographics, body_part_terms or {}, reconcile)
    except ValueError:
        # pydicom's message may quote the offending value (a patient id): not chained
        raise SinkError("sink-refused", "capture metadata breaks a DICOM value rule "
                        "(length, characters or date): check the site's code rules") from None


def _photo(capture: Any, demographics: DemographicsSource | None, terms: BodyPartTerms,
           reconcile: bool) -> Dataset:
    md, device, capture_id = capture.metadata, capture.device, capture.capture_id
    session = md["session"]
    purpose = md.get("purpose") or "OTHER"
    sop_uid = instance_uid(device, capture_id)
    with _strict_writing():
        ds = Dataset()
        ds.file_meta = _file_meta(VL_PHOTOGRAPHIC_IMAGE, sop_uid, JPEGBaseline8Bit)
        ds.SpecificCharacterSet = "ISO_IR 192"
        ds.SOPClassUID, ds.SOPInstanceUID = VL_PHOTOGRAPHIC_IMAGE, sop_uid
        ds.ImageType = ["ORIGINAL", "PRIMARY"]
        ds.Modality = "XC"
        demo = demographics(md["patient"]["id"], md["patient"]["issuer"]) if demographics else None
        _patient_study(ds, md, demo)
        ds.StudyInstanceUID = derived_uid("study", device, session["id"])
        ds.SeriesInstanceUID = derived_uid("series", device, session["id"], purpose)
        ds.SeriesNumber = _SERIES_NUMBER.get(purpose, 5)
        ds.SeriesDescription = purpose
        ds.InstanceNumber = int(session["index"])
        ds.PatientOrientation = ""
        ds.BurnedInAnnotation = "NO"
        ds.RecognizableVisualFeatures = "YES"
        ds.AcquisitionContextSequence = Sequence()
        if reconcile:
            ds.StudyDescription = RECONCILE_DESCRIPTION
        _timing(ds, md)
        _equipment(ds, md)
        _operator(ds, md)
        _anatomy(ds, md, terms)
        _pixels(ds, capture.image)
    return ds


@dataclass(frozen=True)
class StoredInstance:
    """Where a stored photo sits in the PACS: what a rejection note must reference."""

    study_uid: str
    series_uid: str
    sop_class_uid: str
    sop_instance_uid: str
    patient: Mapping[str, str]  # PatientID, IssuerOfPatientID, PatientName, …


PATIENT_KEYS = ("PatientName", "PatientID", "IssuerOfPatientID", "PatientBirthDate", "PatientSex")


def build_rejection_note(
    target: StoredInstance, device: str, capture_id: str, *, now: datetime
) -> Dataset:
    """IOCM Key Object Selection titled (113037, DCM) "Rejected for Patient Safety Reasons".

    It joins the photo's patient and study so a PACS that implements IOCM hides the
    photo, and one that does not still shows the note beside it.
    """
    sop_uid = rejection_note_uid(device, capture_id)
    with _strict_writing():
        ds = Dataset()
        ds.file_meta = _file_meta(KEY_OBJECT_SELECTION, sop_uid, ExplicitVRLittleEndian)
        ds.SpecificCharacterSet = "ISO_IR 192"
        ds.SOPClassUID, ds.SOPInstanceUID = KEY_OBJECT_SELECTION, sop_uid
        for key in PATIENT_KEYS:
            setattr(ds, key, target.patient.get(key, ""))
        ds.StudyInstanceUID = target.study_uid
        ds.StudyDate = ds.StudyTime = ds.AccessionNumber = ds.StudyID = ""
        ds.ReferringPhysicianName = ""
        ds.Modality = "KO"
        ds.SeriesInstanceUID = derived_uid("rejection-series", device, target.study_uid)
        ds.SeriesNumber = 99
        ds.ReferencedPerformedProcedureStepSequence = Sequence()
        ds.Manufacturer = MANUFACTURER
        ds.InstanceNumber = 1
        ds.ContentDate, ds.ContentTime = now.strftime("%Y%m%d"), now.strftime("%H%M%S")
        ds.TimezoneOffsetFromUTC = now.strftime("%z") or "+0000"
        _rejection_content(ds, target)
    return ds


def _rejection_content(ds: Dataset, target: StoredInstance) -> None:
    """TID 2010 Key Object Selection: the title, and the photo as evidence and content."""
    ref = _ds(ReferencedSOPClassUID=target.sop_class_uid,
              ReferencedSOPInstanceUID=target.sop_instance_uid)
    ds.ValueType = "CONTAINER"
    ds.ConceptNameCodeSequence = Sequence(
        [_code_item("113037", "DCM", "Rejected for Patient Safety Reasons")]
    )
    ds.ContentTemplateSequence = Sequence([_ds(MappingResource="DCMR", TemplateIdentifier="2010")])
    ds.ContinuityOfContent = "SEPARATE"
    series = _ds(SeriesInstanceUID=target.series_uid, ReferencedSOPSequence=Sequence([ref]))
    ds.CurrentRequestedProcedureEvidenceSequence = Sequence(
        [_ds(StudyInstanceUID=target.study_uid, ReferencedSeriesSequence=Sequence([series]))]
    )
    ds.ContentSequence = Sequence([_ds(RelationshipType="CONTAINS", ValueType="IMAGE",
                                       ReferencedSOPSequence=Sequence([ref]))])


def encode(ds: Dataset) -> bytes:
    """Part 10 file bytes of ``ds`` (preamble, meta header, dataset)."""
    out = BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()
