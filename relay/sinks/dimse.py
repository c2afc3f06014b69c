"""DIMSE sink: files each capture in a PACS by C-STORE (pynetdicom), for the many PACS
that speak no DICOMweb.

Success is status 0x0000 or a warning status (the PACS kept the instance, perhaps
coerced); any failure status, a rejected or aborted association, or no answer is a
``SinkError`` so the relay answers ``retry``. A rejected association (wrong called or
calling AE title) is ``sink-auth``: in DICOM the AE titles are the peer's credentials.
A void finds the photo by C-FIND and C-STOREs the IOCM rejection note.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

from clinicam.common.errors import ConfigError
from clinicam.protocol.reasons import SinkError
from clinicam.relay.sinks import OpenedCaptureLike, dicom
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, JPEGBaseline8Bit
from pynetdicom import AE
from pynetdicom.association import Association

log = logging.getLogger(__name__)

# pynetdicom logs association details at INFO; at DEBUG it can dump whole datasets,
# which hold patient identifiers. Keep it to warnings (DESIGN §3.1).
logging.getLogger("pynetdicom").setLevel(logging.WARNING)

STUDY_ROOT_FIND = "1.2.840.10008.5.1.4.1.2.2.1"  # Study Root Query/Retrieve - FIND

# Warning statuses of C-STORE (PS3.4 B.2.3): the instance was stored.
_STORE_WARNINGS = {0x0001, 0xB000, 0xB006, 0xB007}
# "Duplicate SOP Instance", which some PACS answer to a re-sent instance: our UIDs derive
# from (device, capture id) and the relay refuses a changed manifest, so it is ours.
_DUPLICATE_SOP_INSTANCE = 0x0111


def _is_ae_title(value: str) -> bool:
    return 0 < len(value) <= 16 and value.isascii() and "\\" not in value and value.strip() == value


def from_config(cfg: Any) -> DimseSink:
    """The sink of a ``[[sinks]] type = "dimse"`` entry (``relay.config``)."""
    if cfg.tls and not cfg.ca_file:
        raise ConfigError(f"sink {cfg.name}: tls = true needs ca_file (the PACS CA to pin)")
    files = (cfg.ca_file, cfg.cert_file or None, cfg.key_file or None) if cfg.tls else (None,) * 3
    return DimseSink(
        cfg.name, cfg.host, cfg.port, called_aet=cfg.called_ae, calling_aet=cfg.calling_ae,
        tls_ca_file=files[0], tls_cert_file=files[1], tls_key_file=files[2],
        timeout_s=cfg.timeout_s, body_part_terms=dicom.builtin_body_part_terms(),
        reconcile=cfg.role == "quarantine",
    )


class DimseSink:
    """C-STORE to ``host:port`` as ``calling_aet`` to ``called_aet``, optionally over TLS."""

    def __init__(
        self,
        name: str,
        host: str,
        port: int,
        *,
        called_aet: str,
        calling_aet: str = "CLINICAM",
        tls_ca_file: Path | str | None = None,
        tls_cert_file: Path | str | None = None,
        tls_key_file: Path | str | None = None,
        timeout_s: float = 30.0,
        demographics: dicom.DemographicsSource | None = None,
        body_part_terms: dicom.BodyPartTerms | None = None,
        local_now: Callable[[], datetime] = lambda: datetime.now().astimezone(),
        reconcile: bool = False,
    ) -> None:
        if not (_is_ae_title(called_aet) and _is_ae_title(calling_aet)):
            raise ConfigError(f"sink {name}: AE titles must be 1-16 ASCII characters")
        self.name = name
        self._host, self._port = host, port
        self._called, self._calling = called_aet, calling_aet
        self._tls = _tls_context(tls_ca_file, tls_cert_file, tls_key_file)
        self._timeout = timeout_s
        self._demographics = demographics
        self._terms = body_part_terms
        self._local_now = local_now
        self._reconcile = reconcile  # a quarantine PACS: studies flagged for reconciliation

    def store(self, capture: OpenedCaptureLike) -> str:
        """C-STORE the capture's VL Photographic Image; return its SOP Instance UID."""
        ds = dicom.build_photo(capture, demographics=self._demographics,
                               body_part_terms=self._terms, reconcile=self._reconcile)
        with self._association() as assoc:
            self._c_store(assoc, ds)
        log.info("sink %s: stored capture %s", self.name, capture.capture_id)
        return str(ds.SOPInstanceUID)

    def void(self, device: str, capture_id: str) -> None:
        """C-STORE a rejection note for the capture (nothing if the PACS never had it)."""
        with self._association() as assoc:
            target = self._find(assoc, dicom.instance_uid(device, capture_id))
            if target is None:
                log.warning("sink %s: void of capture %s: not in the PACS", self.name,
                            capture_id)
                return
            self._c_store(assoc, dicom.build_rejection_note(target, device, capture_id,
                                                            now=self._local_now()))
        log.info("sink %s: voided capture %s", self.name, capture_id)

    @contextmanager
    def _association(self) -> Iterator[Association]:
        ae = AE(ae_title=self._calling)
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = self._timeout
        ae.add_requested_context(dicom.VL_PHOTOGRAPHIC_IMAGE, JPEGBaseline8Bit)
        ae.add_requested_context(dicom.KEY_OBJECT_SELECTION, ExplicitVRLittleEndian)
        ae.add_requested_context(STUDY_ROOT_FIND)
        tls_args = (self._tls, self._host) if self._tls else None
        assoc = ae.associate(self._host, self._port, ae_title=self._called, tls_args=tls_args)
        if not assoc.is_established:
            reason = "sink-auth" if assoc.is_rejected else "sink-unavailable"
            log.warning("sink %s: association not established -> %s", self.name, reason)
            raise SinkError(reason, f"sink {self.name}: PACS association failed ({reason})")
        try:
            yield assoc
        finally:
            if assoc.is_established:
                assoc.release()

    def _c_store(self, assoc: Association, ds: Dataset) -> None:
        status = assoc.send_c_store(ds)
        code = int(status.Status) if "Status" in status else None
        if code in (0x0000, _DUPLICATE_SOP_INSTANCE) or code in _STORE_WARNINGS:
            return
        reason = _store_failure_reason(code)
        log.warning("sink %s: C-STORE status %s -> %s",
                    self.name, "none" if code is None else f"0x{code:04X}", reason)
        raise SinkError(reason, f"sink {self.name}: C-STORE failed ({reason})")

    def _find(self, assoc: Association, sop_instance_uid: str) -> dicom.StoredInstance | None:
        query = Dataset()
        query.QueryRetrieveLevel = "IMAGE"
        query.SOPInstanceUID = sop_instance_uid
        for keyword in (*dicom.PATIENT_KEYS, "StudyInstanceUID", "SeriesInstanceUID", "SOPClassUID"):
            setattr(query, keyword, "")
        found: Dataset | None = None
        for status, identifier in assoc.send_c_find(query,
                                                    STUDY_ROOT_FIND):
            code = int(status.Status) if "Status" in status else None
            if code is None or (code >= 0xA000 and code not in (0xFF00, 0xFF01)):
                raise SinkError("sink-unavailable", f"sink {self.name}: C-FIND failed")
            if code in (0xFF00, 0xFF01) and identifier is not None and found is None:
                found = identifier
        if found is None:
            return None
        patient = {key: str(found.get(key, "") or "") for key in dicom.PATIENT_KEYS}
        return dicom.StoredInstance(str(found.StudyInstanceUID), str(found.SeriesInstanceUID),
                                    str(found.get("SOPClassUID") or dicom.VL_PHOTOGRAPHIC_IMAGE),
                                    sop_instance_uid, patient)


def _store_failure_reason(code: int | None) -> str:
    """Out of resources or no answer: the PACS may recover; anything else it refused."""
    if code is None or 0xA700 <= code <= 0xA7FF or code == 0x0213:
        return "sink-unavailable"
    return "sink-refused"


def _tls_context(
    ca_file: Path | str | None, cert_file: Path | str | None, key_file: Path | str | None
) -> ssl.SSLContext | None:
    """DICOM TLS (PS3.15 B.1): the PACS CA pinned, a client certificate when given."""
    if ca_file is None:
        if cert_file or key_file:
            raise ConfigError("DICOM TLS needs tls_ca_file as well as a client certificate")
        return None
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(ca_file))
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if cert_file:
        context.load_cert_chain(str(cert_file), str(key_file) if key_file else None)
    return context
