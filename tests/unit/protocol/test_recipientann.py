"""Recipient-key announcements (issue 17): only the site's issuing CA under the pinned
root may move a station to a new key, never to an older announcement, never to another
KEM; what a station adopts it keeps for its next boot. Fixed clock, real files."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from clinicam.firmware.uplink.recipient import RecipientFollower
from clinicam.protocol import recipientann as ra
from clinicam.protocol.recipient import generate_recipient_key, load_recipient_public
from clinicam.provisioning.site import Site

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)


def _site(path: Path, kem: str = "x25519") -> Site:
    return Site.create(path, "Unit Clinic", ["broker.example"], relays=1, kem=kem, now=NOW, tiers=2)


def _announce(site: Site, pem: bytes, at: datetime = NOW) -> bytes:
    assert site.issuing is not None
    return ra.build_announcement(recipient_pem=pem, at=at, issuing_key=site.issuing_key(),  # type: ignore[arg-type]
                                 issuing_cert=site.issuing)


def test_a_station_adopts_a_newer_announcement_and_keeps_it(tmp_path: Path):
    site = _site(tmp_path / "s")
    old = load_recipient_public((site.relay_dir / "recipient.pub").read_bytes())
    new = generate_recipient_key("X25519")
    ident = tmp_path / "identity"
    ident.mkdir()
    follower = RecipientFollower(ident, site.ca, old, lambda: NOW)
    assert follower.handle(_announce(site, old.public_pem())) is None  # the current key: nothing to do
    adopted = follower.handle(_announce(site, new.public_pem(), NOW + timedelta(minutes=1)))
    assert adopted is not None and adopted.fingerprint == new.fingerprint
    assert (ident / "recipient.pub").read_bytes() == new.public_pem()
    assert json.loads((ident / "recipient.json").read_text())["fingerprint"] == new.fingerprint
    # A replay of the older announcement (a stale retained copy) never moves it back.
    fresh = RecipientFollower(ident, site.ca, adopted, lambda: NOW)
    assert fresh.handle(_announce(site, old.public_pem(), NOW)) is None
    assert (ident / "recipient.pub").read_bytes() == new.public_pem()


def test_forged_tampered_or_kem_changing_announcements_are_refused(tmp_path: Path):
    site, other = _site(tmp_path / "s"), _site(tmp_path / "o")
    pem = generate_recipient_key("X25519").public_pem()
    current = load_recipient_public((site.relay_dir / "recipient.pub").read_bytes())
    good = _announce(site, pem)
    assert ra.parse_announcement(good, root=site.ca, now=NOW, current=current)  # control
    with pytest.raises(ra.AnnouncementError, match="root"):
        ra.parse_announcement(_announce(other, pem), root=site.ca, now=NOW)
    obj = json.loads(good)
    obj["recipient"] = generate_recipient_key("X25519").public_pem().decode()
    with pytest.raises(ra.AnnouncementError, match="signature"):
        ra.parse_announcement(json.dumps(obj).encode(), root=site.ca, now=NOW)
    hybrid = generate_recipient_key("MLKEM768-X25519").public_pem()
    with pytest.raises(ra.AnnouncementError, match="KEM"):
        ra.parse_announcement(_announce(site, hybrid), root=site.ca, now=NOW, current=current)
    with pytest.raises(ra.AnnouncementError, match="valid now"):
        ra.parse_announcement(good, root=site.ca, now=NOW + timedelta(days=3650))
    for bad in (b"", b"{}", b"\xff", b"x" * 70000):
        with pytest.raises(ra.AnnouncementError):
            ra.parse_announcement(bad, root=site.ca, now=NOW)
