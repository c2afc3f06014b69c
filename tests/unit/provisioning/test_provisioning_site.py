"""Site PKI round trip and refusals, on a fixed clock (no network, no sleeps)."""

from __future__ import annotations

import json
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from clinicam.common.errors import ProvisioningError
from clinicam.protocol.recipient import load_recipient_private, load_recipient_public
from clinicam.protocol.topics import DEFAULT_PREFIX
from clinicam.provisioning import identity, pki, report
from clinicam.provisioning.site import Site
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)


@pytest.fixture
def fresh(tmp_path: Path) -> Site:
    # One tier: the site CA signs stations (two tiers, the default, are tested in test_two_tier)
    return Site.create(
        tmp_path / "site", "Unit Clinic", ["broker.example", "10.0.0.5"], relays=2, kem="x25519", now=NOW, tiers=1
    )


def _station(tmp_path: Path, site: Site, name: str, now: datetime = NOW) -> Path:
    d = tmp_path / "stations" / name
    csr = identity.create_device_key(d, name)
    site.sign(csr.read_bytes(), now=now)
    identity.install(identity.InstallFiles.from_bundle(site.bundle(name, tmp_path / "b" / name, now=now)), d, now=now)
    return d


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_site_init_layout_and_secret_modes(fresh: Site):
    d = fresh.path
    for secret in (
        "ca/ca.key",
        "broker/broker.key",
        "relay/relay-1.key",
        "relay/relay-2.key",
        "relay/recipient.key",
        "ca/register.json",
    ):
        assert _mode(d / secret) == 0o600, secret
    for private_dir in ("ca", "relay"):
        assert _mode(d / private_dir) == 0o700
    # Mosquitto reads acl and crl.pem after dropping to its own user: the folder is
    # readable, the key alone is private (tests/integration/test_broker_install.py).
    assert _mode(d / "broker") == 0o755
    for public in ("acl", "crl.pem", "ca.pem", "broker.pem", "mosquitto.conf"):
        assert _mode(d / "broker" / public) == 0o644, public
    assert (d / "relay" / "ca.pem").read_bytes() == (d / "ca.pem").read_bytes()
    info = json.loads((d / "site.json").read_text())
    assert info["topic_prefix"] == DEFAULT_PREFIX
    assert info["broker"] == {"hosts": ["broker.example", "10.0.0.5"], "port": 8883}
    assert load_recipient_private((d / "relay/recipient.key").read_bytes()).kem == "X25519"
    assert info["recipient"] == load_recipient_public((d / "relay/recipient.pub").read_bytes()).fingerprint


def test_broker_certificate_is_server_auth_with_sans(fresh: Site):
    cert = pki.load_cert(fresh.broker_dir / "broker.pem")
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH]
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["broker.example"]
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["10.0.0.5"]
    cert.verify_directly_issued_by(fresh.ca)


def test_relay_certificates_are_client_auth(fresh: Site):
    for n in (1, 2):
        cert_path, _ = fresh.relay_files(n)
        cert = pki.load_cert(cert_path)
        assert pki.common_name(cert.subject, "relay") == f"relay-{n}"
        assert pki.has_client_auth(cert)


def test_site_init_refuses_to_overwrite_a_site(fresh: Site):
    with pytest.raises(ProvisioningError, match="already holds a site"):
        Site.create(fresh.path, "Again", ["b"], now=NOW)


def test_round_trip_device_key_sign_install_show(tmp_path: Path, fresh: Site):
    d = _station(tmp_path, fresh, "ward3-cart1")
    assert _mode(d / "device.key") == 0o600
    assert _mode(d) in (0o700, 0o750)
    ident = identity.load_identity(d)
    assert ident.device_id == "ward3-cart1"
    assert (ident.broker_host, ident.broker_port) == ("broker.example", 8883)
    assert ident.recipient.kem == "X25519"
    assert ident.ca == fresh.ca and ident.crl is not None
    assert pki.has_client_auth(ident.cert)
    assert ident.not_after == NOW + timedelta(days=397)
    rep = report.describe_identity(ident, now=NOW)
    text = "\n".join(rep.lines)
    assert "ward3-cart1" in text and pki.fingerprint(ident.cert) in text
    assert rep.warnings == []
    key_pem = (d / "device.key").read_bytes()
    assert key_pem.decode() not in text  # show never prints a key


