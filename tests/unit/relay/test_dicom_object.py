"""The DICOM objects: a VL Photographic Image that carries the station's JPEG unchanged,
and the IOCM rejection note of a void."""

from __future__ import annotations

import io
import shutil
import subprocess
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pydicom
import pytest
from clinicam.protocol.reasons import SinkError
from clinicam.relay.sinks import dicom
from PIL import Image
from pydicom.encaps import generate_frames


def jpeg_bytes(width: int = 64, height: int = 48, mode: str = "RGB", **save: Any) -> bytes:
    out = io.BytesIO()
    Image.new(mode, (width, height), "red" if mode == "RGB" else 128).save(out, "JPEG", **save)
    return out.getvalue()


def metadata(**over: Any) -> dict[str, Any]:
    md: dict[str, Any] = {
        "patient": {"id": "SYN0001", "issuer": "urn:oid:1.2.3.4", "encounter": "ENC77"},
        "operator": {"id": "OP-9", "issuer": "urn:oid:1.2.3.5"},
        "purpose": "WOUND",
        "laterality": "LEFT",
        "view": "CLOSE-UP",
        "consent": "VERBAL",
        "body_site": {"code": "40983000", "system": "http://snomed.info/sct",
                      "display": "Upper arm structure"},
        "captured_at": "2026-03-01T23:30:00.250Z",
        "tz_offset": "+01:00",
        "clock_synced": True,
        "session": {"id": "ab" * 16, "index": 2},
        "image": {"media_type": "image/jpeg", "width": 64, "height": 48, "size": 0, "sha256": ""},
        "camera": {"model": "imx708", "exposure_us": None, "analogue_gain": None,
                   "lens_position": None},
        "device": {"id": "ward5-cart1", "site": "north", "location": "Ward 5", "firmware": "0.1"},
    }
    md.update(over)
    return md


@dataclass
class Capture:
    device: str = "ward5-cart1"
    capture_id: str = "0123456789abcdef0123456789abcdef"
    manifest: dict[str, Any] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=metadata)
    image: bytes = field(default_factory=jpeg_bytes)


def test_uids_are_2_25_and_deterministic() -> None:
    a = dicom.instance_uid("dev", "00" * 16)
    assert a.startswith("2.25.") and len(a) <= 64
    assert a == dicom.instance_uid("dev", "00" * 16)
    assert a != dicom.instance_uid("dev2", "00" * 16)
    assert int(a[5:]) >> 76 & 0xF == 8  # UUID version 8


def test_photo_carries_the_jpeg_byte_identical_with_its_own_geometry() -> None:
    cap = Capture(image=jpeg_bytes(65, 33))
    ds = pydicom.dcmread(io.BytesIO(dicom.encode(dicom.build_photo(cap))))
    frame = next(generate_frames(ds.PixelData, number_of_frames=1))
    assert frame.rstrip(b"\0") == cap.image.rstrip(b"\0") and len(frame) - len(cap.image) <= 1
    assert (ds.Rows, ds.Columns, ds.SamplesPerPixel) == (33, 65, 3)
    assert ds.PhotometricInterpretation == "YBR_FULL_422"
    assert ds.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.4.50"


@pytest.mark.parametrize(
    ("mode", "save", "photometric", "samples"),
    [("L", {}, "MONOCHROME2", 1), ("RGB", {"subsampling": 0}, "YBR_FULL", 3)],
)
def test_photometric_follows_the_jpeg(mode: str, save: dict, photometric: str, samples: int) -> None:
    ds = dicom.build_photo(Capture(image=jpeg_bytes(mode=mode, **save)))
    assert (ds.PhotometricInterpretation, ds.SamplesPerPixel) == (photometric, samples)


def test_progressive_or_non_jpeg_is_refused_not_transcoded() -> None:
    with pytest.raises(SinkError) as err:
        dicom.build_photo(Capture(image=jpeg_bytes(progressive=True)))
    assert err.value.reason == "sink-refused"
    with pytest.raises(SinkError):
        dicom.build_photo(Capture(image=b"\x89PNG not a jpeg"))


def test_clinical_tags() -> None:
    cap = Capture()
    ds = dicom.build_photo(cap, body_part_terms={"40983000": "ARM"})
    assert ds.SOPClassUID == dicom.VL_PHOTOGRAPHIC_IMAGE and ds.Modality == "XC"
    assert (ds.PatientID, ds.IssuerOfPatientID, ds.AdmissionID) == (
        "SYN0001", "urn:oid:1.2.3.4", "ENC77")
    assert ds.PatientName == "" and ds.PatientBirthDate == ""
    assert ds.SOPInstanceUID == dicom.instance_uid(cap.device, cap.capture_id)
    assert ds.StudyInstanceUID == dicom.derived_uid("study", cap.device, "ab" * 16)
    region = ds.AnatomicRegionSequence[0]
    assert (region.CodeValue, region.CodingSchemeDesignator) == ("40983000", "SCT")
    assert ds.BodyPartExamined == "ARM" and ds.ImageLaterality == "L"
    # 23:30 UTC on 1 March is 00:30 on 2 March at +01:00
    assert (ds.ContentDate, ds.ContentTime[:6]) == ("20260302", "003000")
    assert ds.AcquisitionDateTime.startswith("20260302003000.25")
    assert ds.TimezoneOffsetFromUTC == "+0100"
    assert ds.StationName == "ward5-cart1" and ds.DeviceSerialNumber == "ward5-cart1"
    op = ds.OperatorIdentificationSequence[0].PersonIdentificationCodeSequence[0]
    assert op.CodeValue == "OP-9"
    assert ds.RecognizableVisualFeatures == "YES"


