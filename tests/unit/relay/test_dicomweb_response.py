"""How the DICOMweb sink reads a STOW-RS response: stored only when the PACS lists the
instance in its ReferencedSOPSequence (PS3.18 10.5.3). The HTTP exchange is replaced by
canned responses; the real exchange is tested against Orthanc in tests/integration."""

from __future__ import annotations

import json
from typing import Any

import pytest
from clinicam.protocol.reasons import SinkError
from clinicam.relay.sinks import dicom
from clinicam.relay.sinks.dicomweb import DicomWebSink
from clinicam.relay.sinks.httpclient import Response
from test_dicom_object import Capture


def _seq(uid: str) -> dict[str, Any]:
    return {"vr": "SQ", "Value": [{"00081155": {"vr": "UI", "Value": [uid]}}]}


class Canned:
    """Stands in for the HTTP client: records requests, returns one response."""

    def __init__(self, body: Any, status: int = 200) -> None:
        self.response = Response(status, {"content-type": "application/dicom+json"},
                                 json.dumps(body).encode())
        self.requests: list[tuple[str, str, bytes | None, dict[str, str]]] = []

    def checked(self, method: str, path: str, body: bytes | None = None,
                headers: dict[str, str] | None = None, ok: tuple[int, ...] = ()) -> Response:
        self.requests.append((method, path, body, dict(headers or {})))
        return self.response


def sink_with(canned: Canned) -> DicomWebSink:
    sink = DicomWebSink("pacs", "http://127.0.0.1:1/dicom-web/studies")
    sink._http = canned  # type: ignore[assignment]
    return sink


def test_referenced_instance_is_stored_and_request_is_multipart() -> None:
    cap = Capture()
    uid = dicom.instance_uid(cap.device, cap.capture_id)
    canned = Canned({"00081199": _seq(uid)})
    assert sink_with(canned).store(cap) == uid
    [(method, path, body, headers)] = canned.requests
    assert (method, path) == ("POST", "/studies")
    content_type = headers["Content-Type"]
    assert content_type.startswith('multipart/related; type="application/dicom"; boundary=')
    boundary = content_type.rsplit("=", 1)[1]
    assert body is not None and body.startswith(f"--{boundary}\r\n".encode())
    assert body.endswith(f"\r\n--{boundary}--\r\n".encode())
    assert b"DICM" in body[:300]  # a Part 10 file with its preamble


@pytest.mark.parametrize(
    "body",
    [
        {"00081198": "FAILED"},  # the instance in the FailedSOPSequence
        {"00081199": _seq("2.25.1")},  # another instance referenced, not ours
        {},  # nothing said
    ],
)
def test_anything_but_a_reference_to_the_instance_is_refused(body: dict) -> None:
    cap = Capture()
    if body.get("00081198") == "FAILED":
        body = {"00081198": _seq(dicom.instance_uid(cap.device, cap.capture_id))}
    with pytest.raises(SinkError) as err:
        sink_with(Canned(body)).store(cap)
    assert err.value.reason == "sink-refused"


def test_non_json_response_is_refused() -> None:
    canned = Canned({})
    canned.response = Response(200, {}, b"<html>proxy error</html>")
    with pytest.raises(SinkError) as err:
        sink_with(canned).store(Capture())
    assert err.value.reason == "sink-refused"


def test_duplicate_instance_failure_counts_as_already_stored() -> None:
    cap = Capture()
    uid = dicom.instance_uid(cap.device, cap.capture_id)
    failed = _seq(uid)
    failed["Value"][0]["00081197"] = {"vr": "US", "Value": [0x0111]}
    assert sink_with(Canned({"00081198": failed})).store(cap) == uid
    failed["Value"][0]["00081197"] = {"vr": "US", "Value": [0xA700]}  # out of resources
    with pytest.raises(SinkError) as err:
        sink_with(Canned({"00081198": failed})).store(cap)
    assert err.value.reason == "sink-unavailable"