def test_show_warns_under_thirty_days_and_when_expired(tmp_path: Path, fresh: Site):
    ident = identity.load_identity(_station(tmp_path, fresh, "station-w"))
    assert report.describe_identity(ident, now=ident.not_after - timedelta(days=31)).warnings == []
    near = report.describe_identity(ident, now=ident.not_after - timedelta(days=10))
    assert len(near.warnings) == 1 and "expires in 10 days" in near.warnings[0]
    past = report.describe_identity(ident, now=ident.not_after + timedelta(days=1))
    assert "EXPIRED" in past.warnings[0]
    site_rep = report.describe_site(fresh, now=ident.not_after - timedelta(days=10))
    assert any(w.startswith("station-w (device) expires") for w in site_rep.warnings)


def test_renew_then_revoke(tmp_path: Path, fresh: Site):
    d = _station(tmp_path, fresh, "station-r")
    csr = (d / "device.csr").read_bytes()
    first = pki.load_cert(d / "device.pem")
    renewed = fresh.renew(csr, now=NOW + timedelta(days=380))
    assert renewed.serial_number != first.serial_number
    assert renewed.public_key() == first.public_key()  # same key re-used
    revoked = fresh.revoke("station-r", now=NOW + timedelta(days=381))
    assert {r.serial for r in revoked} == {pki.serial_hex(c.serial_number) for c in (first, renewed)}
    crl = x509.load_pem_x509_crl(fresh.crl_pem.read_bytes())
    assert crl.is_signature_valid(fresh.ca.public_key())  # type: ignore[arg-type]
    for c in (first, renewed):
        assert crl.get_revoked_certificate_by_serial_number(c.serial_number) is not None
    assert (fresh.broker_dir / "crl.pem").read_bytes() == fresh.crl_pem.read_bytes()
    with pytest.raises(ProvisioningError, match="revoked"):
        fresh.renew(csr, now=NOW + timedelta(days=382))


def test_revoke_by_serial_only_that_certificate(tmp_path: Path, fresh: Site):
    d = _station(tmp_path, fresh, "station-s")
    first = pki.load_cert(d / "device.pem")
    renewed = fresh.renew((d / "device.csr").read_bytes(), now=NOW)
    fresh.revoke(first.serial_number.to_bytes(20).hex(":"), now=NOW)
    assert [r.serial for r in fresh.valid_records("station-s", NOW)] == [pki.serial_hex(renewed.serial_number)]
    with pytest.raises(ProvisioningError, match="nothing to revoke"):
        fresh.revoke("no-such-station", now=NOW)


@pytest.mark.parametrize("spelling", ["{:040x}", "0x{:x}", "{:X}"])
def test_revoke_accepts_a_serial_however_it_is_written(tmp_path: Path, fresh: Site, spelling: str):
    """Leading zeros, 0x and capitals: a serial copied from openssl or a CRL must match."""
    d = _station(tmp_path, fresh, "station-z")
    serial = pki.load_cert(d / "device.pem").serial_number
    (hit,) = fresh.revoke(spelling.format(serial), now=NOW)
    assert int(hit.serial, 16) == serial


def test_renew_window(tmp_path: Path, fresh: Site):
    d = _station(tmp_path, fresh, "station-late")
    csr = (d / "device.csr").read_bytes()
    expiry = pki.load_cert(d / "device.pem").not_valid_after_utc
    fresh.renew(csr, now=expiry + timedelta(days=29))  # expired, still inside the grace
    with pytest.raises(ProvisioningError, match="never issued"):
        fresh.renew(pki.make_csr(pki.new_key(), "station-new").public_bytes(serialization.Encoding.PEM), now=NOW)


def test_renew_refused_long_after_expiry(tmp_path: Path, fresh: Site):
    d = _station(tmp_path, fresh, "station-old")
    expiry = pki.load_cert(d / "device.pem").not_valid_after_utc
    with pytest.raises(ProvisioningError, match="more than 30 days"):
        fresh.renew((d / "device.csr").read_bytes(), now=expiry + timedelta(days=31))


def test_sign_refuses_duplicate_id(tmp_path: Path, fresh: Site):
    d = _station(tmp_path, fresh, "station-dup")
    other = identity.create_device_key(tmp_path / "impostor", "station-dup")
    with pytest.raises(ProvisioningError, match="already has a valid certificate"):
        fresh.sign(other.read_bytes(), now=NOW)
    assert (d / "device.pem").exists()


