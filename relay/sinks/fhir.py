"""FHIR R4 sink: files each capture in an EMR as a Binary and a DocumentReference.

The patient is looked up by identifier first (``Patient?identifier=<issuer>|<id>``): a
patient the EMR does not know (or knows twice) raises ``SinkUnknownPatient`` so the relay
quarantines the photo instead of filing it on a guessed chart. The Binary is posted as
FHIR JSON (some servers fail on raw image posts); the DocumentReference is created with
``If-None-Exist`` on the capture identifier, so a re-delivery never files a second copy,
even when two relay workers race. A void marks it ``entered-in-error``; nothing is deleted.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

from clinicam.common.errors import SinkUnknownPatient
from clinicam.protocol.reasons import SinkError
from clinicam.relay.sinks import OpenedCaptureLike
from clinicam.relay.sinks.httpclient import Auth, HttpClient, Response, auth_from_config

log = logging.getLogger(__name__)

CAPTURE_SYSTEM = "urn:clinicam:capture"
FHIR_JSON = "application/fhir+json"
PHOTO_TYPE = {"system": "http://loinc.org", "code": "72170-4", "display": "Photographic image"}
BODY_SITE_EXTENSION = "http://hl7.org/fhir/StructureDefinition/bodySite"
SNOMED = "http://snomed.info/sct"
# SNOMED CT laterality qualifiers for BodyStructure.locationQualifier.
_LATERALITY = {
    "LEFT": ("7771000", "Left"),
    "RIGHT": ("24028007", "Right"),
    "BILATERAL": ("51440002", "Right and left"),
}


@dataclass(frozen=True)
class Demographics:
    """Patient Name (DICOM PN form ``Family^Given``) and birth date (``YYYYMMDD``)."""

    name: str
    birth_date: str


def from_config(cfg: Any) -> FhirSink:
    """The sink of a ``[[sinks]] type = "fhir"`` entry (``relay.config``)."""
    return FhirSink(cfg.name, cfg.url, ca_file=cfg.ca_file or None, auth=auth_from_config(cfg),
                    timeout_s=cfg.timeout_s, lookup_patient=cfg.lookup_patient)


class FhirSink:
    """Binary + DocumentReference on the FHIR R4 server at ``url`` (its base, ``…/fhir``)."""

    def __init__(
        self,
        name: str,
        url: str,
        *,
        ca_file: Path | str | None = None,
        auth: Auth | None = None,
        timeout_s: float = 30.0,
        lookup_patient: bool = True,
    ) -> None:
        self.name = name
        self._lookup = lookup_patient
        self._http = HttpClient(url, ca_file=ca_file, auth=auth, timeout_s=timeout_s,
                                sink_name=name)

    def check_patient(self, capture: OpenedCaptureLike) -> None:
        """Raise ``SinkUnknownPatient`` unless the EMR knows the capture's patient.

        For the relay to call on every sink that has it *before* storing anywhere, so an
        unknown patient's photo reaches only the quarantine sink (issue 7, item 6).
        """
        if self._lookup:
            patient = capture.metadata["patient"]
            self.lookup_patient(patient["id"], patient["issuer"])

    def store(self, capture: OpenedCaptureLike) -> str:
        """File the capture; return ``DocumentReference/<id>``."""
        patient = capture.metadata["patient"]
        patient_ref = (self.lookup_patient(patient["id"], patient["issuer"])
                       if self._lookup else None)
        existing = self._find_document(capture.capture_id)
        if existing is not None:
            return "DocumentReference/" + str(existing["id"])
        binary_ref = self._post_binary(capture.image, patient_ref)
        doc = document_reference(capture, patient_ref, binary_ref)
        ref = self.create_document(doc, capture.capture_id)
        log.info("sink %s: stored capture %s", self.name, capture.capture_id)
        return ref

    def void(self, device: str, capture_id: str) -> None:
        """Set the capture's DocumentReference to ``entered-in-error``."""
        doc = self._find_document(capture_id)
        if doc is None:
            log.warning("sink %s: void of capture %s: not in the EMR", self.name, capture_id)
            return
        if doc.get("status") == "entered-in-error":
            return
        doc["status"] = "entered-in-error"
        headers = {"Content-Type": FHIR_JSON, "Accept": FHIR_JSON}
        version = (doc.get("meta") or {}).get("versionId")
        if version:
            headers["If-Match"] = f'W/"{version}"'  # never overwrite a concurrent change
        self._http.checked("PUT", f"/DocumentReference/{quote(str(doc['id']))}",
                           json.dumps(doc).encode(), headers)
        log.info("sink %s: voided capture %s", self.name, capture_id)

    def lookup_patient(self, patient_id: str, issuer: str) -> str:
        """``Patient/<id>`` of the one patient with this identifier; else SinkUnknownPatient."""
        entries = self._search("Patient", [("identifier", token(issuer, patient_id))])
        if len(entries) != 1:
            log.warning("sink %s: patient lookup found %d matches", self.name, len(entries))
            raise SinkUnknownPatient(
                f"sink {self.name}: the EMR has {len(entries)} patients with this identifier: "
                "quarantine for reconciliation"
            )
        return "Patient/" + str(entries[0]["id"])

    def demographics(self, patient_id: str, issuer: str) -> Demographics | None:
        """Patient Name and Birth Date for DICOM, from the EMR (a ``DemographicsSource``)."""
        entries = self._search("Patient", [("identifier", token(issuer, patient_id))])
        if len(entries) != 1:
            return None
        return _demographics(entries[0])

    def create_document(self, doc: Mapping[str, Any], capture_id: str) -> str:
        """Conditional create: the server returns the existing one if the identifier exists."""
        response = self._http.checked(
            "POST", "/DocumentReference", json.dumps(doc).encode(),
            {"Content-Type": FHIR_JSON, "Accept": FHIR_JSON,
             "If-None-Exist": urlencode({"identifier": f"{CAPTURE_SYSTEM}|{capture_id}"}),
             "Prefer": "return=representation"},
        )
        return "DocumentReference/" + _created_id(response, "DocumentReference", self.name)

    def _post_binary(self, image: bytes, patient_ref: str | None) -> str:
        binary: dict[str, Any] = {
            "resourceType": "Binary",
            "contentType": "image/jpeg",
            "data": base64.b64encode(image).decode("ascii"),
        }
        if patient_ref:  # the EMR grants access to the photo as to the patient's record
            binary["securityContext"] = {"reference": patient_ref}
        response = self._http.checked(
            "POST", "/Binary", json.dumps(binary).encode(),
            {"Content-Type": FHIR_JSON, "Accept": FHIR_JSON, "Prefer": "return=minimal"},
        )
        return "Binary/" + _created_id(response, "Binary", self.name)

    def _find_document(self, capture_id: str) -> dict[str, Any] | None:
        entries = self._search("DocumentReference",
                               [("identifier", f"{CAPTURE_SYSTEM}|{capture_id}")])
        return entries[0] if entries else None

    def _search(self, resource: str, params: list[tuple[str, str]]) -> list[dict[str, Any]]:
        response = self._http.checked("GET", f"/{resource}?{urlencode(params)}",
                                      headers={"Accept": FHIR_JSON})
        bundle = _json(response, self.name)
        return [e["resource"] for e in bundle.get("entry") or []
                if (e.get("search") or {}).get("mode", "match") == "match" and "resource" in e]


