"""Certificate chains of a site with one or two tiers (DESIGN §4 opening, §7).

A single-tier site's root signs everything. A two-tier site's offline root signs its
service identities and an *issuing CA*, and the issuing CA — online, at the registrar
on the relay host — signs station certificates. Every verifier (the relay opening a
capture, the station's selftest, the registrar renewing) asks the same question here:
does this leaf chain to one of our roots, directly or through exactly one issuing CA
that the root made a CA for end entities only, and is neither revoked?

Paths are short and fixed on purpose: a general path builder (cross-certificates,
name constraints, policy mapping) would be more code than the sites need and more
ways to be wrong. CA rotation (two roots side by side) is several ``roots``.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from clinicam.common.errors import ConfigError
from cryptography import x509
from cryptography.exceptions import InvalidSignature

_PEM_BLOCK = re.compile(rb"-----BEGIN ([A-Z0-9 ]+)-----\r?\n.*?-----END \1-----\r?\n?", re.S)


NOT_ISSUED = "not issued by the site CA"


class ChainError(ValueError):
    """A certificate does not chain to the site, or is revoked; the message says which."""


def pem_blocks(data: bytes, label: str) -> list[bytes]:
    """Every PEM block of ``label`` (``CERTIFICATE``, ``X509 CRL``) in ``data``, in order."""
    return [m.group(0) for m in _PEM_BLOCK.finditer(data) if m.group(1) == label.encode()]


def load_certs(data: bytes, where: str) -> list[x509.Certificate]:
    """All certificates of a PEM bundle; a bundle without one is a ``ConfigError``."""
    blocks = pem_blocks(data, "CERTIFICATE")
    try:
        certs = [x509.load_pem_x509_certificate(b) for b in blocks]
    except ValueError as exc:
        raise ConfigError(f"{where} holds an unreadable PEM certificate: copy the site's file again") from exc
    if not certs:
        raise ConfigError(f"{where} holds no PEM certificate: copy the site's file again")
    return certs


def load_crls(data: bytes, where: str) -> list[x509.CertificateRevocationList]:
    """All CRLs of a PEM file (a two-tier site's ``crl.pem`` holds the root's and the issuing CA's)."""
    blocks = pem_blocks(data, "X509 CRL")
    try:
        crls = [x509.load_pem_x509_crl(b) for b in blocks]
    except ValueError as exc:
        raise ConfigError(f"{where} holds an unreadable PEM CRL: copy the site's crl.pem again") from exc
    if not crls:
        raise ConfigError(f"{where} holds no PEM CRL: copy the site's crl.pem again")
    return crls


def is_ca(cert: x509.Certificate) -> bool:
    try:
        bc = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        return False
    return bc.ca


def issued_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    """Whether ``issuer`` signed ``cert`` (the signature checked, no other rule)."""
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def valid_at(cert: x509.Certificate, now: datetime) -> bool:
    """Whether ``now`` is inside ``cert``'s validity period."""
    return cert.not_valid_before_utc <= now <= cert.not_valid_after_utc


@dataclass(frozen=True)
class TrustStore:
    """The site's roots, its issuing CAs and (optionally) their CRLs.

    ``crls`` empty means "no revocation configured". When CRLs are configured, every
    issuer on a path must have one: a missing CRL is the verifier's configuration fault
    (``ConfigError``), never a verdict on the certificate.
    """

    roots: Sequence[x509.Certificate]
    intermediates: Sequence[x509.Certificate] = ()
    crls: Sequence[x509.CertificateRevocationList] = field(default_factory=tuple)

    def path(self, leaf: x509.Certificate, now: datetime | None = None) -> list[x509.Certificate]:
        """``[issuer, …, root]`` for ``leaf`` (not included), or ``ChainError``.

        A leaf issued directly by a root is a one-element path (single-tier sites and
        the root's own service identities). Through an issuing CA, that CA must be a
        CA with path length 0, issued by a root and valid ``now`` (``None``: dates are
        the caller's business, as for a station loading an expired identity to report it).
        The leaf's own dates are always the caller's business.
        """
        for root in self.roots:
            if issued_by(leaf, root):
                return [root]
        for inter in self.intermediates:
            if not issued_by(leaf, inter):
                continue
            above = next((r for r in self.roots if issued_by(inter, r)), None)
            if above is None:
                raise ChainError("its issuing CA was not issued by the site's root")
            root = above
            if not _issuing_ok(inter):
                raise ChainError("its issuer is not a CA for end entities (basic constraints, path length 0)")
            if _path_length(root) == 0:
                # As OpenSSL (the broker) would: a single-tier root allows no CA below it.
                raise ChainError("the site root allows no issuing CA (path length 0): "
                                 "install the root re-issued by 'clinicam provision two-tier'")
            if now is not None and not valid_at(inter, now):
                raise ChainError("its issuing CA is not valid at this time")
            return [inter, root]
        raise ChainError(NOT_ISSUED)

    def verify(self, leaf: x509.Certificate, now: datetime | None = None) -> list[x509.Certificate]:
        """``path`` plus revocation: the leaf and any issuing CA against their issuers' CRLs."""
        path = self.path(leaf, now)
        if self.crls:
            chain = [leaf, *path]
            for cert, issuer in itertools.pairwise(chain):
                if self._revoked(cert, issuer):
                    raise ChainError("revoked" if cert is leaf else "its issuing CA is revoked")
        return path

    def _revoked(self, cert: x509.Certificate, issuer: x509.Certificate) -> bool:
        key: Any = issuer.public_key()
        crls = [c for c in self.crls if c.issuer == issuer.subject and c.is_signature_valid(key)]
        if not crls:
            raise ConfigError(
                "the configured CRLs hold none signed by the certificate's issuer "
                f"({issuer.subject.rfc4514_string()}): install the site's current crl.pem"
            )
        return any(c.get_revoked_certificate_by_serial_number(cert.serial_number) is not None for c in crls)


def _issuing_ok(cert: x509.Certificate) -> bool:
    try:
        bc = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
        ku = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        return False
    return bc.ca and bc.path_length == 0 and ku.key_cert_sign


def _path_length(cert: x509.Certificate) -> int | None:
    try:
        return cert.extensions.get_extension_for_class(x509.BasicConstraints).value.path_length
    except x509.ExtensionNotFound:
        return None
