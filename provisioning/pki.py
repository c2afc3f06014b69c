"""X.509 building blocks of the site PKI: keys, certificates, CSRs and CRLs.

Everything here is a pure function of its inputs: the clock (``now``) and the validity
are parameters, so tests make expired or not-yet-valid certificates without sleeping.
Keys are EC P-256 throughout, because the station signs manifests with its TLS key
(DESIGN §4) and P-256 is what every TLS stack and HSM speaks.

The site CA is dedicated to clinicam (DESIGN §3.5): the broker grants rights by the
certificate's CN, so any certificate the CA signs is a login. Hence the strict checks
on identifiers and the refusal of reserved names here, in one place.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
import os
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path

from clinicam.common.errors import ProvisioningError
from clinicam.protocol import certprofile
from clinicam.protocol.ids import DEVICE_ID
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

ID_PATTERN = DEVICE_ID  # the protocol's device-id grammar (clinicam.protocol.ids)
RESERVED_PREFIXES: tuple[str, ...] = certprofile.RESERVED_PREFIXES
DEFAULT_DAYS = 397
CA_DAYS = 3650
ISSUING_DAYS = 1826  # five years: long enough to outlast many renewals, well inside the root
# Backdating absorbs small clock differences between the site and a freshly booted station.
BACKDATE = dt.timedelta(minutes=5)

PrivateKey = ec.EllipticCurvePrivateKey


def utcnow() -> dt.datetime:
    """The real clock; every function that needs time takes ``now`` and defaults to this."""
    return dt.datetime.now(dt.UTC)


def check_id(name: str, *, allow_reserved: bool = False) -> str:
    """Return ``name`` if it is a well-formed identity; raise ``ProvisioningError`` if not.

    Device ids become MQTT usernames and topic levels (``P/%u/...``), so only
    ``[a-z0-9-]{3,64}`` is allowed, and the prefixes that name the site's own services
    are refused for devices: a station called ``relay-9`` would get a relay's rights.
    """
    if not ID_PATTERN.fullmatch(name):
        raise ProvisioningError(
            "malformed identity: use 3 to 64 characters of lowercase a-z, digits and '-' (for example 'ward3-cart1')"
        )
    if not allow_reserved and name.startswith(RESERVED_PREFIXES):
        raise ProvisioningError(
            f"identity {name!r} is reserved: names starting with "
            f"{', '.join(RESERVED_PREFIXES)} belong to the site's own services; pick another"
        )
    return name


def new_key() -> PrivateKey:
    """A fresh EC P-256 private key."""
    return ec.generate_private_key(ec.SECP256R1())


def key_pem(key: PrivateKey, passphrase: bytes | None = None) -> bytes:
    """PKCS#8 PEM; unencrypted unless ``passphrase`` (the offline root's key may have one).

    A station's or service's key is unencrypted: the file's 0600 mode and the device's
    encrypted partition are its guard, and a service cannot type a passphrase at boot.
    """
    enc: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(passphrase) if passphrase else serialization.NoEncryption()
    )
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, enc)


def is_encrypted_pem(data: bytes) -> bool:
    return b"-----BEGIN ENCRYPTED PRIVATE KEY-----" in data


def cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def fingerprint(cert: x509.Certificate) -> str:
    """SHA-256 fingerprint of the DER certificate, lowercase hex with colons (as openssl)."""
    return cert.fingerprint(hashes.SHA256()).hex(":")


def spki_sha256(key: ec.EllipticCurvePublicKey) -> str:
    """SHA-256 of the SubjectPublicKeyInfo: names a key independently of its certificates."""
    der = key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(der).hexdigest()


def serial_hex(serial: int) -> str:
    return format(serial, "x")


# -- files ------------------------------------------------------------------------------


def write_file(path: Path, data: bytes, mode: int) -> None:
    """Write ``data`` atomically with ``mode`` from the start (never briefly world-readable)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_private(path: Path, data: bytes) -> None:
    write_file(path, data, 0o600)


def write_public(path: Path, data: bytes) -> None:
    write_file(path, data, 0o644)


def _read(path: Path, what: str, remedy: str) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise ProvisioningError(f"{what} {path} is missing: {remedy}") from None
    except OSError as exc:
        raise ProvisioningError(f"{what} {path} cannot be read ({exc.strerror}): {remedy}") from exc


