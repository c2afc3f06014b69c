"""The FHIR DocumentReference, the HTTP client's rules and the sinks' config wiring:
pure functions, no network."""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path

import pytest
from clinicam.common.errors import ConfigError
from clinicam.protocol.reasons import SinkError
from clinicam.relay.config import DicomWebSinkConfig, DimseSinkConfig, FhirSinkConfig
from clinicam.relay.sinks import dicom
from clinicam.relay.sinks.dicomweb import from_config as dicomweb_from_config
from clinicam.relay.sinks.dimse import from_config as dimse_from_config
from clinicam.relay.sinks.fhir import CAPTURE_SYSTEM, document_reference, token
from clinicam.relay.sinks.fhir import from_config as fhir_from_config
from clinicam.relay.sinks.httpclient import Auth, HttpClient, reason_for_status
from test_dicom_object import Capture, metadata


def test_document_reference_fields() -> None:
    cap = Capture()
    doc = document_reference(cap, "Patient/p1", "Binary/b1")
    assert doc["identifier"] == [{"system": CAPTURE_SYSTEM, "value": cap.capture_id}]
    assert doc["type"]["coding"][0] == {"system": "http://loinc.org", "code": "72170-4",
                                        "display": "Photographic image"}
    assert doc["subject"] == {"reference": "Patient/p1", "type": "Patient",
                              "identifier": {"system": "urn:oid:1.2.3.4", "value": "SYN0001"}}
    attachment = doc["content"][0]["attachment"]
    assert attachment["url"] == "Binary/b1" and attachment["size"] == len(cap.image)
    assert base64.b64decode(attachment["hash"]) == hashlib.sha1(cap.image).digest()
    assert doc["date"] == "2026-03-01T23:30:00.250Z"
    [site] = doc["contained"]
    assert doc["context"]["extension"][0]["valueReference"] == {"reference": "#" + site["id"]}
    assert site["locationQualifier"][0]["coding"][0]["code"] == "7771000"  # left


def test_document_reference_without_lookup_or_optional_fields() -> None:
    md = metadata(operator=None, body_site=None)
    md["patient"]["encounter"] = None
    doc = document_reference(Capture(metadata=md), None, "Binary/b1")
    assert "reference" not in doc["subject"]
    assert "author" not in doc and "contained" not in doc
    assert "encounter" not in doc["context"] and "extension" not in doc["context"]


@pytest.mark.parametrize(
    ("status", "reason"),
    [(401, "sink-auth"), (403, "sink-auth"), (500, "sink-unavailable"),
     (503, "sink-unavailable"), (429, "sink-unavailable"), (400, "sink-refused"),
     (422, "sink-refused")],
)
def test_every_http_error_is_a_retry_reason(status: int, reason: str) -> None:
    assert reason_for_status(status) == reason


def test_client_refuses_unpinned_or_plain_remote_urls(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        HttpClient("https://pacs.example.org/dicom-web")  # no CA to pin
    with pytest.raises(ConfigError):
        HttpClient("http://pacs.example.org/dicom-web")  # plain http off loopback
    with pytest.raises(ConfigError):
        HttpClient("https://pacs.example.org/", ca_file=tmp_path / "missing.pem")
    HttpClient("http://127.0.0.1:8042/dicom-web")  # positive control: loopback http


def test_auth_reads_secrets_fresh_and_validates(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("one\n")
    auth = Auth("bearer", token_file=token)
    assert auth.header() == "Bearer one"
    token.write_text("two\n")
    assert auth.header() == "Bearer two"  # a rotated token is picked up
    password = tmp_path / "pw"
    password.write_text("s3cret")
    basic = Auth("basic", username="u", password_file=password).header()
    assert basic == "Basic " + base64.b64encode(b"u:s3cret").decode()
    with pytest.raises(ConfigError):
        Auth("bearer")
    with pytest.raises(ConfigError):
        Auth("digest")
    token.unlink()
    with pytest.raises(SinkError) as err:
        auth.header()
    assert err.value.reason == "sink-auth"


def test_sinks_from_relay_config(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("t")
    web = dicomweb_from_config(DicomWebSinkConfig(
        type="dicomweb", name="pacs", url="http://127.0.0.1:8042/dicom-web/studies",
        auth="bearer", token_file=str(token)))
    assert web.name == "pacs"
    quarantine = dicomweb_from_config(DicomWebSinkConfig(
        type="dicomweb", name="q", url="http://127.0.0.1:8042/dicom-web", role="quarantine"))
    assert quarantine._reconcile and not web._reconcile
    dimse = dimse_from_config(DimseSinkConfig(type="dimse", name="pacs2", host="127.0.0.1",
                                              called_ae="ORTHANC"))
    assert dimse.name == "pacs2"
    with pytest.raises(ValueError, match="tls = true needs ca_file"):  # refused when the config is read
        dimse_from_config(DimseSinkConfig(type="dimse", name="x", host="h", tls=True))
    fhir = fhir_from_config(FhirSinkConfig(type="fhir", name="emr", url="http://localhost/fhir"))
    assert fhir.name == "emr"


def test_builtin_body_part_terms_are_cid_4031_terms() -> None:
    terms = dicom.builtin_body_part_terms()
    assert terms["40983000"] == "ARM"  # upper arm
    assert "41695006" not in terms  # scalp: no defined term, so none is invented


def test_search_tokens_are_escaped() -> None:
    assert token("urn:oid:1.2", "A1") == "urn:oid:1.2|A1"
    assert token("urn:x", "a|b,c$d\\e") == "urn:x|a\\|b\\,c\\$d\\\\e"