def test_gs1_badge_operator_id_fits_as_long_code_value() -> None:
    """A GSRN badge is 18 digits: too long for Code Value (SH 16), kept whole in Long Code Value."""
    gsrn = "799999900000555018"
    ds = dicom.build_photo(Capture(metadata=metadata(operator={"id": gsrn, "issuer": "GS1"})))
    ds = pydicom.dcmread(io.BytesIO(dicom.encode(ds)))  # survives writing and reading back
    op = ds.OperatorIdentificationSequence[0].PersonIdentificationCodeSequence[0]
    assert op.LongCodeValue == gsrn and "CodeValue" not in op


def test_body_part_left_out_without_a_defined_term_and_nulls_tolerated() -> None:
    md = metadata(operator=None, laterality=None, body_site=None, purpose=None,
                  tz_offset="-05:30")
    md["patient"]["encounter"] = None
    ds = dicom.build_photo(Capture(metadata=md))
    for keyword in ("BodyPartExamined", "AnatomicRegionSequence", "ImageLaterality",
                    "OperatorIdentificationSequence", "AdmissionID"):
        assert keyword not in ds
    assert ds.TimezoneOffsetFromUTC == "-0530" and ds.ContentTime.startswith("180000")
    ds = dicom.build_photo(Capture())
    assert "AnatomicRegionSequence" in ds and "BodyPartExamined" not in ds


def test_quarantine_study_is_flagged_for_reconciliation() -> None:
    assert "StudyDescription" not in dicom.build_photo(Capture())
    ds = dicom.build_photo(Capture(), reconcile=True)
    assert ds.StudyDescription == dicom.RECONCILE_DESCRIPTION


def test_demographics_only_from_the_source() -> None:
    asked = []

    def source(pid: str, issuer: str) -> dicom.Demographics:
        asked.append((pid, issuer))
        return dicom.Demographics("Doe^Jane", "19800101")

    ds = dicom.build_photo(Capture(), demographics=source)
    assert asked == [("SYN0001", "urn:oid:1.2.3.4")]
    assert (str(ds.PatientName), ds.PatientBirthDate) == ("Doe^Jane", "19800101")


@pytest.mark.parametrize("bad_id", ["SYN-CANARY-" + "x" * 60, "SYN-CANARY\\backslash"])
def test_writing_validation_refuses_bad_values_without_quoting_them(bad_id: str) -> None:
    md = metadata()
    md["patient"]["id"] = bad_id  # LO: at most 64 characters, no backslash
    with pytest.raises(SinkError) as err:
        dicom.build_photo(Capture(metadata=md))
    assert err.value.reason == "sink-refused"
    assert err.value.__cause__ is None and err.value.__suppress_context__
    assert "CANARY" not in str(err.value)


def _stored(cap: Capture) -> dicom.StoredInstance:
    ds = dicom.build_photo(cap)
    return dicom.StoredInstance(ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPClassUID,
                                ds.SOPInstanceUID, {"PatientID": ds.PatientID})


def test_rejection_note_references_the_instance() -> None:
    cap = Capture()
    target = _stored(cap)
    now = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
    ds = dicom.build_rejection_note(target, cap.device, cap.capture_id, now=now)
    assert ds.SOPClassUID == dicom.KEY_OBJECT_SELECTION and ds.Modality == "KO"
    assert ds.ConceptNameCodeSequence[0].CodeValue == "113037"
    evidence = ds.CurrentRequestedProcedureEvidenceSequence[0]
    ref = evidence.ReferencedSeriesSequence[0].ReferencedSOPSequence[0]
    assert ref.ReferencedSOPInstanceUID == target.sop_instance_uid
    assert ds.ContentSequence[0].ReferencedSOPSequence[0].ReferencedSOPInstanceUID == (
        target.sop_instance_uid)
    assert ds.StudyInstanceUID == target.study_uid and ds.PatientID == "SYN0001"
    again = dicom.build_rejection_note(target, cap.device, cap.capture_id, now=now)
    assert again.SOPInstanceUID == ds.SOPInstanceUID


DCIODVFY = shutil.which("dciodvfy")


