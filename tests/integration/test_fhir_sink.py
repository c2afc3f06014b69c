"""FhirSink against a real FHIR R4 server (sekmet) over HTTPS with a pinned CA."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from clinicam.common.errors import SinkUnknownPatient
from clinicam.protocol.reasons import SinkError
from clinicam.relay.sinks.fhir import CAPTURE_SYSTEM, FhirSink, document_reference
from clinicam.relay.sinks.httpclient import Auth
from servers import FhirServer, capture, make_tls, sekmet_bin

pytestmark = pytest.mark.skipif(
    sekmet_bin() is None,
    reason="FHIR server sekmet not installed (python3 -m venv .venv-fhir && "
    ".venv-fhir/bin/pip install sekmet-fhir)",
)

ISSUER = "urn:oid:2.999.1"


@pytest.fixture(scope="module")
def fhir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FhirServer]:
    work = tmp_path_factory.mktemp("fhir")
    server = FhirServer(work / "server", tls=make_tls(work / "tls"))
    server.start()
    server.add_patient("SYN0001", ISSUER, name=[{"family": "Testpatient", "given": ["Ann"]}],
                       birthDate="1970-01-02")
    yield server
    server.stop()


def sink_for(fhir: FhirServer, tmp_path: Path, token: str | None = None) -> FhirSink:
    token_file = tmp_path / "fhir.token"
    token_file.write_text((token or fhir.token) + "\n")
    assert fhir.tls
    return FhirSink("emr", fhir.base_url, ca_file=fhir.tls.ca_pem,
                    auth=Auth("bearer", token_file=token_file))


def docs_for(fhir: FhirServer, capture_id: str) -> list[dict]:
    return fhir.search(f"/DocumentReference?identifier={CAPTURE_SYSTEM}|{capture_id}")


def test_binary_and_document_reference_read_back(fhir: FhirServer, tmp_path: Path) -> None:
    cap = capture(1)
    ref = sink_for(fhir, tmp_path).store(cap)
    doc = fhir.request("GET", "/" + ref)
    assert doc["status"] == "current"
    assert doc["type"]["coding"][0]["code"] == "72170-4"
    assert doc["identifier"] == [{"system": CAPTURE_SYSTEM, "value": cap.capture_id}]
    assert doc["subject"]["identifier"] == {"system": ISSUER, "value": "SYN0001"}
    patient = fhir.search(f"/Patient?identifier={ISSUER}|SYN0001")[0]
    assert doc["subject"]["reference"] == f"Patient/{patient['id']}"
    assert doc["author"][0]["identifier"]["value"] == "OP-SYN-7"
    assert doc["context"]["encounter"][0]["identifier"]["value"] == "ENC-SYN-1"
    [site] = doc["contained"]
    assert site["location"]["coding"][0]["code"] == "7769000"
    assert site["locationQualifier"][0]["coding"][0]["code"] == "24028007"  # right
    attachment = doc["content"][0]["attachment"]
    assert attachment["size"] == len(cap.image)
    assert attachment["hash"] == base64.b64encode(hashlib.sha1(cap.image).digest()).decode()
    binary = fhir.request("GET", "/" + attachment["url"])
    assert binary["contentType"] == "image/jpeg"
    assert base64.b64decode(binary["data"]) == cap.image


def test_redelivery_files_one_document(fhir: FhirServer, tmp_path: Path) -> None:
    sink, cap = sink_for(fhir, tmp_path), capture(2)
    assert sink.store(cap) == sink.store(cap)
    assert len(docs_for(fhir, cap.capture_id)) == 1


def test_conditional_create_is_honoured(fhir: FhirServer, tmp_path: Path) -> None:
    """Two workers racing past the search both create: If-None-Exist must hold them to one.

    If the server ignored If-None-Exist, the second create would make a second
    document and this test would fail.
    """
    sink, cap = sink_for(fhir, tmp_path), capture(3)
    first = sink.store(cap)
    patient_ref = sink.lookup_patient("SYN0001", ISSUER)
    doc = document_reference(cap, patient_ref, "Binary/does-not-matter")
    assert sink.create_document(doc, cap.capture_id) == first
    assert len(docs_for(fhir, cap.capture_id)) == 1


def test_unknown_patient_is_for_quarantine(fhir: FhirServer, tmp_path: Path) -> None:
    sink = sink_for(fhir, tmp_path)
    cap = capture(4, patient="SYN-NOBODY")
    with pytest.raises(SinkUnknownPatient):
        sink.check_patient(cap)
    with pytest.raises(SinkUnknownPatient):
        sink.store(cap)
    assert docs_for(fhir, cap.capture_id) == []
    fhir.add_patient("SYN-NOBODY", ISSUER)
    sink.check_patient(cap)
    assert sink.store(cap).startswith("DocumentReference/")  # positive control


def test_void_marks_entered_in_error(fhir: FhirServer, tmp_path: Path) -> None:
    sink, cap = sink_for(fhir, tmp_path), capture(5)
    ref = sink.store(cap)
    sink.void(cap.device, cap.capture_id)
    sink.void(cap.device, cap.capture_id)  # idempotent
    assert fhir.request("GET", "/" + ref)["status"] == "entered-in-error"
    assert len(docs_for(fhir, cap.capture_id)) == 1  # marked, not deleted or duplicated


def test_wrong_token_is_sink_auth(fhir: FhirServer, tmp_path: Path) -> None:
    cap = capture(6)
    with pytest.raises(SinkError) as err:
        sink_for(fhir, tmp_path, token="expired-token").store(cap)
    assert err.value.reason == "sink-auth"
    assert sink_for(fhir, tmp_path).store(cap)  # positive control: the right token works


def test_untrusted_certificate_is_sink_auth(fhir: FhirServer, tmp_path: Path) -> None:
    other = make_tls(tmp_path / "other-ca")
    sink = FhirSink("emr", fhir.base_url, ca_file=other.ca_pem)
    with pytest.raises(SinkError) as err:
        sink.store(capture(7))
    assert err.value.reason == "sink-auth"


def test_demographics_from_the_emr(fhir: FhirServer, tmp_path: Path) -> None:
    demo = sink_for(fhir, tmp_path).demographics("SYN0001", ISSUER)
    assert demo is not None
    assert (demo.name, demo.birth_date) == ("Testpatient^Ann", "19700102")
    assert sink_for(fhir, tmp_path).demographics("SYN-UNKNOWN", ISSUER) is None


def test_server_down_is_sink_unavailable(tmp_path: Path) -> None:
    server = FhirServer(tmp_path / "down")
    sink = FhirSink("emr", server.base_url)  # never started: nothing listens
    with pytest.raises(SinkError) as err:
        sink.store(capture(8))
    assert err.value.reason == "sink-unavailable"
