"""DimseSink against a real Orthanc: C-STORE, C-FIND and the rejection note."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest
from clinicam.common.errors import ConfigError
from clinicam.protocol.reasons import SinkError
from clinicam.relay.sinks import dicom
from clinicam.relay.sinks.dimse import DimseSink
from clinicam.tools.orthanc import Orthanc, orthanc_available
from pydicom.encaps import generate_frames
from servers import capture, check_pacs_down_then_up, make_tls

pytestmark = pytest.mark.skipif(
    not orthanc_available(), reason="Orthanc not installed (apt-get install orthanc orthanc-dicomweb)"
)


@pytest.fixture(scope="module")
def pacs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Orthanc]:
    server = Orthanc(tmp_path_factory.mktemp("orthanc-dimse") / "pacs", aet="TESTPACS")
    server.start()
    yield server
    server.stop()


def sink_for(pacs: Orthanc, called: str = "TESTPACS") -> DimseSink:
    return DimseSink("pacs-dimse", "127.0.0.1", pacs.dicom_port, called_aet=called,
                     timeout_s=10)


def stored_file(pacs: Orthanc, sop_uid: str) -> pydicom.Dataset:
    [inst] = pacs.find_instances(sop_uid)
    return pydicom.dcmread(io.BytesIO(pacs.get_bytes(f"/instances/{inst['ID']}/file")))


def test_ward_round_by_c_store(pacs: Orthanc) -> None:
    sink = sink_for(pacs)
    for i in range(1, 4):
        cap = capture(100 + i, patient="SYN0042", session="c5" * 16, purpose="PRE-OP")
        ref = sink.store(cap)
        assert ref == dicom.instance_uid(cap.device, cap.capture_id)
        ds = stored_file(pacs, ref)
        assert ds.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.4.50"
        assert (ds.SOPClassUID, ds.Modality) == (dicom.VL_PHOTOGRAPHIC_IMAGE, "XC")
        assert (ds.PatientID, ds.IssuerOfPatientID) == ("SYN0042", "urn:oid:2.999.1")
        assert ds.StudyInstanceUID == dicom.derived_uid("study", cap.device, "c5" * 16)
        assert ds.SeriesInstanceUID == dicom.derived_uid("series", cap.device, "c5" * 16, "PRE-OP")
        assert ds.AnatomicRegionSequence[0].CodeValue == "7769000"
        assert ds.ImageLaterality == "R" and ds.TimezoneOffsetFromUTC == "+0100"
        assert ds.RecognizableVisualFeatures == "YES"
        frame = next(generate_frames(ds.PixelData, number_of_frames=1))
        assert frame[: len(cap.image)] == cap.image and len(frame) - len(cap.image) <= 1


def test_redelivery_leaves_one_instance(pacs: Orthanc) -> None:
    sink, cap = sink_for(pacs), capture(121)
    assert sink.store(cap) == sink.store(cap)
    assert len(pacs.find_instances(dicom.instance_uid(cap.device, cap.capture_id))) == 1


def test_wrong_called_ae_title_is_sink_auth(pacs: Orthanc) -> None:
    cap = capture(131)
    with pytest.raises(SinkError) as err:
        sink_for(pacs, called="NOTTHEPACS").store(cap)
    assert err.value.reason == "sink-auth"
    assert pacs.find_instances(dicom.instance_uid(cap.device, cap.capture_id)) == []
    sink_for(pacs).store(cap)  # positive control: the right AE title stores it
    assert len(pacs.find_instances(dicom.instance_uid(cap.device, cap.capture_id))) == 1


def test_void_sends_a_rejection_note(pacs: Orthanc) -> None:
    sink, cap = sink_for(pacs), capture(141)
    ref = sink.store(cap)
    sink.void(cap.device, cap.capture_id)
    note = stored_file(pacs, dicom.rejection_note_uid(cap.device, cap.capture_id))
    assert note.ConceptNameCodeSequence[0].CodeMeaning == "Rejected for Patient Safety Reasons"
    evidence = note.CurrentRequestedProcedureEvidenceSequence[0]
    assert evidence.ReferencedSeriesSequence[0].ReferencedSOPSequence[0].ReferencedSOPInstanceUID == ref
    assert note.StudyInstanceUID == stored_file(pacs, ref).StudyInstanceUID
    assert note.PatientID == "SYN0001"


def test_void_of_an_unknown_capture_sends_nothing(pacs: Orthanc) -> None:
    sink_for(pacs).void("ward5-cart1", "ee" * 16)
    assert pacs.find_instances(dicom.rejection_note_uid("ward5-cart1", "ee" * 16)) == []


def test_pacs_down_then_up_stores_once(tmp_path: Path) -> None:
    server = Orthanc(tmp_path / "pacs", aet="TESTPACS")
    server.start()
    check_pacs_down_then_up(server, sink_for(server), capture(151))


def test_bad_ae_title_is_a_config_error() -> None:
    with pytest.raises(ConfigError):
        DimseSink("x", "127.0.0.1", 104, called_aet="A" * 17)


def test_c_store_over_mutual_tls(tmp_path: Path) -> None:
    pacs_tls = make_tls(tmp_path / "pacs-tls")
    client_tls = make_tls(tmp_path / "client-tls")  # the relay's own CA and certificate
    server = Orthanc(tmp_path / "pacs", aet="TLSPACS",
                     dicom_tls=(pacs_tls.server_cert, pacs_tls.server_key, client_tls.ca_pem))
    server.start()
    try:
        cap = capture(161)
        sink = DimseSink("pacs-tls", "127.0.0.1", server.dicom_port, called_aet="TLSPACS",
                         tls_ca_file=pacs_tls.ca_pem, tls_cert_file=client_tls.server_cert,
                         tls_key_file=client_tls.server_key, timeout_s=10)
        ref = sink.store(cap)
        assert len(server.find_instances(ref)) == 1
        wrong_ca = DimseSink("pacs-tls", "127.0.0.1", server.dicom_port, called_aet="TLSPACS",
                             tls_ca_file=client_tls.ca_pem, tls_cert_file=client_tls.server_cert,
                             tls_key_file=client_tls.server_key, timeout_s=10)
        with pytest.raises(SinkError):  # the PACS's certificate is not from the pinned CA
            wrong_ca.store(capture(162))
        assert server.find_instances(dicom.instance_uid(cap.device, capture(162).capture_id)) == []
    finally:
        server.stop()