@pytest.mark.skipif(DCIODVFY is None, reason="dciodvfy not installed (Debian dicom3tools)")
@pytest.mark.parametrize("kind", ["photo", "rejection"])
def test_dciodvfy_finds_no_error(tmp_path: Path, kind: str) -> None:
    cap = Capture()
    if kind == "photo":
        ds = dicom.build_photo(cap, body_part_terms={"40983000": "ARM"})
    else:
        ds = dicom.build_rejection_note(_stored(cap), cap.device, cap.capture_id,
                                        now=datetime(2026, 3, 2, tzinfo=UTC))
    path = tmp_path / "obj.dcm"
    path.write_bytes(dicom.encode(ds))
    out = subprocess.run([DCIODVFY, "-new", str(path)], capture_output=True, text=True)
    report = out.stdout + out.stderr
    iod = "VLPhotographicImage" if kind == "photo" else "KeyObjectSelectionDocument"
    assert iod in report  # positive control: the tool recognised and checked the IOD
    errors = [line for line in report.splitlines() if line.startswith("Error")]
    assert errors == [], report


LONG_ID = "ward-3-east-wing-operating-theatre-2-boom-mounted-station-0042"


@pytest.mark.parametrize(
    ("device_id", "station"),
    [("ward5-cart1", "ward5-cart1"), ("exactly-16-chars", "exactly-16-chars"), (LONG_ID, None)],
)
def test_station_name_fits_sh_and_the_full_id_is_the_device_serial(device_id: str, station: str | None) -> None:
    md = metadata(device={"id": device_id, "site": "North Hospital", "location": "Ward 5", "firmware": "0.1"})
    ds = pydicom.dcmread(io.BytesIO(dicom.encode(dicom.build_photo(Capture(device=device_id, metadata=md)))))
    assert len(ds.StationName) <= 16 and ds.DeviceSerialNumber == device_id
    if station is not None:
        assert ds.StationName == station
    else:  # a long id: its start and a digest, distinct from another id with the same start
        assert ds.StationName.startswith(device_id[:11]) and len(ds.StationName) == 16
        assert dicom.station_name(device_id) != dicom.station_name(device_id[:-1] + "3")


def test_site_is_institution_name() -> None:
    ds = dicom.build_photo(Capture())
    assert ds.InstitutionName == "north"  # [device] site of the station
    assert ds.InstitutionalDepartmentName == "Ward 5"
    assert ds.OperatorIdentificationSequence[0].InstitutionName == "north"  # the operator's institution
    md = metadata(device={"id": "ward5-cart1", "site": "", "location": "", "firmware": "0.1"})
    assert "InstitutionName" not in dicom.build_photo(Capture(metadata=md))


def test_gs1_badge_issuer_is_the_code_scheme_not_the_institution() -> None:
    md = metadata(operator={"id": "796998877665544330", "issuer": "GS1"})
    ds = dicom.build_photo(Capture(metadata=md))
    person = ds.OperatorIdentificationSequence[0]
    code = person.PersonIdentificationCodeSequence[0]
    assert code.LongCodeValue == "796998877665544330" and code.CodingSchemeDesignator == dicom.GS1_SCHEME
    assert person.InstitutionName == "north"  # not "GS1"
    (scheme,) = ds.CodingSchemeIdentificationSequence
    assert scheme.CodingSchemeDesignator == dicom.GS1_SCHEME and scheme.CodingSchemeResponsibleOrganization == "GS1"


def test_an_oid_issuer_is_the_code_scheme_uid() -> None:
    ds = dicom.build_photo(Capture())  # operator issuer urn:oid:1.2.3.5
    code = ds.OperatorIdentificationSequence[0].PersonIdentificationCodeSequence[0]
    (scheme,) = ds.CodingSchemeIdentificationSequence
    assert code.CodingSchemeDesignator == scheme.CodingSchemeDesignator == dicom.SITE_SCHEME
    assert scheme.CodingSchemeUID == "1.2.3.5"


@pytest.mark.skipif(DCIODVFY is None, reason="dciodvfy not installed (Debian dicom3tools)")
@pytest.mark.parametrize(
    ("device_id", "site", "operator"),
    [
        (LONG_ID, "North Hospital", {"id": "796998877665544330", "issuer": "GS1"}),
        ("ward5-cart1", "", {"id": "OP-9", "issuer": "urn:oid:1.2.3.5"}),
        ("ward5-cart1", "St Elsewhere", {"id": "BADGE7", "issuer": "site-badges"}),
        ("ward5-cart1", "St Elsewhere", None),
    ],
)
def test_dciodvfy_finds_no_error_in_the_equipment_and_operator_variants(
    tmp_path: Path, device_id: str, site: str, operator: dict[str, str] | None
) -> None:
    md = metadata(device={"id": device_id, "site": site, "location": "OR 4", "firmware": "0.1"}, operator=operator)
    path = tmp_path / "obj.dcm"
    path.write_bytes(dicom.encode(dicom.build_photo(Capture(device=device_id, metadata=md))))
    out = subprocess.run([DCIODVFY, "-new", str(path)], capture_output=True, text=True)
    report = out.stdout + out.stderr
    assert "VLPhotographicImage" in report  # positive control: the IOD was checked
    assert [line for line in report.splitlines() if line.startswith("Error")] == [], report