def token(system: str, code: str) -> str:
    """A FHIR token search value ``system|code``, with ``\\ , $ |`` escaped (R4 3.1.1.4.1)."""

    def escape(text: str) -> str:
        for char in ("\\", ",", "$", "|"):
            text = text.replace(char, "\\" + char)
        return text

    return f"{escape(system)}|{escape(code)}"


def document_reference(
    capture: OpenedCaptureLike, patient_ref: str | None, binary_ref: str
) -> dict[str, Any]:
    """The R4 DocumentReference of a capture (DESIGN §6 metadata).

    Without ``patient_ref`` (no lookup configured) the subject is the identifier alone,
    which the EMR resolves itself.
    """
    md, image = capture.metadata, capture.image
    patient = md["patient"]
    subject: dict[str, Any] = {"type": "Patient", "identifier": {"system": patient["issuer"],
                                                                 "value": patient["id"]}}
    if patient_ref:
        subject["reference"] = patient_ref
    doc: dict[str, Any] = {
        "resourceType": "DocumentReference",
        "identifier": [{"system": CAPTURE_SYSTEM, "value": capture.capture_id}],
        "status": "current",
        "docStatus": "final",
        "type": {"coding": [PHOTO_TYPE]},
        "subject": subject,
        "date": md["captured_at"],
        "description": f"Clinical photo ({(md.get('purpose') or 'OTHER').lower()})",
        "content": [{"attachment": {
            "contentType": "image/jpeg",
            "url": binary_ref,
            "size": len(image),
            "hash": base64.b64encode(hashlib.sha1(image).digest()).decode("ascii"),  # noqa: S324 - R4 mandates SHA-1 here
            "creation": md["captured_at"],
        }}],
    }
    operator = md.get("operator")
    if operator:
        doc["author"] = [{"type": "Practitioner",
                          "identifier": {"system": operator["issuer"], "value": operator["id"]}}]
    doc["context"] = _context(md)
    contained = _body_structure(md, subject)
    if contained:
        doc["contained"] = [contained]
    return doc


