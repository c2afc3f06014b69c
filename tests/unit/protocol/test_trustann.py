"""CA rotation's trust update (issue 17): only a root the receiver trusts — or one it
cross-certified — may change a receiver's roots; a station installs an update only when
it is newer and still covers its own certificate, and renews when its issuing CA is not
the update's. Real site files (``provision rotate-ca``), fixed clock."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from clinicam.common.errors import ProvisioningError
from clinicam.firmware.selftest.identity import IdentityReview
from clinicam.firmware.uplink.renewal import RenewalAgent
from clinicam.firmware.uplink.trust import TrustFollower, held_number, trust_status
from clinicam.protocol import chain as trust
from clinicam.protocol import renewal as rn
from clinicam.protocol import trustann as ta
from clinicam.provisioning import identity, pki, report, rotation
from clinicam.provisioning.site import Site
from cryptography.hazmat.primitives import hashes

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)


def _site(path: Path) -> Site:
    return Site.create(path, "Unit Clinic", ["broker.example"], relays=1, kem="x25519", now=NOW, tiers=2)


def _station(site: Site, path: Path, device: str = "unit-cart1") -> Path:
    csr = identity.create_device_key(path, device)
    site.sign(csr.read_bytes(), now=NOW)
    identity.install(identity.InstallFiles.from_bundle(site.bundle(device, path.parent / f"{device}-bundle",
                                                                   now=NOW)), path, now=NOW)
    return path


def test_begin_then_finish_moves_the_site_and_a_station_follows_both_updates(tmp_path: Path):
    site = _site(tmp_path / "s")
    r1 = site.ca
    d = _station(site, tmp_path / "st" / "identity")
    first = rotation.begin(site, now=NOW)
    site = Site(site.path)
    r2, i2 = site.ca, site.issuing
    assert i2 is not None and r2 != r1 and [c.subject for c in first.roots] == [r2.subject, r1.subject]
    update = ta.parse_trust(first.trust_file.read_bytes(), [r1], NOW)  # signed by R1: R1 holders verify it
    assert update.number == 1 and ta.same_cert(update.issuing, i2) and update.crls

    # The station (R1 only) installs it, keeps its I1 certificate valid, and must renew.
    follower = TrustFollower(d, lambda: NOW)
    current = identity.load_identity(d)
    outcome = follower.handle(first.trust_file.read_bytes(), current)
    assert outcome is not None and outcome.installed and outcome.renew
    after = identity.load_identity(d)
    assert [c.subject for c in after.anchors] == [r2.subject, r1.subject] and held_number(d) == 1
    assert trust_status(after)["root"] == r1.fingerprint(hashes.SHA256()).hex()
    again = follower.handle(first.trust_file.read_bytes(), after)  # the retained copy after a reboot
    assert again is not None and not again.installed and again.renew

    # Renewal under I2 (as the registrar does): the chain checks against both roots.
    agent = RenewalAgent(d, "unit-cart1", utc=lambda: NOW)
    agent.force()
    assert agent.due(after.not_after)  # forced: long before the 60-day margin
    agent.request(after)
    key = pki.load_key(d / "next.key")
    leaf = pki.issue(site.issuing_key(), i2, key.public_key(), "unit-cart1", now=NOW, station=True)
    req_id = json.loads((d / "next.json").read_text())["req_id"]
    chain = (pki.cert_pem(leaf) + pki.cert_pem(i2) + pki.cert_pem(r2)).decode()
    assert agent.answer(rn.build_answer(req_id, "issued", cert_pem=chain), after)
    renewed = agent.promote()
    assert renewed.cert.issuer == i2.subject and not agent.forced
    assert trust.TrustStore(renewed.anchors, renewed.chain).path(renewed.cert)[-1] == r2
    # selftest: the chain to the new root, and that ca.pem holds two roots for now
    line = IdentityReview(d, NOW).check_certificate()
    assert line.status == "PASS" and "clinicam CA Unit Clinic 2" in line.detail and "2 roots" in line.detail

    # Finish: signed by R2, cross-certified from R1 — a receiver holding R1 alone verifies it.
    site.records()  # the register knows only the admin-signed certificate: the station looks behind
    with pytest.raises(ProvisioningError, match="still hold a certificate of the old CA"):
        rotation.finish(site, now=NOW + timedelta(hours=1))
    last = rotation.finish(site, now=NOW + timedelta(hours=1), force=True)
    payload = last.trust_file.read_bytes()
    assert ta.parse_trust(payload, [r1], NOW + timedelta(hours=1)).roots == [r2]
    assert trust.load_certs(site.ca_pem.read_bytes(), "ca.pem") == [r2]
    broker = pki.load_cert(site.broker_dir / "broker.pem")
    broker.verify_directly_issued_by(r2)
    outcome = follower.handle(payload, renewed)
    assert outcome is not None and outcome.installed and not outcome.renew
    assert [c.subject for c in identity.load_identity(d).anchors] == [r2.subject]


def test_an_update_not_signed_by_a_trusted_root_or_older_or_not_covering_is_not_installed(tmp_path: Path):
    site = _site(tmp_path / "s")
    r1 = site.ca
    d = _station(site, tmp_path / "st" / "identity")
    ca_before = (d / "ca.pem").read_bytes()
    # A root nobody here trusts signs an update naming itself: refused.
    rogue_key = pki.new_key()
    rogue = pki.make_ca(rogue_key, "Rogue", now=NOW, path_length=1)
    rogue_issuing = pki.make_issuing_ca(rogue_key, rogue, pki.new_key(), "Rogue", 1, now=NOW)
    forged = ta.build_trust(number=9, at=NOW, roots=[rogue, r1], issuing=rogue_issuing, crls=[], cross=[],
                            signer=rogue, signer_key=rogue_key)
    with pytest.raises(ta.TrustUpdateError, match="signer is not a root this receiver trusts"):
        ta.parse_trust(forged, [r1], NOW)
    assert TrustFollower(d, lambda: NOW).handle(forged, identity.load_identity(d)) is None
    # Tampering after signing: refused.
    step = rotation.begin(site, now=NOW)
    first = step.trust_file.read_bytes()
    obj = json.loads(first)
    obj["number"] = 7
    with pytest.raises(ta.TrustUpdateError, match="signature"):
        ta.parse_trust(json.dumps(obj).encode(), [r1], NOW)
    # An update whose roots would not cover the station's certificate is not installed.
    site = Site(site.path)
    last = rotation.finish(site, now=NOW, force=True)
    follower = TrustFollower(d, lambda: NOW)
    outcome = follower.handle(last.trust_file.read_bytes(), identity.load_identity(d))
    assert outcome is not None and not outcome.installed and outcome.renew
    assert (d / "ca.pem").read_bytes() == ca_before
    # Positive control, then a stale copy: the newer one installs, the older is ignored.
    assert follower.handle(first, identity.load_identity(d)).installed  # type: ignore[union-attr]
    assert held_number(d) == 1
    (d / "trust.json").write_text(json.dumps({"number": 5}))
    assert follower.handle(first, identity.load_identity(d)) is None


def test_rotation_needs_two_tiers_and_one_at_a_time(tmp_path: Path):
    one = Site.create(tmp_path / "one", "Unit Clinic", ["broker.example"], relays=1, kem="x25519", now=NOW, tiers=1)
    with pytest.raises(ProvisioningError, match="two-tier"):
        rotation.begin(one, now=NOW)
    site = _site(tmp_path / "s")
    with pytest.raises(ProvisioningError, match="no CA rotation"):
        rotation.finish(site, now=NOW)
    assert not [ln for ln in report.describe_site(site, NOW).lines if ln.startswith("CA rotation")]
    rotation.begin(site, now=NOW)
    assert [ln for ln in report.describe_site(Site(site.path), NOW).lines if ln.startswith("CA rotation")]
    with pytest.raises(ProvisioningError, match="already under way"):
        rotation.begin(Site(site.path), now=NOW)
    with pytest.raises(ProvisioningError, match="broker keeps its certificate from the old root"):
        Site(site.path).reissue("broker", now=NOW)