@pytest.mark.parametrize("bad", ["ab", "Ward3", "ward_3", "ward 3", "x" * 65, "wärd3", ""])
def test_malformed_ids_are_refused(tmp_path: Path, fresh: Site, bad: str):
    with pytest.raises(ProvisioningError, match="malformed identity"):
        identity.create_device_key(tmp_path / "k", bad)
    if bad and len(bad) <= 64:  # longer CNs cannot even be encoded in a CSR
        csr = pki.make_csr(pki.new_key(), bad).public_bytes(serialization.Encoding.PEM)
        with pytest.raises(ProvisioningError, match="malformed identity"):
            fresh.sign(csr, now=NOW)


@pytest.mark.parametrize("reserved", ["relay-9", "relay", "broker", "broker2", "admin-x"])
def test_reserved_ids_are_refused(tmp_path: Path, fresh: Site, reserved: str):
    with pytest.raises(ProvisioningError, match="reserved"):
        identity.create_device_key(tmp_path / "k", reserved)
    csr = pki.make_csr(pki.new_key(), reserved).public_bytes(serialization.Encoding.PEM)
    with pytest.raises(ProvisioningError, match="reserved"):
        fresh.sign(csr, now=NOW)


def test_csr_with_bad_signature_is_refused(fresh: Site):
    csr = pki.make_csr(pki.new_key(), "station-t")
    der = bytearray(csr.public_bytes(serialization.Encoding.DER))
    der[-5] ^= 0x01  # inside the ECDSA signature
    tampered = x509.load_der_x509_csr(bytes(der)).public_bytes(serialization.Encoding.PEM)
    fresh.sign(csr.public_bytes(serialization.Encoding.PEM), now=NOW)  # positive control
    with pytest.raises(ProvisioningError, match="signature does not verify"):
        fresh.sign(tampered, now=NOW)


def test_not_a_csr_is_refused(fresh: Site):
    with pytest.raises(ProvisioningError, match="not a PEM certificate signing request"):
        fresh.sign(b"hello", now=NOW)


def test_certificate_may_not_outlive_the_ca(fresh: Site):
    csr = pki.make_csr(pki.new_key(), "station-long").public_bytes(serialization.Encoding.PEM)
    with pytest.raises(ProvisioningError, match="outlive the site CA"):
        fresh.sign(csr, now=NOW, days=4000)


def test_damaged_register_is_a_clear_error(fresh: Site):
    fresh.register_path.write_text('{"site": "x", "certificates": [{"id": "a"}]}')
    with pytest.raises(ProvisioningError, match=r"register\.json is damaged"):
        fresh.records()


def test_reissue_broker_and_relay(fresh: Site):
    old_broker = pki.load_cert(fresh.broker_dir / "broker.pem")
    old_relay = pki.load_cert(fresh.relay_files(2)[0])
    later = NOW + timedelta(days=380)
    fresh.reissue("broker", now=later)
    fresh.reissue("relay-2", now=later)
    broker = pki.load_cert(fresh.broker_dir / "broker.pem")
    relay = pki.load_cert(fresh.relay_files(2)[0])
    assert broker.not_valid_after_utc == later + timedelta(days=397)
    assert broker.public_key() != old_broker.public_key()  # a new key, not only a new cert
    assert pki.same_key(relay, pki.load_key(fresh.relay_files(2)[1]))
    assert relay.serial_number != old_relay.serial_number and pki.has_client_auth(relay)
    for bad in ("relay-3", "station-a", "relay-x"):
        with pytest.raises(ProvisioningError, match="not a service of this site"):
            fresh.reissue(bad, now=later)


def test_only_station_signing_sets_the_station_profile(tmp_path: Path, fresh: Site):
    from clinicam.protocol import certprofile
    from clinicam.provisioning.operators import issue_operator

    d = _station(tmp_path, fresh, "station-p")
    csr = (d / "device.csr").read_bytes()
    signed = pki.load_cert(d / identity.CERT)
    renewed = fresh.renew(csr, now=NOW + timedelta(days=300))
    assert [certprofile.profile(c) for c in (signed, renewed)] == ["station", "station"]
    op = issue_operator(fresh, "jane", tmp_path / "op", now=NOW)
    services = [pki.load_cert(op.cert), pki.load_cert(fresh.relay_files(1)[0]),
                pki.load_cert(fresh.broker_dir / "broker.pem")]
    assert [certprofile.has_station_policy(c) for c in services] == [False, False, False]
    assert [certprofile.profile(c) for c in services] == ["other", "other", "other"]
    with pytest.raises(ProvisioningError, match="cannot be a station"):
        pki.issue(fresh.ca_key(), fresh.ca, pki.new_key().public_key(), "operator-x", now=NOW, station=True)
