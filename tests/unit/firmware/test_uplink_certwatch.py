"""A certificate renewed on disk is used without a restart (``firmware.uplink.certwatch``),
and the sealer puts it into the captures sealed from then on."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from clinicam.common.errors import ConfigError
from clinicam.firmware.uplink.certwatch import CertificateWatch
from clinicam.protocol.sealing import Sealer
from clinicam.provisioning import identity, pki
from clinicam.provisioning.site import Site
from clinicam.provisioning.tlsctx import client_context
from cryptography import x509


@pytest.fixture
def station(tmp_path: Path) -> tuple[Site, Path]:
    site = Site.create(tmp_path / "site", "Renew Clinic", ["127.0.0.1"], kem="X25519",
                       tiers=1)  # manual renewal: a single-tier site
    ident = tmp_path / "identity"
    csr = identity.create_device_key(ident, "cart-9")
    site.sign(csr.read_bytes())
    identity.install(identity.InstallFiles.from_bundle(site.bundle("cart-9", tmp_path / "bundle")), ident)
    return site, ident


def renew(site: Site, ident: Path, tmp_path: Path, days: int = pki.DEFAULT_DAYS) -> x509.Certificate:
    """What 'device-key', 'renew' and 'install --cert' do."""
    csr = identity.create_device_key(ident, "cart-9")
    cert = site.renew(csr.read_bytes(), days=days)
    pem = tmp_path / f"renewed-{cert.serial_number}.pem"
    pki.write_public(pem, pki.cert_pem(cert))
    identity.install(identity.InstallFiles.renewal(pem, ident), ident)
    return cert


def touch_later(path: Path) -> None:
    """Make sure the watch sees a change even within one mtime tick of the filesystem."""
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))


def test_a_renewed_certificate_is_picked_up_once(station: tuple[Site, Path], tmp_path: Path) -> None:
    site, ident = station
    running = identity.load_identity(ident)
    context = client_context(running.ca_path, running.cert_path, running.key_path)
    watch = CertificateWatch(running, context)
    assert watch.check() is None and not watch.update_tls()  # positive control: nothing changed yet
    cert = renew(site, ident, tmp_path)
    touch_later(ident / identity.CERT)
    new = watch.check()
    assert new is not None and new.cert.serial_number == cert.serial_number
    assert watch.identity is new
    assert watch.update_tls()  # the real SSLContext loads the renewed chain
    assert watch.check() is None and not watch.update_tls()  # once only


def test_a_certificate_for_another_key_is_not_picked_up(station: tuple[Site, Path], tmp_path: Path) -> None:
    site, ident = station
    running = identity.load_identity(ident)
    watch = CertificateWatch(running, client_context(running.ca_path, running.cert_path, running.key_path))
    (ident / identity.KEY).unlink()  # a new key on disk: the process still holds the old one
    renew(site, ident, tmp_path)
    touch_later(ident / identity.CERT)
    assert watch.check() is None and watch.identity is running and not watch.update_tls()


def test_an_older_certificate_is_not_picked_up(station: tuple[Site, Path], tmp_path: Path) -> None:
    site, ident = station
    renew(site, ident, tmp_path)  # the long-lived one is installed and running...
    running = identity.load_identity(ident)
    watch = CertificateWatch(running, client_context(running.ca_path, running.cert_path, running.key_path))
    short = site.renew(identity.create_device_key(ident, "cart-9").read_bytes(), days=30)
    pki.write_public(ident / identity.CERT, pki.cert_pem(short))  # ...then a shorter one is copied over it
    touch_later(ident / identity.CERT)
    assert watch.check() is None and watch.identity is running


def test_the_sealer_seals_with_the_renewed_certificate(station: tuple[Site, Path], tmp_path: Path) -> None:
    site, ident = station
    running = identity.load_identity(ident)
    sealer = Sealer(running.device_id, running.key, running.cert_pem, running.recipient, aead="AES-256-GCM")

    def sealed_cert() -> str:
        capture = sealer.seal(bytearray(b"\xff\xd8synthetic\xff\xd9"), {"image": {}})
        return str(json.loads(capture.manifest)["m"]["cert"])

    assert sealed_cert() == running.cert_pem.decode()
    renew(site, ident, tmp_path)
    new = identity.load_identity(ident)
    sealer.use_identity(new.key, new.cert_pem)
    assert sealed_cert() == new.cert_pem.decode() != running.cert_pem.decode()
    other = site.issue(pki.new_key().public_key(), "cart-10")
    with pytest.raises(ConfigError, match="does not match the device key"):
        sealer.use_identity(running.key, pki.cert_pem(other))
    assert sealed_cert() == new.cert_pem.decode()  # the refused one changed nothing
