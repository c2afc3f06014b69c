"""DicomWebSink against a real Orthanc (STOW-RS, QIDO-RS, basic auth)."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest
from clinicam.protocol.reasons import SinkError
from clinicam.relay.sinks import dicom
from clinicam.relay.sinks.dicomweb import DicomWebSink
from clinicam.relay.sinks.httpclient import Auth
from clinicam.tools.orthanc import Orthanc, orthanc_available
from pydicom.encaps import generate_frames
from servers import capture, check_pacs_down_then_up

pytestmark = pytest.mark.skipif(
    not orthanc_available(), reason="Orthanc not installed (apt-get install orthanc orthanc-dicomweb)"
)


@pytest.fixture(scope="module")
def pacs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Orthanc]:
    work = tmp_path_factory.mktemp("orthanc-stow")
    server = Orthanc(work / "pacs")
    server.start()
    yield server
    server.stop()


def sink_for(pacs: Orthanc, tmp_path: Path, password: str | None = None) -> DicomWebSink:
    secret = tmp_path / "pacs.password"
    secret.write_text((password or pacs.password) + "\n")
    auth = Auth("basic", username=pacs.username, password_file=secret)
    return DicomWebSink("pacs", pacs.dicomweb_url, auth=auth)


def lookup(pacs: Orthanc, sop_uid: str) -> list[dict]:
    return pacs.find_instances(sop_uid)


def test_ward_round_by_stow_rs(pacs: Orthanc, tmp_path: Path) -> None:
    sink = sink_for(pacs, tmp_path)
    captures = [
        capture(i, patient=f"SYN{i % 2}", session=f"{i % 2:02x}" * 16, purpose="WOUND")
        for i in range(1, 5)
    ]
    studies = set()
    for cap in captures:
        ref = sink.store(cap)
        assert ref == dicom.instance_uid(cap.device, cap.capture_id)
        [inst] = lookup(pacs, ref)
        tags = pacs.get(f"/instances/{inst['ID']}/simplified-tags")
        assert tags["SOPClassUID"] == dicom.VL_PHOTOGRAPHIC_IMAGE
        assert tags["Modality"] == "XC"
        assert tags["PatientID"] == cap.metadata["patient"]["id"]
        assert tags["IssuerOfPatientID"] == "urn:oid:2.999.1"
        assert tags["AdmissionID"] == "ENC-SYN-1"
        session = cap.metadata["session"]["id"]
        assert tags["StudyInstanceUID"] == dicom.derived_uid("study", cap.device, session)
        studies.add(inst["ParentStudy"] if "ParentStudy" in inst else tags["StudyInstanceUID"])
        assert tags["ImageLaterality"] == "R"
        assert tags["AnatomicRegionSequence"][0]["CodeValue"] == "7769000"
        assert tags["TimezoneOffsetFromUTC"] == "+0100"
        index = cap.metadata["session"]["index"]
        assert tags["AcquisitionDateTime"].startswith(f"2026030210{index:02d}05.123")
        assert tags["StationName"] == tags["DeviceSerialNumber"] == "ward5-cart1"
        assert tags["RecognizableVisualFeatures"] == "YES"
        assert tags["OperatorIdentificationSequence"][0]["PersonIdentificationCodeSequence"][0][
            "CodeValue"] == "OP-SYN-7"
        assert "PatientBirthDate" not in tags or tags["PatientBirthDate"] == ""
        ds = pydicom.dcmread(io.BytesIO(pacs.get_bytes(f"/instances/{inst['ID']}/file")))
        assert ds.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.4.50"
        frame = next(generate_frames(ds.PixelData, number_of_frames=1))
        assert frame[: len(cap.image)] == cap.image and len(frame) - len(cap.image) <= 1
    assert len(studies) == 2  # one study per patient session


def test_redelivery_leaves_one_instance(pacs: Orthanc, tmp_path: Path) -> None:
    sink = sink_for(pacs, tmp_path)
    cap = capture(21)
    first = sink.store(cap)
    assert sink.store(cap) == first
    assert len(lookup(pacs, first)) == 1


def test_wrong_password_is_sink_auth(pacs: Orthanc, tmp_path: Path) -> None:
    sink = sink_for(pacs, tmp_path, password="not-the-password")
    cap = capture(31)
    with pytest.raises(SinkError) as err:
        sink.store(cap)
    assert err.value.reason == "sink-auth"
    assert lookup(pacs, dicom.instance_uid(cap.device, cap.capture_id)) == []
    assert sink_for(pacs, tmp_path).store(cap)  # positive control: the right password works


def test_void_sends_a_rejection_note(pacs: Orthanc, tmp_path: Path) -> None:
    sink = sink_for(pacs, tmp_path)
    cap = capture(51)
    ref = sink.store(cap)
    sink.void(cap.device, cap.capture_id)
    sink.void(cap.device, cap.capture_id)  # idempotent: the same note
    [note] = lookup(pacs, dicom.rejection_note_uid(cap.device, cap.capture_id))
    ds = pydicom.dcmread(io.BytesIO(pacs.get_bytes(f"/instances/{note['ID']}/file")))
    assert ds.ConceptNameCodeSequence[0].CodeValue == "113037"
    assert ds.ContentSequence[0].ReferencedSOPSequence[0].ReferencedSOPInstanceUID == ref
    assert ds.PatientID == cap.metadata["patient"]["id"]
    photo = pacs.get(f"/instances/{lookup(pacs, ref)[0]['ID']}/simplified-tags")
    assert ds.StudyInstanceUID == photo["StudyInstanceUID"]


def test_pacs_down_then_up_stores_once(tmp_path: Path) -> None:
    server = Orthanc(tmp_path / "pacs")
    server.start()
    check_pacs_down_then_up(server, sink_for(server, tmp_path), capture(61))
