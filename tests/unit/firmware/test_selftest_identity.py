"""Selftest of identity files, certificate, CA, recipient key and CRL, judged at an injected time.

Identities are built here with ``clinicam.provisioning.pki`` (no site, no network), so
each test changes exactly one thing and the time a certificate is judged at is exact.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from pathlib import Path

import pytest
from clinicam.firmware.selftest.identity import IdentityReview
from clinicam.protocol.recipient import generate_recipient_key, load_recipient_public
from clinicam.provisioning import identity, pki

NOW = dt.datetime(2026, 11, 26, 12, 0, tzinfo=dt.UTC)


class Ident:
    """An identity directory in ``tmp_path`` with its CA key kept for the test."""

    def __init__(self, root: Path, *, device: str = "ward3-cart1", days: int = 397, server: bool = False,
                 station: bool | None = None) -> None:
        self.dir = root / "identity"
        self.ca_key, self.key = pki.new_key(), pki.new_key()
        self.ca = pki.make_ca(self.ca_key, "Unit Clinic", now=NOW - dt.timedelta(days=30))
        hosts = ["broker.example"] if server else []
        if station is None:
            station = not server and not device.startswith(pki.RESERVED_PREFIXES)
        self.cert = pki.issue(self.ca_key, self.ca, self.key.public_key(), device, now=NOW, days=days,
                              server_hosts=hosts, station=station)
        self.dir.mkdir(mode=0o700, parents=True)
        pki.write_private(self.dir / identity.KEY, pki.key_pem(self.key))
        pki.write_public(self.dir / identity.CERT, pki.cert_pem(self.cert))
        pki.write_public(self.dir / identity.CA, pki.cert_pem(self.ca))
        self.recipient = generate_recipient_key("X25519")
        pki.write_public(self.dir / identity.RECIPIENT, self.recipient.public_pem())
        pki.write_public(self.dir / identity.BROKER, json.dumps({"host": "broker.example", "port": 8883}).encode())

    def review(self, now: dt.datetime = NOW) -> IdentityReview:
        return IdentityReview(self.dir, now)

    def crl(self, serials: list[int], *, ca_key: pki.PrivateKey | None = None, days: int = 30) -> None:
        crl = pki.make_crl(ca_key or self.ca_key, self.ca, [(s, NOW) for s in serials], now=NOW, days=days)
        pki.write_public(self.dir / identity.CRL, pki.crl_pem(crl))


@pytest.fixture
def ident(tmp_path: Path) -> Ident:
    return Ident(tmp_path)


def _all(review: IdentityReview) -> dict[str, str]:
    return {name: f"{(r := check()).status} {r.detail}" for name, check in review.checks()}


def test_a_good_identity_passes_every_check(ident):
    lines = _all(ident.review())
    assert all(line.startswith("PASS") for line in lines.values()), lines
    assert lines["certificate"] == (
        "PASS ward3-cart1, issued by 'clinicam CA Unit Clinic', valid until 2027-12-28 (397 days)")
    assert lines["recipient"] == (f"PASS X25519, fingerprint {ident.recipient.fingerprint}: new captures are "
                                  "sealed to it; as installed (no rotation announcement adopted)")
    assert lines["ca"] == "PASS 'clinicam CA Unit Clinic', valid until 2036-10-24"
    assert lines["crl"].startswith("PASS none installed")


def test_key_readable_by_others_fails(ident):
    os.chmod(ident.dir / identity.KEY, 0o640)
    r = ident.review().check_files()
    assert (r.status, r.detail) == ("FAIL", "device.key is mode 0640, open to group or others")
    assert r.remedy == f"chmod 600 {ident.dir / identity.KEY}"


def test_world_writable_directory_and_group_writable_file_fail(ident):
    os.chmod(ident.dir, 0o777)
    os.chmod(ident.dir / identity.CA, 0o664)
    r = ident.review().check_files()
    assert r.status == "FAIL"
    assert r.detail == f"{ident.dir} is world-writable (0777); ca.pem is writable by group or others"
    assert r.remedy == f"chmod 700 {ident.dir}; chmod 644 {ident.dir / identity.CA}"


def test_missing_files_and_bad_broker_json(ident):
    (ident.dir / identity.RECIPIENT).unlink()
    (ident.dir / identity.BROKER).write_text('{"host": "x"}')
    review = ident.review()
    r = review.check_files()
    assert r.detail == f"missing in {ident.dir}: recipient.pub; broker.json is not JSON {{\"host\", \"port\"}}"
    assert review.broker is None
    assert review.check_recipient().detail == "recipient.pub is missing"


def test_broker_json_is_read(ident):
    review = ident.review()
    review.check_files()
    assert review.broker == ("broker.example", 8883)


@pytest.mark.parametrize(
    ("now", "expected"),
    [
        (NOW + dt.timedelta(days=380), "WARN ward3-cart1: expires 2027-12-28 (in 17 days)"),
        (NOW + dt.timedelta(days=400), "FAIL expired 2027-12-28 (3 days ago)"),
        (NOW - dt.timedelta(days=2), "FAIL not valid before 2026-11-26 11:55Z (in 1 day)"),
        (NOW + dt.timedelta(days=367), "PASS ward3-cart1, issued by 'clinicam CA Unit Clinic', "
                                       "valid until 2027-12-28 (30 days)"),
    ],
)
def test_certificate_validity_at_a_given_time(ident, now, expected):
    r = ident.review(now).check_certificate()
    assert f"{r.status} {r.detail}" == expected


def test_expired_certificate_remedy_names_renew_and_install(ident):
    r = ident.review(NOW + dt.timedelta(days=400)).check_certificate()
    assert r.remedy.startswith(f"renew: clinicam provision renew SITE {ident.dir / identity.CSR} --out device.pem")
    assert f"--identity-dir {ident.dir}" in r.remedy


def test_server_certificate_is_not_a_client_certificate(tmp_path):
    r = Ident(tmp_path, server=True).review().check_certificate()
    assert (r.status, r.detail) == ("FAIL", "not a client certificate (no clientAuth)")


def test_certificate_of_another_key_fails(ident):
    pki.write_private(ident.dir / identity.KEY, pki.key_pem(pki.new_key()))
    r = ident.review().check_certificate()
    assert (r.status, r.detail) == ("FAIL", "device.pem does not belong to device.key")


def test_certificate_from_another_ca_fails(ident, tmp_path):
    other = Ident(tmp_path / "other")
    pki.write_public(ident.dir / identity.CA, pki.cert_pem(other.ca))  # same CA name, other key
    r = ident.review().check_certificate()
    assert r.status == "FAIL"
    assert r.detail.startswith("not issued by the site CA in ca.pem")


def test_reserved_common_name_fails(tmp_path):
    r = Ident(tmp_path, device="relay-9").review().check_certificate()
    assert r.status == "FAIL"
    assert "reserved" in r.detail


def test_ca_that_is_not_a_ca_fails(ident):
    pki.write_public(ident.dir / identity.CA, pki.cert_pem(ident.cert))
    r = ident.review().check_ca()
    assert (r.status, r.detail) == ("FAIL", "ca.pem ('ward3-cart1') is not a CA certificate")


def test_crl_listing_this_station_fails(ident):
    ident.crl([ident.cert.serial_number])
    r = ident.review().check_crl()
    assert r.status == "FAIL"
    assert r.detail == (f"this station's certificate (serial {ident.cert.serial_number:x}) "
                        "was revoked on 2026-11-26")


def test_crl_listing_others_passes_and_stale_crl_warns(ident):
    ident.crl([12345])
    assert ident.review().check_crl().detail == "1 revoked, this station not among them"
    stale = ident.review(NOW + dt.timedelta(days=31)).check_crl()
    assert (stale.status, stale.detail) == ("WARN", "stale since 2026-12-26 (1 revoked)")


def test_crl_not_signed_by_the_ca_fails(ident):
    ident.crl([], ca_key=pki.new_key())
    r = ident.review().check_crl()
    assert (r.status, r.detail) == ("FAIL", "crl.pem is not signed by the site CA in ca.pem")


def test_any_device_id_reads_an_expired_certificate(ident):
    review = ident.review(NOW + dt.timedelta(days=400))
    assert review.check_certificate().status == "FAIL"
    assert review.device_id is None
    assert review.any_device_id() == "ward3-cart1"


def test_pre_policy_certificate_warns_to_renew(tmp_path):
    r = Ident(tmp_path, station=False).review().check_certificate()
    assert (r.status, r.detail) == ("WARN", "ward3-cart1: issued before the station certificate profile; "
                                            "the relay files its photos only during a grace period")
    assert "renew" in r.remedy


def _announce(ident: Ident, at: dt.datetime) -> str:
    """The station's own follower adopts a signed announcement of a new key; its fingerprint."""
    from clinicam.firmware.uplink.recipient import RecipientFollower
    from clinicam.protocol import recipientann as ra

    root_key, issuing_key = pki.new_key(), pki.new_key()
    root = pki.make_ca(root_key, "Unit Clinic", now=NOW - dt.timedelta(days=30), path_length=1)
    issuing = pki.make_issuing_ca(root_key, root, issuing_key, "Unit Clinic", 1, now=NOW - dt.timedelta(days=1))
    new = generate_recipient_key("X25519")
    payload = ra.build_announcement(recipient_pem=new.public_pem(), at=at, issuing_key=issuing_key,
                                    issuing_cert=issuing)
    current = load_recipient_public(ident.recipient.public_pem())
    follower = RecipientFollower(ident.dir, root, current, lambda: NOW)
    assert follower.handle(payload) is not None
    return new.fingerprint


def test_the_recipient_line_names_the_key_and_the_verified_announcement_it_came_from(ident):
    fingerprint = _announce(ident, NOW - dt.timedelta(hours=1))
    r = ident.review().check_recipient()
    assert r.status == "PASS" and f"fingerprint {fingerprint}: new captures are sealed to it" in r.detail
    assert r.detail.endswith("from the site's verified rotation announcement of 2026-11-26T11:00:00.000Z")
    # recipient.pub replaced by hand after the announcement: said, not hidden.
    pki.write_public(ident.dir / identity.RECIPIENT, generate_recipient_key("X25519").public_pem())
    r = ident.review().check_recipient()
    assert r.status == "WARN"
    assert f"the verified announcement of 2026-11-26T11:00:00.000Z named {fingerprint}" in r.detail
