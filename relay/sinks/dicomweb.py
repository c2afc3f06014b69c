"""DICOMweb sink: files each capture in a PACS by STOW-RS (IHE Web-based Image Capture).

A capture counts as stored only when the PACS's response lists its SOP instance in the
ReferencedSOPSequence; a FailedSOPSequence, an HTTP error or silence is a ``SinkError``
(the relay answers ``retry``), never a rejection: an expired token must not make every
station drop every photo (DESIGN §3.6). A void sends an IOCM rejection note the same
way, after finding the photo's study and series by QIDO-RS.
"""

from __future__ import annotations

import json
import logging
import secrets
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from clinicam.protocol.reasons import SinkError
from clinicam.relay.sinks import OpenedCaptureLike, dicom
from clinicam.relay.sinks.httpclient import Auth, HttpClient, Response, auth_from_config

log = logging.getLogger(__name__)

# DICOM JSON tags (PS3.18 F.2) read from STOW-RS and QIDO-RS responses.
_REFERENCED_SOP_SEQ = "00081199"
_FAILED_SOP_SEQ = "00081198"
_REFERENCED_SOP_INSTANCE = "00081155"
_FAILURE_REASON = "00081197"
# "Duplicate SOP Instance": how some PACS answer a re-sent instance. Ours, since UIDs
# derive from (device, capture id) and the relay refuses a changed manifest.
_DUPLICATE_SOP_INSTANCE = 0x0111
_QIDO_FIELDS = {
    "00100010": "PatientName",
    "00100020": "PatientID",
    "00100021": "IssuerOfPatientID",
    "00100030": "PatientBirthDate",
    "00100040": "PatientSex",
}
_STUDY_UID, _SERIES_UID, _SOP_CLASS = "0020000D", "0020000E", "00080016"


def from_config(cfg: Any) -> DicomWebSink:
    """The sink of a ``[[sinks]] type = "dicomweb"`` entry (``relay.config``)."""
    return DicomWebSink(
        cfg.name, cfg.url, ca_file=cfg.ca_file or None, auth=auth_from_config(cfg),
        timeout_s=cfg.timeout_s, body_part_terms=dicom.builtin_body_part_terms(),
        reconcile=cfg.role == "quarantine",
    )


class DicomWebSink:
    """STOW-RS to ``url``: the DICOMweb root (``https://pacs/dicom-web``) or its ``/studies``."""

    def __init__(
        self,
        name: str,
        url: str,
        *,
        ca_file: Path | str | None = None,
        auth: Auth | None = None,
        timeout_s: float = 30.0,
        demographics: dicom.DemographicsSource | None = None,
        body_part_terms: dicom.BodyPartTerms | None = None,
        local_now: Callable[[], datetime] = lambda: datetime.now().astimezone(),
        reconcile: bool = False,
    ) -> None:
        self.name = name
        root = url.rstrip("/")
        root = root.removesuffix("/studies")  # accept the /studies endpoint or the root
        self._http = HttpClient(root, ca_file=ca_file, auth=auth, timeout_s=timeout_s,
                                sink_name=name)
        self._demographics = demographics
        self._terms = body_part_terms
        self._local_now = local_now
        self._reconcile = reconcile  # a quarantine PACS: studies flagged for reconciliation

    def store(self, capture: OpenedCaptureLike) -> str:
        """Send the capture's VL Photographic Image; return its SOP Instance UID."""
        ds = dicom.build_photo(capture, demographics=self._demographics,
                               body_part_terms=self._terms, reconcile=self._reconcile)
        self._stow(dicom.encode(ds), ds.SOPInstanceUID)
        log.info("sink %s: stored capture %s", self.name, capture.capture_id)
        return str(ds.SOPInstanceUID)

    def void(self, device: str, capture_id: str) -> None:
        """Send a rejection note for the capture's instance (nothing if it was never filed)."""
        target = self.find(dicom.instance_uid(device, capture_id))
        if target is None:
            log.warning("sink %s: void of capture %s: not in the PACS", self.name, capture_id)
            return
        note = dicom.build_rejection_note(target, device, capture_id, now=self._local_now())
        self._stow(dicom.encode(note), note.SOPInstanceUID)
        log.info("sink %s: voided capture %s", self.name, capture_id)

    def find(self, sop_instance_uid: str) -> dicom.StoredInstance | None:
        """QIDO-RS lookup of an instance: its study, series, class and patient attributes."""
        query = urlencode(
            [("SOPInstanceUID", sop_instance_uid)]
            + [("includefield", tag) for tag in (*_QIDO_FIELDS, _STUDY_UID, _SERIES_UID)]
        )
        response = self._http.checked(
            "GET", "/instances?" + query, headers={"Accept": "application/dicom+json"}
        )
        found = _json(response, self.name) if response.status != 204 else []
        if not found:
            return None
        attrs = found[0]
        patient = {key: _value(attrs, tag) for tag, key in _QIDO_FIELDS.items()}
        return dicom.StoredInstance(
            _value(attrs, _STUDY_UID), _value(attrs, _SERIES_UID), _value(attrs, _SOP_CLASS),
            sop_instance_uid, patient,
        )

    def _stow(self, part10: bytes, sop_instance_uid: str) -> None:
        boundary = secrets.token_hex(16)
        body = b"".join([
            f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode(),
            part10,
            f"\r\n--{boundary}--\r\n".encode(),
        ])
        content_type = f'multipart/related; type="application/dicom"; boundary={boundary}'
        response = self._http.checked(
            "POST", "/studies", body,
            {"Content-Type": content_type, "Accept": "application/dicom+json"},
            ok=(409,),  # 409: some instances failed; the FailedSOPSequence says which
        )
        result = _json(response, self.name)
        if isinstance(result, list):  # some servers wrap the dataset in a list
            result = result[0] if result else {}
        failed = _item(result.get(_FAILED_SOP_SEQ), sop_instance_uid)
        if failed is not None:
            code = int(_value(failed, _FAILURE_REASON) or 0)
            if code == _DUPLICATE_SOP_INSTANCE:
                return  # already stored
            reason = "sink-unavailable" if 0xA700 <= code <= 0xA7FF else "sink-refused"
            raise SinkError(reason, f"sink {self.name}: PACS did not store the instance")
        if _item(result.get(_REFERENCED_SOP_SEQ), sop_instance_uid) is None:
            raise SinkError("sink-refused", f"sink {self.name}: PACS did not confirm the instance")


def _json(response: Response, sink: str) -> Any:
    try:
        return json.loads(response.body or b"{}")
    except ValueError as exc:
        raise SinkError("sink-refused", f"sink {sink}: response is not DICOM JSON") from exc


def _item(sequence: Any, sop_instance_uid: str) -> dict[str, Any] | None:
    """The item of a DICOM JSON sequence that references this instance, if any."""
    items = (sequence or {}).get("Value") or []
    return next((i for i in items if _value(i, _REFERENCED_SOP_INSTANCE) == sop_instance_uid),
                None)


def _value(attrs: dict[str, Any], tag: str) -> str:
    """The first value of a DICOM JSON attribute as a string ('' when absent)."""
    values = (attrs.get(tag) or {}).get("Value") or [""]
    first = values[0]
    if isinstance(first, dict):  # PN: {"Alphabetic": "Doe^Jane"}
        return str(first.get("Alphabetic", ""))
    return str(first)