def load_key(path: Path, remedy: str = "check the path", passphrase: bytes | None = None) -> PrivateKey:
    """Load an EC P-256 key; ``passphrase`` only for an encrypted one (the root's)."""
    data = _read(path, "private key", remedy)
    if is_encrypted_pem(data) and not passphrase:
        raise ProvisioningError(
            f"private key {path} is protected by a passphrase: give it with --ca-passphrase-file "
            "or CLINICAM_CA_PASSPHRASE_FILE, or run on a terminal to be asked"
        )
    try:
        key = serialization.load_pem_private_key(data, password=passphrase if is_encrypted_pem(data) else None)
    except ValueError as exc:
        if is_encrypted_pem(data):
            raise ProvisioningError(f"private key {path}: wrong passphrase (or a damaged file): try again") from exc
        raise ProvisioningError(f"private key {path} is not an unencrypted PEM key: {remedy}") from exc
    except TypeError as exc:
        raise ProvisioningError(f"private key {path} is not an unencrypted PEM key: {remedy}") from exc
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
        raise ProvisioningError(f"private key {path} is not EC P-256: {remedy}")
    return key


def load_cert(path: Path, remedy: str = "check the path") -> x509.Certificate:
    return parse_cert(_read(path, "certificate", remedy), str(path), remedy)


def parse_cert(data: bytes, where: str, remedy: str = "check the file") -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(data)
    except ValueError as exc:
        raise ProvisioningError(f"certificate {where} is not a PEM certificate: {remedy}") from exc


def parse_csr(data: bytes, where: str) -> x509.CertificateSigningRequest:
    try:
        return x509.load_pem_x509_csr(data)
    except ValueError as exc:
        raise ProvisioningError(
            f"{where} is not a PEM certificate signing request: make a new one on the station "
            "with 'clinicam provision device-key'"
        ) from exc


# -- names and checks -------------------------------------------------------------------


def common_name(name: x509.Name, where: str) -> str:
    """The one CN of ``name``; several or none is refused (the broker needs exactly one)."""
    cns = name.get_attributes_for_oid(NameOID.COMMON_NAME)
    if len(cns) != 1 or not isinstance(cns[0].value, str):
        raise ProvisioningError(f"{where} must carry exactly one common name (CN)")
    return cns[0].value


def check_csr(csr: x509.CertificateSigningRequest, where: str) -> str:
    """Return the CSR's device id after checking its self-signature and its name."""
    if not csr.is_signature_valid:
        raise ProvisioningError(
            f"{where}: the request's signature does not verify (corrupted or tampered); "
            "make a new one on the station with 'clinicam provision device-key'"
        )
    key = csr.public_key()
    if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp256r1":
        raise ProvisioningError(f"{where}: the key must be EC P-256; use 'clinicam provision device-key'")
    return check_id(common_name(csr.subject, where))


def same_key(cert: x509.Certificate, key: PrivateKey) -> bool:
    return cert.public_key() == key.public_key()


def verify_issued(cert: x509.Certificate, ca: x509.Certificate, where: str) -> None:
    """Raise unless ``cert`` is signed directly by ``ca`` (names and signature)."""
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature) as exc:
        raise ProvisioningError(
            f"{where} was not issued by this site's CA (ca.pem): use the certificate the "
            "site signed for this station, or the matching ca.pem"
        ) from exc


def check_validity(cert: x509.Certificate, where: str, now: dt.datetime) -> None:
    if now < cert.not_valid_before_utc:
        raise ProvisioningError(
            f"{where} is not valid before {cert.not_valid_before_utc:%Y-%m-%d %H:%M}Z: check this machine's clock"
        )
    if now > cert.not_valid_after_utc:
        raise ProvisioningError(
            f"{where} expired on {cert.not_valid_after_utc:%Y-%m-%d}: renew it with "
            "'clinicam provision renew' on the site"
        )


def has_client_auth(cert: x509.Certificate) -> bool:
    try:
        eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        return False
    return ExtendedKeyUsageOID.CLIENT_AUTH in eku


# -- building ---------------------------------------------------------------------------


def _name(cn: str, site: str | None = None) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, cn)]
    if site:
        attrs.insert(0, x509.NameAttribute(NameOID.ORGANIZATION_NAME, site))
    return x509.Name(attrs)


def _usage(*, ca: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=not ca,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=ca,
        crl_sign=ca,
        encipher_only=False,
        decipher_only=False,
    )