def _context(md: Mapping[str, Any]) -> dict[str, Any]:
    context: dict[str, Any] = {"period": {"start": md["captured_at"]}}
    encounter = md["patient"].get("encounter")
    if encounter:
        context["encounter"] = [{"type": "Encounter", "identifier": {"value": encounter}}]
    if md.get("body_site"):
        context["extension"] = [{"url": BODY_SITE_EXTENSION,
                                 "valueReference": {"reference": "#site"}}]
    return context


def _body_structure(md: Mapping[str, Any], subject: Mapping[str, Any]) -> dict[str, Any] | None:
    """R4 has no DocumentReference body site: a contained BodyStructure via the extension."""
    site = md.get("body_site")
    if not site:
        return None
    body: dict[str, Any] = {
        "resourceType": "BodyStructure",
        "id": "site",
        "location": {"coding": [{"system": SNOMED, "code": site["code"],
                                 "display": site["display"]}]},
        "patient": dict(subject),
    }
    laterality = _LATERALITY.get(md.get("laterality") or "")
    if laterality:
        body["locationQualifier"] = [{"coding": [{"system": SNOMED, "code": laterality[0],
                                                  "display": laterality[1]}]}]
    return body


def _demographics(patient: Mapping[str, Any]) -> Demographics:
    names = patient.get("name") or [{}]
    name = names[0]
    given = " ".join(name.get("given") or [])
    pn = f"{name.get('family', '')}^{given}".rstrip("^")
    return Demographics(pn, str(patient.get("birthDate", "")).replace("-", "")[:8])


def _created_id(response: Response, resource: str, sink: str) -> str:
    """The id from the Location header (``…/<Type>/<id>/_history/<v>``) or the body."""
    location = response.headers.get("location") or response.headers.get("content-location")
    if location:
        parts = location.split("/")
        if resource in parts and parts.index(resource) + 1 < len(parts):
            return parts[parts.index(resource) + 1]
    body = _json(response, sink) if response.body else {}
    if body.get("resourceType") == resource and body.get("id"):
        return str(body["id"])
    raise SinkError("sink-refused", f"sink {sink}: the EMR did not say where the {resource} is")


def _json(response: Response, sink: str) -> dict[str, Any]:
    try:
        value = json.loads(response.body or b"{}")
    except ValueError as exc:
        raise SinkError("sink-refused", f"sink {sink}: response is not FHIR JSON") from exc
    return value if isinstance(value, dict) else {}
