"""Two-tier site PKI (issue 17): offline root, online issuing CA for stations, migration,
a passphrase on the root key, and every verifier walking the chain. Fixed clock."""

from __future__ import annotations

import contextlib
import io
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from clinicam.common.errors import ConfigError, ProvisioningError
from clinicam.firmware.selftest.identity import IdentityReview
from clinicam.protocol import certprofile
from clinicam.protocol import chain as trust
from clinicam.protocol.reasons import OpenError
from clinicam.protocol.recipient import load_recipient_private
from clinicam.protocol.sealing import Sealer, open_capture
from clinicam.provisioning import identity, pki
from clinicam.provisioning.site import Site
from clinicam.tools.cli import main as clinicam_main
from cryptography import x509

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
META = {"patient": {"id": "SYN-TWO-TIER-1", "issuer": "GS1", "encounter": None},
        "image": {"media_type": "image/jpeg", "width": 4, "height": 3}}


def _create(path: Path, **kw: object) -> Site:
    kw.setdefault("tiers", 1)  # a single-tier site unless the test asks for two (the default of site-init)
    return Site.create(path, "Unit Clinic", ["broker.example"], relays=1, kem="x25519", now=NOW, **kw)  # type: ignore[arg-type]


def _station(tmp_path: Path, site: Site, name: str) -> Path:
    d = tmp_path / "stations" / name
    csr = identity.create_device_key(d, name)
    site.sign(csr.read_bytes(), now=NOW)
    bundle = site.bundle(name, tmp_path / "b" / name, now=NOW)
    identity.install(identity.InstallFiles.from_bundle(bundle), d, now=NOW)
    return d


def _cli(*args: str) -> tuple[int, str]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        rc = clinicam_main(["provision", *args])
    return rc, out.getvalue()


def _store(site: Site, crls: bool = True) -> trust.TrustStore:
    return trust.TrustStore([site.ca], [site.issuing] if site.issuing else [],
                            trust.load_crls(site.crl_pem.read_bytes(), "crl.pem") if crls else ())


# -- a new two-tier site ----------------------------------------------------------------


def test_two_tier_site_signs_stations_with_the_issuing_ca_and_services_with_the_root(tmp_path: Path):
    site = _create(tmp_path / "site", tiers=2)
    assert site.tiers == 2 and site.issuing is not None
    root_bc = site.ca.extensions.get_extension_for_class(x509.BasicConstraints).value
    assert root_bc.ca and root_bc.path_length == 1
    d = _station(tmp_path, site, "ward3-cart1")
    ident = identity.load_identity(d)
    assert ident.cert.issuer == site.issuing.subject
    assert certprofile.has_station_policy(ident.cert)
    assert [c.subject for c in ident.chain] == [site.issuing.subject]
    assert ident.cert_pem.count(b"BEGIN CERTIFICATE") == 1  # the manifest's cert is the leaf alone
    assert (d / identity.CERT).read_bytes().count(b"BEGIN CERTIFICATE") == 2  # TLS sends the chain
    assert _store(site).verify(ident.cert, NOW) == [site.issuing, site.ca]
    relay_cert = pki.load_cert(site.relay_files(1)[0])
    assert relay_cert.issuer == site.ca.subject  # services: the root, never the online CA
    assert _store(site).verify(relay_cert, NOW) == [site.ca]
    broker_ca = trust.load_certs((site.broker_dir / "ca.pem").read_bytes(), "broker/ca.pem")
    assert [c.subject for c in broker_ca] == [site.ca.subject, site.issuing.subject]
    crls = trust.load_crls(site.crl_pem.read_bytes(), "crl.pem")
    assert [c.issuer for c in crls] == [site.ca.subject, site.issuing.subject]
    assert (site.broker_dir / "crl.pem").read_bytes() == site.crl_pem.read_bytes()


def test_single_tier_site_is_unchanged(tmp_path: Path):
    site = _create(tmp_path / "site")
    assert site.tiers == 1 and site.issuing is None and not site.chain_pem.exists()
    d = _station(tmp_path, site, "ward3-cart1")
    ident = identity.load_identity(d)
    assert ident.cert.issuer == site.ca.subject and ident.chain == ()
    assert len(trust.load_crls(site.crl_pem.read_bytes(), "crl.pem")) == 1