def make_ca(
    key: PrivateKey, site: str, *, now: dt.datetime, days: int = CA_DAYS, path_length: int = 0,
    name: x509.Name | None = None, not_after: dt.datetime | None = None,
) -> x509.Certificate:
    """Self-signed site root. Path length 0 (single tier): it signs end entities only;
    1 (two tiers): also one issuing CA level. ``name``/``not_after`` re-issue an
    existing root with the same key (what ``two-tier`` migration does)."""
    name = name or _name(f"clinicam CA {site}", site)
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(not_after or now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=path_length), critical=True)
        .add_extension(_usage(ca=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )


def root_name(site: str, generation: int = 1) -> x509.Name:
    """A site root's name; a rotated root's carries its generation (OpenSSL picks an
    issuer by name, so two roots side by side must not share one)."""
    return _name(f"clinicam CA {site}" + (f" {generation}" if generation > 1 else ""), site)


def cross_certify(issuer_key: PrivateKey, issuer: x509.Certificate, root: x509.Certificate, *,
                  now: dt.datetime) -> x509.Certificate:
    """``root``'s name and key certified by another root ``issuer`` (CA rotation): whoever
    holds only ``issuer`` can verify what ``root`` signs. Never outlives either."""
    bc = root.extensions.get_extension_for_class(x509.BasicConstraints).value
    key = root.public_key()
    assert isinstance(key, ec.EllipticCurvePublicKey)
    issuer_ski = issuer.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    return (
        x509.CertificateBuilder()
        .subject_name(root.subject)
        .issuer_name(issuer.subject)
        .public_key(key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(min(root.not_valid_after_utc, issuer.not_valid_after_utc))
        .add_extension(x509.BasicConstraints(ca=True, path_length=bc.path_length), critical=True)
        .add_extension(_usage(ca=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(issuer_ski), critical=False)
        .sign(issuer_key, hashes.SHA256())
    )


def make_issuing_ca(
    root_key: PrivateKey, root: x509.Certificate, key: PrivateKey, site: str, number: int, *,
    now: dt.datetime, days: int = ISSUING_DAYS,
) -> x509.Certificate:
    """The online issuing CA (two-tier sites): signed by the root, path length 0, never
    outliving the root. It signs station certificates and its own CRL only."""
    not_after = min(now + dt.timedelta(days=days), root.not_valid_after_utc)
    root_ski = root.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    return (
        x509.CertificateBuilder()
        .subject_name(_name(f"clinicam issuing CA {site} {number}", site))
        .issuer_name(root.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_usage(ca=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(root_ski), critical=False)
        .sign(root_key, hashes.SHA256())
    )


def _san(hosts: Iterable[str]) -> x509.SubjectAlternativeName:
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    return x509.SubjectAlternativeName(names)


def issue(
    ca_key: PrivateKey,
    ca: x509.Certificate,
    public_key: ec.EllipticCurvePublicKey,
    cn: str,
    *,
    now: dt.datetime,
    days: int = DEFAULT_DAYS,
    server_hosts: Sequence[str] = (),
    station: bool = False,
    lifetime: dt.timedelta | None = None,
) -> x509.Certificate:
    """An end-entity certificate: clientAuth, or serverAuth with SANs when ``server_hosts``.

    ``station`` adds the station certificate policy (``certprofile.STATION_POLICY``):
    only station signing sets it, and only such a certificate files photos.
    ``lifetime`` replaces ``days`` for certificates of minutes (the registrar's kick).
    """
    if station and (server_hosts or certprofile.is_reserved(cn)):
        raise ProvisioningError(f"{cn!r} cannot be a station: service names and server certificates never are")
    if days < 1:
        raise ProvisioningError("certificate validity must be at least 1 day")
    if now + dt.timedelta(days=days) > ca.not_valid_after_utc:
        raise ProvisioningError(
            f"a {days}-day certificate would outlive the site CA "
            f"(valid until {ca.not_valid_after_utc:%Y-%m-%d}): use fewer --days or a new site CA"
        )
    eku = ExtendedKeyUsageOID.SERVER_AUTH if server_hosts else ExtendedKeyUsageOID.CLIENT_AUTH
    ski = ca.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(ca.subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + (lifetime or dt.timedelta(days=days)))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_usage(ca=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([eku]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False)
    )
    if server_hosts:
        builder = builder.add_extension(_san(server_hosts), critical=False)
    if station:
        builder = builder.add_extension(certprofile.station_policies(), critical=False)
    return builder.sign(ca_key, hashes.SHA256())


def make_csr(key: PrivateKey, cn: str) -> x509.CertificateSigningRequest:
    return x509.CertificateSigningRequestBuilder().subject_name(_name(cn)).sign(key, hashes.SHA256())


def make_crl(
    ca_key: PrivateKey,
    ca: x509.Certificate,
    revoked: Iterable[tuple[int, dt.datetime]],
    *,
    now: dt.datetime,
    days: int,
    number: int | None = None,
) -> x509.CertificateRevocationList:
    """A CRL listing ``(serial, revoked_at)``; valid ``days`` (the broker refuses all when stale).

    ``number`` (the CRL number extension) lets receivers refuse an older CRL (issue 17).
    """
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca.subject)
        .last_update(now - BACKDATE)
        .next_update(now + dt.timedelta(days=days))
    )
    if number is not None:
        builder = builder.add_extension(x509.CRLNumber(number), critical=False)
    for serial, when in revoked:
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(when).build()
        )
    return builder.sign(ca_key, hashes.SHA256())


def crl_pem(crl: x509.CertificateRevocationList) -> bytes:
    return crl.public_bytes(serialization.Encoding.PEM)
