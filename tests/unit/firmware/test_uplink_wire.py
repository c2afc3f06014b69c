"""What the station's uplink writes is what the relay reads (DESIGN §5): its status, its
audit events and its signed ``void``, read with the relay's own parsers and checks.

No broker and no delivery thread: the uplink is never started, and the jobs it posts
for its delivery thread are run here, in order.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from clinicam.common.clock import ManualClock
from clinicam.firmware.capture.vault import Vault
from clinicam.firmware.uplink.client import Uplink
from clinicam.protocol.events import AuditEvent
from clinicam.protocol.fields import utc_stamp
from clinicam.protocol.manifest import verify_event
from clinicam.protocol.reasons import OpenError
from clinicam.protocol.status import WILL, StationStatus
from clinicam.provisioning import identity
from clinicam.provisioning.site import Site

WALL = 1_800_000_000.0
CID = "ab" * 16


@pytest.fixture
def uplink(tmp_path: Path) -> Uplink:
    site = Site.create(tmp_path / "site", "Wire Clinic", ["127.0.0.1"], kem="X25519")
    ident = tmp_path / "identity"
    site.sign(identity.create_device_key(ident, "cart-3").read_bytes())
    identity.install(identity.InstallFiles.from_bundle(site.bundle("cart-3", tmp_path / "bundle")), ident)
    return Uplink(identity=identity.load_identity(ident), vault=Vault(), post=lambda _e: None,
                  clock=ManualClock(wall=WALL), rng=random.Random(5), boot_id="0f" * 16, firmware_version="1.2.3")


def sent_events(up: Uplink) -> list[dict[str, object]]:
    """Run what the uplink posted for its delivery thread; the events it keeps until acked."""
    while not up._jobs.empty():
        job = up._jobs.get_nowait()
        assert job is not None
        job()
    return up.outbox.due(everything=True)


def test_the_relay_keeps_the_stations_status_whole(uplink: Uplink) -> None:
    status = uplink.status()
    assert StationStatus.parse(status.payload()) == status
    assert status == StationStatus(state="offline", pending=0, pending_bytes=0, boot="0f" * 16, fw="1.2.3",
                                   uptime_s=0, cert_not_after=utc_stamp(uplink.identity.not_after.timestamp()),
                                   clock_synced=True)
    assert StationStatus.parse(WILL) == StationStatus(state="offline")


def test_the_relay_keeps_the_stations_events_whole(uplink: Uplink) -> None:
    uplink.publish_event("session-closed", session="12" * 16, reason="end", count=2)
    (body,) = sent_events(uplink)
    assert AuditEvent.from_dict(body).as_dict() == body
    assert (body["event"], body["at"], body["count"]) == ("session-closed", utc_stamp(WALL), 2)
    with pytest.raises(TypeError):  # a key DESIGN §5 does not define is refused at the source
        uplink.publish_event("session-closed", patient="x")


def test_the_stations_void_verifies_with_the_relays_check(uplink: Uplink) -> None:
    uplink.send_void(CID)
    (body,) = sent_events(uplink)
    cert = uplink.identity.cert
    unsigned = verify_event(body, cert)
    assert AuditEvent.from_dict(body) == AuditEvent.from_dict(unsigned) == AuditEvent(
        "void", utc_stamp(WALL), capture_id=CID, event_id=str(body["event_id"]))
    with pytest.raises(OpenError):  # control: the same check refuses an altered void
        verify_event({**body, "capture_id": "cd" * 16}, cert)
