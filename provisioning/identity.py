"""The station's identity: its key, made on the device, and the files the site sends it.

The identity directory (``[identity] dir``, default ``/etc/clinicam/identity``) holds
``device.key`` (0600, never leaves the station), ``device.pem``, ``ca.pem``,
``recipient.pub``, ``broker.json`` (``{"host", "port"}``) and optionally ``crl.pem``.
On a two-tier site ``device.pem`` is a chain file (the certificate, then its issuing CA,
which TLS sends to the broker) and ``crl.pem`` holds the root's and the issuing CA's CRLs.
``install`` checks everything before writing anything, so a station never ends up
with a certificate that does not fit its key or its site.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, cast

from clinicam.common.errors import ConfigError, ProvisioningError
from clinicam.protocol import chain as trust
from clinicam.protocol.recipient import RecipientPublicKey, load_recipient_public
from clinicam.provisioning import pki
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPublicKeyTypes

DEFAULT_DIR = Path("/etc/clinicam/identity")
KEY, CSR, CERT, CA, RECIPIENT, BROKER, CRL = (
    "device.key",
    "device.csr",
    "device.pem",
    "ca.pem",
    "recipient.pub",
    "broker.json",
    "crl.pem",
)


class StationIdentity(Protocol):
    """What the station needs of its identity: to connect (mTLS), sign and seal.

    ``DeviceIdentity`` (loaded by :func:`load_identity`) is the one implementation;
    the seam is typed so the station and uplink say exactly what they use.
    """

    @property
    def device_id(self) -> str: ...
    @property
    def key(self) -> pki.PrivateKey: ...
    @property
    def cert_pem(self) -> bytes: ...
    @property
    def recipient(self) -> RecipientPublicKey: ...
    @property
    def broker_host(self) -> str: ...
    @property
    def broker_port(self) -> int: ...
    @property
    def key_path(self) -> Path: ...
    @property
    def cert_path(self) -> Path: ...
    @property
    def ca_path(self) -> Path: ...
    @property
    def not_after(self) -> dt.datetime: ...
    @property
    def ca(self) -> x509.Certificate: ...
    @property
    def anchors(self) -> tuple[x509.Certificate, ...]: ...
    @property
    def chain(self) -> tuple[x509.Certificate, ...]: ...
    @property
    def cert(self) -> x509.Certificate: ...
    @property
    def dir(self) -> Path: ...


@dataclass(frozen=True)
class DeviceIdentity:
    """Everything a station needs to connect, sign and seal (DESIGN §4–§5)."""

    dir: Path
    device_id: str
    key: pki.PrivateKey
    cert: x509.Certificate
    cert_pem: bytes
    ca: x509.Certificate
    ca_pem: bytes
    recipient: RecipientPublicKey
    broker_host: str
    broker_port: int
    crl: x509.CertificateRevocationList | None = None  # the device certificate's issuer's
    chain: tuple[x509.Certificate, ...] = ()  # issuing CA(s) after the leaf in device.pem
    # Every root of ca.pem: two while a CA rotation overlaps (issue 17); ``ca`` is the first.
    roots: tuple[x509.Certificate, ...] = ()

    @property
    def anchors(self) -> tuple[x509.Certificate, ...]:
        return self.roots or (self.ca,)

    @property
    def key_path(self) -> Path:
        return self.dir / KEY

    @property
    def cert_path(self) -> Path:
        return self.dir / CERT

    @property
    def ca_path(self) -> Path:
        return self.dir / CA

    @property
    def not_after(self) -> dt.datetime:
        return self.cert.not_valid_after_utc


def create_device_key(directory: Path, device_id: str) -> Path:
    """Make ``device.key`` (0600) and ``device.csr`` with CN = ``device_id``; return the CSR path.

    An existing key is kept (a renewal re-uses it) unless it is unreadable.
    """
    pki.check_id(device_id)
    directory = Path(directory)
    _ensure_dir(directory)
    key_path = directory / KEY
    if key_path.exists():
        key = pki.load_key(key_path, f"remove {key_path} to make a new key")
    else:
        key = pki.new_key()
        pki.write_private(key_path, pki.key_pem(key))
    csr = pki.make_csr(key, device_id)
    pki.write_public(directory / CSR, csr.public_bytes(serialization.Encoding.PEM))
    return directory / CSR


def _ensure_dir(directory: Path) -> None:
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    if stat.S_IMODE(directory.stat().st_mode) & 0o027:
        os.chmod(directory, 0o700)


@dataclass(frozen=True)
class InstallFiles:
    """Public files for a station, from a bundle or given one by one."""

    ca: Path
    cert: Path
    recipient: Path
    broker_host: str
    broker_port: int
    crl: Path | None = None

    @classmethod
    def from_bundle(cls, bundle: Path) -> InstallFiles:
        """Read a folder made by ``clinicam provision bundle``."""
        broker = _broker_json(bundle / BROKER, "make the bundle again with 'clinicam provision bundle'")
        crl = bundle / CRL
        return cls(bundle / CA, bundle / CERT, bundle / RECIPIENT, broker[0], broker[1], crl if crl.exists() else None)

    @classmethod
    def renewal(cls, cert: Path, identity_dir: Path, crl: Path | None = None) -> InstallFiles:
        """A renewed certificate alone: the CA, recipient key, broker (and CRL) stay as installed."""
        identity_dir = Path(identity_dir)
        remedy = "a renewal installs over an existing identity: install the station's bundle first (--bundle DIR)"
        for name in (CA, RECIPIENT):
            if not (identity_dir / name).exists():
                raise ProvisioningError(f"{identity_dir / name} is missing: {remedy}")
        host, port = _broker_json(identity_dir / BROKER, remedy)
        installed_crl = identity_dir / CRL
        crl = crl or (installed_crl if installed_crl.exists() else None)
        return cls(identity_dir / CA, cert, identity_dir / RECIPIENT, host, port, crl)


def install(
    files: InstallFiles,
    identity_dir: Path = DEFAULT_DIR,
    *,
    now: dt.datetime | None = None,
    owner: tuple[int, int] | None = None,
) -> DeviceIdentity:
    """Check the files against ``device.key`` and the CA, then place them with strict modes."""
    now = now or pki.utcnow()
    identity_dir = Path(identity_dir)
    key = pki.load_key(identity_dir / KEY, "make it first with 'clinicam provision device-key'")
    ca_pem = _read(files.ca)
    cert_pem = _read(files.cert)
    roots = _roots(ca_pem, str(files.ca))
    cert, chain = _leaf_and_chain(cert_pem, str(files.cert))
    _check_cert(cert, key, roots, str(files.cert), now, chain)
    _check_not_older(cert, identity_dir / CERT, str(files.cert))
    load_recipient_public(_read(files.recipient))
    crl_pem = _read(files.crl) if files.crl else None
    if crl_pem is not None:
        _parse_crl(crl_pem, roots, str(files.crl), chain)
    _ensure_dir(identity_dir)
    os.chmod(identity_dir / KEY, 0o600)
    pki.write_public(identity_dir / CA, ca_pem)
    pki.write_public(identity_dir / CERT, cert_pem)
    pki.write_public(identity_dir / RECIPIENT, _read(files.recipient))
    broker = {"host": files.broker_host, "port": files.broker_port}
    pki.write_public(identity_dir / BROKER, json.dumps(broker).encode())
    if crl_pem is not None:
        pki.write_public(identity_dir / CRL, crl_pem)
    if owner is not None:
        _chown(identity_dir, owner)
    return load_identity(identity_dir)


def _check_not_older(cert: x509.Certificate, installed: Path, where: str) -> None:
    """Refuse to put back a certificate that the installed one superseded (a renewal
    installed twice in the wrong order would silently shorten the station's life)."""
    try:
        current = x509.load_pem_x509_certificate(installed.read_bytes())
    except (OSError, ValueError):
        return  # nothing (readable) installed yet: a first install
    if current.serial_number != cert.serial_number and cert.not_valid_after_utc < current.not_valid_after_utc:
        raise ProvisioningError(
            f"{where} (serial {pki.serial_hex(cert.serial_number)}, valid until {cert.not_valid_after_utc:%Y-%m-%d}) "
            f"is older than the installed {installed.name} (valid until {current.not_valid_after_utc:%Y-%m-%d}): "
            "install the newest certificate"
        )


def _chown(directory: Path, owner: tuple[int, int]) -> None:
    for path in [directory, *directory.iterdir()]:
        shutil.chown(path, owner[0], owner[1])


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ProvisioningError(
            f"{path} cannot be read: copy the station's bundle again ('clinicam provision bundle')"
        ) from exc


def _leaf_and_chain(data: bytes, where: str) -> tuple[x509.Certificate, tuple[x509.Certificate, ...]]:
    """``device.pem``: the station's certificate, then (two tiers) its issuing CA."""
    try:
        certs = trust.load_certs(data, where)
    except ConfigError as exc:
        raise ProvisioningError(f"{exc}: use the bundle from 'clinicam provision bundle'") from exc
    return certs[0], tuple(certs[1:])


def _roots(data: bytes, where: str, remedy: str = "copy the site's ca.pem again") -> tuple[x509.Certificate, ...]:
    """Every root of ``ca.pem``: one, or two while a CA rotation overlaps (current first)."""
    try:
        return tuple(trust.load_certs(data, where))
    except ConfigError as exc:
        raise ProvisioningError(f"{exc}: {remedy}") from exc


def leaf_pem(data: bytes) -> bytes:
    """The first certificate of a chain file (the manifest's ``cert`` is the leaf alone)."""
    blocks = trust.pem_blocks(data, "CERTIFICATE")
    return blocks[0] if blocks else data


def _check_cert(
    cert: x509.Certificate, key: pki.PrivateKey, roots: tuple[x509.Certificate, ...], where: str,
    now: dt.datetime | None, chain: tuple[x509.Certificate, ...] = (),
) -> str:
    """Check key match, issuer (directly or via the issuing CA in ``chain``), EKU and
    (when ``now`` is given) validity; return the CN."""
    if not pki.same_key(cert, key):
        raise ProvisioningError(
            f"{where} does not match this station's device.key: it was signed for another "
            "station or another key; sign this station's device.csr"
        )
    try:
        trust.TrustStore(roots, chain).path(cert, now)
    except trust.ChainError as exc:
        why = "" if str(exc) == trust.NOT_ISSUED else f" ({exc})"
        raise ProvisioningError(
            f"{where} was not issued by this site's CA (ca.pem){why}: use the certificate the "
            "site signed for this station (with its issuing CA), or the matching ca.pem"
        ) from exc
    if now is not None:
        pki.check_validity(cert, where, now)
    if not pki.has_client_auth(cert):
        raise ProvisioningError(f"{where} is not a client certificate (no clientAuth): sign a device CSR")
    return pki.check_id(pki.common_name(cert.subject, where))


def _parse_crl(
    data: bytes, roots: tuple[x509.Certificate, ...], where: str, chain: tuple[x509.Certificate, ...] = (),
    issuer: x509.Name | None = None, obsolete_ok: bool = False,
) -> x509.CertificateRevocationList | None:
    """Check every CRL of ``crl.pem`` (signed by the root or the issuing CA); return the
    one of ``issuer`` (default: the root)."""
    try:
        crls = trust.load_crls(data, where)
    except ConfigError as exc:
        raise ProvisioningError(f"{where} is not a PEM CRL: copy the site's crl.pem again") from exc
    signers = {c.subject: c for c in (*roots, *chain)}
    known = [c for c in crls if c.issuer in signers]
    if not known and obsolete_ok:
        return None  # the CRLs of a CA generation this station has left (CA rotation)
    if not known:
        raise ProvisioningError(f"{where} was not signed by this site's CA: copy the site's crl.pem")
    # A CRL of an issuing CA this station no longer chains through (it renewed under a
    # rotated CA, issue 17) is not this station's concern; a known issuer's must verify.
    for crl in known:
        signer = signers[crl.issuer]
        if not crl.is_signature_valid(cast(CertificateIssuerPublicKeyTypes, signer.public_key())):
            raise ProvisioningError(f"{where} was not signed by this site's CA: copy the site's crl.pem")
    wanted = issuer or roots[0].subject
    return next((c for c in crls if c.issuer == wanted), None)


def _broker_json(path: Path, remedy: str) -> tuple[str, int]:
    try:
        data = json.loads(path.read_text())
        host, port = data["host"], data["port"]
    except FileNotFoundError:
        raise ProvisioningError(f"{path} is missing: {remedy}") from None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ProvisioningError(f'{path} must be JSON {{"host", "port"}}: {remedy}') from exc
    if not isinstance(host, str) or not host or type(port) is not int or not 1 <= port <= 65535:
        raise ProvisioningError(f"{path} must hold a host name and a port 1-65535: {remedy}")
    return host, port


def load_identity(directory: Path = DEFAULT_DIR) -> DeviceIdentity:
    """Load and cross-check the installed identity; expiry is reported, not refused here.

    An expired certificate still loads, so the station can say so in its status and
    ``selftest``; the broker refuses it anyway.
    """
    directory = Path(directory)
    finish_renewal(directory)
    remedy = f"install the station's bundle with 'clinicam provision install --identity-dir {directory}'"
    key_path = directory / KEY
    key = pki.load_key(key_path, "make it with 'clinicam provision device-key' and have it signed")
    if key_path.stat().st_mode & 0o077:
        raise ProvisioningError(f"{key_path} is readable by others: run 'chmod 600 {key_path}'")
    ca_pem, cert_pem = _must(directory / CA, remedy), _must(directory / CERT, remedy)
    roots = _roots(ca_pem, str(directory / CA), remedy)
    cert, chain = _leaf_and_chain(cert_pem, str(directory / CERT))
    device_id = _check_cert(cert, key, roots, str(directory / CERT), None, chain)
    recipient = load_recipient_public(_must(directory / RECIPIENT, remedy))
    host, port = _broker_json(directory / BROKER, remedy)
    crl_path = directory / CRL
    crl = (_parse_crl(crl_path.read_bytes(), roots, str(crl_path), chain, cert.issuer, obsolete_ok=True)
           if crl_path.exists() else None)
    return DeviceIdentity(directory, device_id, key, cert, leaf_pem(cert_pem), roots[0], ca_pem, recipient, host,
                          port, crl, chain, roots)


def finish_renewal(directory: Path) -> bool:
    """Complete a renewal's install cut short between its two renames (issue 17).

    The renewal replaces ``device.pem`` first, then ``device.key`` with ``next.key``. A
    ``device.pem`` that matches ``next.key`` and not ``device.key`` means the second
    rename did not happen: do it now. Anything else is left as it is (a ``next.*``
    pair that never connected is never preferred over the current one).
    """
    nxt, cert_path, key_path = directory / "next.key", directory / CERT, directory / KEY
    if not (nxt.exists() and cert_path.exists() and key_path.exists()):
        return False
    try:
        cert = pki.parse_cert(cert_path.read_bytes(), str(cert_path))
        new, old = pki.load_key(nxt), pki.load_key(key_path)
    except (OSError, ProvisioningError):
        return False
    if pki.same_key(cert, old) or not pki.same_key(cert, new):
        return False
    os.replace(nxt, key_path)
    (directory / "next.json").unlink(missing_ok=True)
    return True


def _must(path: Path, remedy: str) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise ProvisioningError(f"{path} is missing: {remedy}") from None
    except OSError as exc:
        raise ProvisioningError(f"{path} cannot be read ({exc.strerror}): {remedy}") from exc