def test_revoking_a_station_needs_only_the_issuing_key_and_lists_it_in_the_issuing_crl(tmp_path: Path):
    secret = tmp_path / "pass"
    secret.write_text("correct horse battery\n")
    site = _create(tmp_path / "site", tiers=2, passphrase=b"correct horse battery")
    d = _station(tmp_path, site, "ward3-cart1")  # station signing: no root passphrase asked
    cert = identity.load_identity(d).cert
    assert _store(site).verify(cert, NOW)  # control
    root_crl_before = (site.path / "ca" / "crl-root.pem").read_bytes()
    Site(site.path).revoke("ward3-cart1", now=NOW + timedelta(minutes=1))  # no passphrase given
    assert (site.path / "ca" / "crl-root.pem").read_bytes() == root_crl_before
    with pytest.raises(trust.ChainError, match="revoked"):
        _store(site).verify(cert, NOW + timedelta(minutes=2))
    with pytest.raises(ProvisioningError, match="protected by a passphrase"):
        Site(site.path).revoke("relay-1")  # a root-issued service needs the root


# -- the root's passphrase --------------------------------------------------------------


def test_root_key_passphrase_is_required_for_root_signing(tmp_path: Path):
    site = _create(tmp_path / "site", passphrase=b"correct horse battery")
    assert pki.is_encrypted_pem((site.path / "ca" / "ca.key").read_bytes())
    with pytest.raises(ProvisioningError, match="protected by a passphrase"):
        Site(site.path).reissue("relay-1", now=NOW)
    with pytest.raises(ProvisioningError, match="wrong passphrase"):
        Site(site.path, passphrase=b"wrong").reissue("relay-1", now=NOW)
    Site(site.path, passphrase=b"correct horse battery").reissue("relay-1", now=NOW)  # control
    asked: list[int] = []
    lazy = Site(site.path, ask_passphrase=lambda: asked.append(1) or b"correct horse battery")
    lazy.reissue("broker", now=NOW)
    assert asked == [1]


def test_cli_passphrase_file_and_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    secret = tmp_path / "pass"
    secret.write_text("correct horse battery\n")
    site_dir = tmp_path / "site"
    rc, out = _cli("site-init", str(site_dir), "--site", "Unit", "--broker-host", "b.example",
                   "--kem", "x25519", "--tiers", "2", "--ca-passphrase-file", str(secret))
    assert rc == 0, out
    assert "registrar" in out
    monkeypatch.delenv("CLINICAM_CA_PASSPHRASE_FILE", raising=False)
    monkeypatch.setattr("sys.stdin", io.StringIO(""))  # not a terminal: nobody to ask
    rc, out = _cli("reissue", str(site_dir), "relay-1")
    assert rc == 1 and "CLINICAM_CA_PASSPHRASE_FILE" in out and "Traceback" not in out
    monkeypatch.setenv("CLINICAM_CA_PASSPHRASE_FILE", str(secret))
    rc, out = _cli("reissue", str(site_dir), "relay-1")
    assert rc == 0, out


# -- migration --------------------------------------------------------------------------


def test_two_tier_migrates_a_single_tier_site_without_breaking_its_stations(tmp_path: Path):
    site = _create(tmp_path / "site")
    old = identity.load_identity(_station(tmp_path, site, "ward3-cart1")).cert
    root_before = site.ca
    site.two_tier(now=NOW)
    site = Site(site.path)
    assert site.tiers == 2 and site.issuing is not None
    assert site.ca.subject == root_before.subject and site.ca.public_key() == root_before.public_key()
    assert site.ca.not_valid_after_utc == root_before.not_valid_after_utc
    assert _store(site).verify(old, NOW) == [site.ca]  # signed before: still valid, directly
    new = identity.load_identity(_station(tmp_path, site, "ward3-cart2")).cert
    assert _store(site).verify(new, NOW) == [site.issuing, site.ca]
    # The old root (path length 0) must not be used for the new chain: OpenSSL would refuse it.
    with pytest.raises(trust.ChainError, match="path length 0"):
        trust.TrustStore([root_before], [site.issuing]).path(new, NOW)
    rc, out = _cli("two-tier", str(site.path))
    assert rc == 1 and "already has two tiers" in out


def test_two_tier_command_says_what_to_copy(tmp_path: Path):
    rc, out = _cli("site-init", str(tmp_path / "site"), "--site", "Unit", "--broker-host", "b.example",
                   "--kem", "x25519", "--tiers", "1")
    assert rc == 0, out
    rc, out = _cli("two-tier", str(tmp_path / "site"))
    assert rc == 0, out
    assert "restart" in out and "[identity] chain" in out and "registrar" in out
    assert Site(tmp_path / "site").tiers == 2


