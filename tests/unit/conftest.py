"""A throwaway site PKI for the sealing tests, built with cryptography directly.

The real site PKI lives in ``clinicam.provisioning``; these tests must not depend on
it, only on what DESIGN §4 says a device certificate is: issued directly by the site
CA, ECDSA P-256, EKU clientAuth, one CN equal to the device id, and the station profile
(``certprofile.STATION_POLICY``) unless a test asks for ``station=False``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from clinicam.protocol import certprofile
from clinicam.protocol.recipient import RecipientPrivateKey, generate_recipient_key
from clinicam.protocol.sealing import Sealer
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

NOW = datetime(2026, 11, 26, 12, 0, 0, 123456, tzinfo=UTC)


@dataclass(frozen=True)
class CA:
    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate


@dataclass(frozen=True)
class Device:
    id: str
    key: ec.EllipticCurvePrivateKey
    cert_pem: str


def _name(*cns: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn) for cn in cns])


def make_ca(cn: str = "clinicam test site CA") -> CA:
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(cn)).issuer_name(_name(cn))
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(NOW - timedelta(days=3650)).not_valid_after(NOW + timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False),
                       critical=True)
        .sign(key, hashes.SHA256())
    )
    return CA(key, cert)


def issue(
    ca: CA,
    device_id: str,
    *,
    key: ec.EllipticCurvePrivateKey | None = None,
    cns: tuple[str, ...] | None = None,
    eku: tuple[x509.ObjectIdentifier, ...] | None = (ExtendedKeyUsageOID.CLIENT_AUTH,),
    not_before: datetime = NOW - timedelta(days=1),
    not_after: datetime = NOW + timedelta(days=365 * 70),
    serial: int | None = None,
    station: bool = True,
) -> Device:
    key = key or ec.generate_private_key(ec.SECP256R1())
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(*(cns if cns is not None else (device_id,))))
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key()).serial_number(serial or x509.random_serial_number())
        .not_valid_before(not_before).not_valid_after(not_after)
    )
    if eku is not None:
        builder = builder.add_extension(x509.ExtendedKeyUsage(list(eku)), critical=False)
    if station:
        builder = builder.add_extension(certprofile.station_policies(), critical=False)
    cert = builder.sign(ca.key, hashes.SHA256())
    return Device(device_id, key, cert.public_bytes(serialization.Encoding.PEM).decode())


def revoke(ca: CA, *serials: int) -> x509.CertificateRevocationList:
    builder = (x509.CertificateRevocationListBuilder().issuer_name(ca.cert.subject)
               .last_update(NOW - timedelta(days=1)).next_update(NOW + timedelta(days=30)))
    for serial in serials:
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder().serial_number(serial)
            .revocation_date(NOW - timedelta(hours=1)).build())
    return builder.sign(ca.key, hashes.SHA256())


class PKI:
    """What tests need to build certificates of their own, handed out by the ``pki`` fixture."""

    NOW = NOW
    CA = CA
    Device = Device
    make_ca = staticmethod(make_ca)
    issue = staticmethod(issue)
    revoke = staticmethod(revoke)


@pytest.fixture(scope="session")
def pki() -> type[PKI]:
    return PKI


@pytest.fixture(scope="session")
def site_ca() -> CA:
    return make_ca()


@pytest.fixture(scope="session")
def device(site_ca: CA) -> Device:
    return issue(site_ca, "cam-ward7-01")


@pytest.fixture(scope="session")
def recipients() -> dict[str, RecipientPrivateKey]:
    return {kem: generate_recipient_key(kem) for kem in ("X25519", "MLKEM768-X25519")}


@pytest.fixture
def make_sealer(device: Device, recipients: dict[str, RecipientPrivateKey]
                ) -> Callable[..., Sealer]:
    def make(kem: str = "X25519", aead: str = "AES-256-GCM", **kw: Any) -> Sealer:
        dev = kw.pop("device", device)
        kw.setdefault("utc", lambda: NOW)
        return Sealer(dev.id, dev.key, dev.cert_pem, recipients[kem].public_key(),
                      aead=aead, **kw)
    return make
