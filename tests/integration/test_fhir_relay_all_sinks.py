"""The relay's core with all three record sinks on real servers: a capture sealed by the
real Sealer is filed once in Orthanc by STOW-RS, once by C-STORE (a second Orthanc) and
once in the FHIR server, and acknowledged ``stored`` with the three refs; an unknown
patient is quarantined; a signed void reaches every sink."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from clinicam.protocol.acks import Ack
from clinicam.protocol.manifest import sign_event
from clinicam.protocol.recipient import generate_recipient_key
from clinicam.protocol.sealing import SealedCapture, Sealer
from clinicam.protocol.topics import Topics
from clinicam.provisioning import pki
from clinicam.relay.core import RelayCore
from clinicam.relay.sinks import dicom
from clinicam.relay.sinks.dicomweb import DicomWebSink
from clinicam.relay.sinks.dimse import DimseSink
from clinicam.relay.sinks.directory import DirectorySink
from clinicam.relay.sinks.fhir import CAPTURE_SYSTEM, FhirSink
from clinicam.relay.sinks.httpclient import Auth
from clinicam.tools.orthanc import Orthanc, orthanc_available
from servers import FhirServer, capture, sekmet_bin

pytestmark = pytest.mark.skipif(
    not orthanc_available() or sekmet_bin() is None,
    reason="needs Orthanc (apt orthanc orthanc-dicomweb) and sekmet (.venv-fhir)",
)

T = Topics()
DEVICE = "ward7-cart2"
ISSUER = "urn:oid:2.999.1"


@dataclass
class World:
    core: RelayCore
    sealer: Sealer
    device_key: Any
    stow_pacs: Orthanc
    dimse_pacs: Orthanc
    fhir: FhirServer
    quarantine: Path


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    work = tmp_path_factory.mktemp("all-sinks")
    now = pki.utcnow()
    ca_key = pki.new_key()
    ca = pki.make_ca(ca_key, "all-sinks", now=now)
    recipient = generate_recipient_key("X25519")
    key = pki.new_key()
    cert = pki.issue(ca_key, ca, key.public_key(), DEVICE, now=now, station=True)
    sealer = Sealer(DEVICE, key, pki.cert_pem(cert), recipient.public_key(), aead="AES-256-GCM")
    stow_pacs = Orthanc(work / "stow", aet="STOWPACS")
    dimse_pacs = Orthanc(work / "dimse", aet="DIMSEPACS")
    fhir = FhirServer(work / "fhir")
    for server in (stow_pacs, dimse_pacs, fhir):
        server.start()
    try:
        fhir.add_patient("SYN0001", ISSUER)
        secret = work / "pacs.pw"
        secret.write_text(stow_pacs.password)
        token = work / "fhir.token"
        token.write_text(fhir.token)
        sinks = [
            DicomWebSink("pacs", stow_pacs.dicomweb_url,
                         auth=Auth("basic", username=stow_pacs.username, password_file=secret)),
            DimseSink("pacs-dimse", "127.0.0.1", dimse_pacs.dicom_port, called_aet="DIMSEPACS"),
            FhirSink("emr", fhir.base_url, auth=Auth("bearer", token_file=token)),
        ]
        core = RelayCore(ca_cert=ca, recipients=[recipient], sinks=sinks,
                         quarantine=DirectorySink(work / "quarantine", name="quarantine"))
        yield World(core, sealer, key, stow_pacs, dimse_pacs, fhir, work / "quarantine")
    finally:
        for server in (stow_pacs, dimse_pacs, fhir):
            server.stop()


def seal(world: World, index: int, patient: str = "SYN0001") -> SealedCapture:
    synthetic = capture(index, patient=patient, issuer=ISSUER, device=DEVICE)
    md = dict(synthetic.metadata)
    md["image"] = {"media_type": "image/jpeg", "width": 320, "height": 240}
    return world.sealer.seal(bytearray(synthetic.image), md)


def deliver(world: World, cap: SealedCapture) -> list[Ack]:
    acks: list[Ack] = []
    for i, part in enumerate(cap.parts):
        acks += world.core.handle(T.part(DEVICE, cap.capture_id, i), bytes(part))
    return acks + world.core.handle(T.manifest(DEVICE, cap.capture_id), cap.manifest)


def cid(cap: SealedCapture) -> str:
    return cap.capture_id


def test_stored_once_everywhere_with_three_refs(world: World) -> None:
    cap = seal(world, 1)
    [ack] = deliver(world, cap)
    sop = dicom.instance_uid(DEVICE, cid(cap))
    assert ack.status == "stored", ack
    assert ack.ref is not None and set(ack.ref) == {"pacs", "pacs-dimse", "emr"}
    assert ack.ref["pacs"] == ack.ref["pacs-dimse"] == sop
    [again] = deliver(world, cap)  # the station re-sends: same refs, nothing new filed
    assert (again.status, again.ref) == ("stored", ack.ref)
    assert len(world.stow_pacs.find_instances(sop)) == 1
    assert len(world.dimse_pacs.find_instances(sop)) == 1
    docs = world.fhir.search(f"/DocumentReference?identifier={CAPTURE_SYSTEM}|{cid(cap)}")
    assert [f"DocumentReference/{d['id']}" for d in docs] == [ack.ref["emr"]]


def test_unknown_patient_is_quarantined_and_acked_stored(world: World) -> None:
    cap = seal(world, 2, patient="SYN-NOT-IN-EMR")
    [ack] = deliver(world, cap)
    assert ack.status == "stored" and ack.ref is not None
    assert ack.ref["emr"] == "quarantined"
    assert list(world.quarantine.rglob(f"{cid(cap)}*"))


def test_signed_void_reaches_every_sink(world: World) -> None:
    cap = seal(world, 3)
    [ack] = deliver(world, cap)
    assert ack.status == "stored" and ack.ref is not None
    event = {"event": "void", "at": "2026-03-02T10:00:00.000Z", "capture_id": cid(cap)}
    world.core.handle(T.event(DEVICE),
                      json.dumps(sign_event(event, world.device_key)).encode())
    note = dicom.rejection_note_uid(DEVICE, cid(cap))
    assert len(world.stow_pacs.find_instances(note)) == 1
    assert len(world.dimse_pacs.find_instances(note)) == 1
    assert world.fhir.request("GET", "/" + ack.ref["emr"])["status"] == "entered-in-error"


def test_no_patient_identifier_in_the_relay_logs(world: World,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    canary = "SYN-CANARY-5521"
    world.fhir.add_patient(canary, ISSUER)
    caplog.set_level(logging.DEBUG)
    cap = seal(world, 4, patient=canary)
    [ack] = deliver(world, cap)
    assert ack.status == "stored" and ack.ref is not None
    [inst] = world.stow_pacs.find_instances(ack.ref["pacs"])
    stored = json.dumps(world.stow_pacs.get(f"/instances/{inst['ID']}/simplified-tags"))
    assert canary in stored  # positive control: the scanner finds it where it must be
    assert caplog.records  # and the relay did log (ids, sizes, reason codes)
    assert canary not in caplog.text
    assert cid(cap) in caplog.text or any(cid(cap) in str(r.args) for r in caplog.records)


def test_unknown_patient_reaches_no_pacs(world: World) -> None:
    """The core asks FhirSink.check_patient before storing anywhere (issue 7 item 6)."""
    cap = seal(world, 5, patient="SYN-ALSO-NOT-IN-EMR")
    [ack] = deliver(world, cap)
    assert ack.status == "stored"
    sop = dicom.instance_uid(DEVICE, cid(cap))
    assert world.stow_pacs.find_instances(sop) == []
    assert world.dimse_pacs.find_instances(sop) == []