# -- verifiers --------------------------------------------------------------------------


def test_chain_refuses_foreign_and_non_ca_issuers_and_needs_the_issuers_crl(tmp_path: Path):
    site = _create(tmp_path / "site", tiers=2)
    other = _create(tmp_path / "other", tiers=2)
    cert = identity.load_identity(_station(tmp_path, site, "ward3-cart1")).cert
    assert site.issuing is not None and other.issuing is not None
    with pytest.raises(trust.ChainError, match="not issued by the site CA"):
        trust.TrustStore([site.ca], [other.issuing]).path(cert, NOW)
    with pytest.raises(trust.ChainError, match="not issued by the site's root"):
        trust.TrustStore([other.ca], [site.issuing]).path(cert, NOW)
    with pytest.raises(trust.ChainError, match="not valid"):
        trust.TrustStore([site.ca], [site.issuing]).path(cert, NOW + timedelta(days=1900))
    root_crl_only = trust.load_crls(site.crl_pem.read_bytes(), "crl.pem")[:1]
    with pytest.raises(ConfigError, match=r"crl\.pem"):
        trust.TrustStore([site.ca], [site.issuing], root_crl_only).verify(cert, NOW)


def test_relay_opens_a_two_tier_capture_only_with_the_issuing_ca(tmp_path: Path):
    site = _create(tmp_path / "site", tiers=2)
    ident = identity.load_identity(_station(tmp_path, site, "ward3-cart1"))
    recipient = load_recipient_private((site.relay_dir / "recipient.key").read_bytes())
    sealer = Sealer(ident.device_id, ident.key, ident.cert_pem.decode(), recipient.public_key(),
                    aead="AES-256-GCM", utc=lambda: NOW)
    sealed = sealer.seal(bytearray(b"\xff\xd8jpeg\xff\xd9"), META)
    crls = trust.load_crls(site.crl_pem.read_bytes(), "crl.pem")
    assert site.issuing is not None

    def open_(**kw: object) -> object:
        return open_capture(sealed.manifest, dict(enumerate(bytes(p) for p in sealed.parts)),
                            topic_device=ident.device_id, topic_capture_id=sealed.capture_id,
                            ca_cert=site.ca, recipients=[recipient], now=NOW, **kw)  # type: ignore[arg-type]

    opened = open_(chain=[site.issuing], crls=crls)
    assert opened.device == "ward3-cart1"  # type: ignore[attr-defined]
    with pytest.raises(OpenError) as no_chain:
        open_(crls=crls)
    assert no_chain.value.reason == "certificate"
    site.revoke("ward3-cart1", now=NOW)
    crls = trust.load_crls(site.crl_pem.read_bytes(), "crl.pem")
    with pytest.raises(OpenError, match="revoked") as revoked:
        open_(chain=[site.issuing], crls=crls)
    assert revoked.value.reason == "certificate"


def test_selftest_reports_the_chain_and_refuses_a_missing_issuing_ca(tmp_path: Path):
    site = _create(tmp_path / "site", tiers=2)
    d = _station(tmp_path, site, "ward3-cart1")
    review = IdentityReview(d, NOW)
    cert = review.check_certificate()
    assert cert.status == "PASS", cert
    assert "issued by 'clinicam issuing CA Unit Clinic 1' under root 'clinicam CA Unit Clinic'" in cert.detail
    assert review.check_crl().status == "PASS"
    leaf_only = identity.leaf_pem((d / identity.CERT).read_bytes())
    pki.write_public(d / identity.CERT, leaf_only)
    bad = IdentityReview(d, NOW).check_certificate()
    assert bad.status == "FAIL" and bad.detail.startswith("not issued by the site CA in ca.pem")


def test_registrar_identity_is_a_root_service_and_can_be_reissued(tmp_path: Path):
    site = _create(tmp_path / "site", tiers=2)
    first = pki.load_cert(site.registrar_dir / "registrar.pem")
    assert first.issuer == site.ca.subject and certprofile.profile(first) == "other"
    assert "user registrar" in (site.broker_dir / "acl").read_text()
    path = site.reissue("registrar", now=NOW + timedelta(days=300))
    second = pki.load_cert(path)
    assert second.serial_number != first.serial_number and second.not_valid_after_utc > first.not_valid_after_utc
    assert pki.same_key(second, pki.load_key(site.registrar_dir / "registrar.key"))
    with pytest.raises(ProvisioningError, match="registrar"):
        _create(tmp_path / "one").reissue("registrar")
