"""CA rotation over MQTT (issue 17): the site's trust update on ``P/_site/trust``.

A trust update names the roots every party should trust from now on (current first),
the issuing CA that renews stations from now on, the new CAs' CRLs, and is signed by a
**root** — never by the online issuing CA, whose host could otherwise plant a root of
its own. It is made offline (``clinicam provision rotate-ca``), and the registrar only
publishes the file, retained.

Who may sign: one of the receiver's current roots (same name and key), or a root whose
key a ``cross`` certificate certifies, that certificate issued by a current root. So
the update that *starts* a rotation is signed by the old root R1 (everyone trusts it),
and the one that *finishes* it is signed by the new root R2 and carries R2's
cross-certificate from R1, so a receiver that missed the first update still verifies
it. The signer must itself be among the listed roots. ``number`` grows by one per
update; receivers refuse one not above the number they hold (a stale retained copy
never brings a retired root back) — that comparison is the caller's, who holds the
number.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from clinicam.common.errors import ClinicamError
from clinicam.protocol import chain as trust
from clinicam.protocol.manifest import b64, canonical, parse_rfc3339_ms, rfc3339_ms, sign, strict_json, unb64
from clinicam.protocol.topics import Topics
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPublicKeyTypes

VERSION = 1
MAX_UPDATE = 256 * 1024
FIELDS = {"v", "number", "at", "roots", "issuing", "crl", "cross", "signer", "sig"}


class TrustUpdateError(ClinicamError):
    """A trust update that must not be installed; the message says why."""


def trust_topic(prefix: str) -> str:
    """``P/_site/trust``: the site's trust update, retained."""
    return Topics(prefix).site_trust()


@dataclass(frozen=True)
class TrustUpdate:
    """A verified trust update."""

    number: int
    at: datetime
    roots: list[x509.Certificate]
    issuing: x509.Certificate
    crls: list[x509.CertificateRevocationList]
    signer: x509.Certificate

    @property
    def roots_pem(self) -> bytes:
        return b"".join(pem(c) for c in self.roots)

    def covers(self, leaf: x509.Certificate, chain: Sequence[x509.Certificate]) -> bool:
        """Whether ``leaf`` (with its issuing CA(s) ``chain``) chains to one of the roots."""
        try:
            trust.TrustStore(self.roots, [*chain, self.issuing]).path(leaf)
        except trust.ChainError:
            return False
        return True


def pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def same_cert(a: x509.Certificate, b: x509.Certificate) -> bool:
    """Same name and key: a root re-issued with its key (``two-tier``) is the same root."""
    return a.subject == b.subject and a.public_key() == b.public_key()


def build_trust(*, number: int, at: datetime, roots: Sequence[x509.Certificate], issuing: x509.Certificate,
                crls: Sequence[x509.CertificateRevocationList], cross: Sequence[x509.Certificate],
                signer: x509.Certificate, signer_key: ec.EllipticCurvePrivateKey) -> bytes:
    """The signed update; ``signer`` (one of ``roots``) signs with ``signer_key``."""
    crl_pem = b"".join(c.public_bytes(serialization.Encoding.PEM) for c in crls)
    body: dict[str, Any] = {
        "v": VERSION, "number": number, "at": rfc3339_ms(at),
        "roots": [pem(r).decode("ascii") for r in roots], "issuing": pem(issuing).decode("ascii"),
        "crl": crl_pem.decode("ascii"), "cross": [pem(c).decode("ascii") for c in cross],
        "signer": pem(signer).decode("ascii"),
    }
    payload = canonical({**body, "sig": b64(sign(canonical(body), signer_key))})
    if len(payload) > MAX_UPDATE:
        raise TrustUpdateError("trust update larger than 256 KiB")
    return payload


def parse_trust(payload: bytes, held_roots: Sequence[x509.Certificate], now: datetime) -> TrustUpdate:
    """Verify an update against the receiver's current roots; ``TrustUpdateError`` otherwise."""
    obj = _strict(payload)
    try:
        number, at, sig = obj["number"], parse_rfc3339_ms(obj["at"]), unb64(obj["sig"])
        roots = [_cert(p) for p in _strings(obj["roots"])]
        cross = [_cert(p) for p in _strings(obj["cross"])]
        issuing, signer = _cert(obj["issuing"]), _cert(obj["signer"])
        crls = trust.load_crls(str(obj["crl"]).encode("ascii"), "trust update") if obj["crl"] else []
    except (ValueError, TypeError, UnicodeEncodeError, ClinicamError) as exc:
        raise TrustUpdateError(f"trust update: unreadable field ({type(exc).__name__})") from exc
    if type(number) is not int or number < 1 or not roots:
        raise TrustUpdateError("trust update: number must be an integer ≥ 1 and roots non-empty")
    for root in roots:
        _check_root(root, now)
    _check_issuing(issuing, roots[0], now)
    _check_crls(crls, [*roots, issuing])
    if not any(same_cert(signer, r) for r in roots):
        raise TrustUpdateError("trust update: the signer is not one of the roots it lists")
    if not _vouched(signer, held_roots, cross, now):
        raise TrustUpdateError("trust update: signer is not a root this receiver trusts (nor cross-certified by one)")
    body = {k: v for k, v in obj.items() if k != "sig"}
    key = signer.public_key()
    try:
        if not isinstance(key, ec.EllipticCurvePublicKey):
            raise InvalidSignature
        key.verify(sig, canonical(body), ec.ECDSA(hashes.SHA256()))
    except InvalidSignature as exc:
        raise TrustUpdateError("trust update: signature does not verify") from exc
    return TrustUpdate(number, at, roots, issuing, crls, signer)


def _strict(payload: bytes) -> dict[str, Any]:
    if len(payload) > MAX_UPDATE:
        raise TrustUpdateError("trust update larger than 256 KiB")
    try:
        obj = strict_json(payload)
    except (ValueError, UnicodeDecodeError) as exc:
        raise TrustUpdateError("trust update is not strict UTF-8 JSON") from exc
    if not isinstance(obj, dict) or set(obj) != FIELDS or obj["v"] != VERSION:
        raise TrustUpdateError("trust update must have exactly " + ", ".join(sorted(FIELDS)))
    return obj


def _strings(value: object) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value) or len(value) > 8:
        raise TypeError("a list of at most 8 PEM strings")
    return cast(list[str], value)


def _cert(text: object) -> x509.Certificate:
    if not isinstance(text, str):
        raise TypeError("a PEM string")
    return x509.load_pem_x509_certificate(text.encode("ascii"))


def _ca(cert: x509.Certificate) -> x509.BasicConstraints | None:
    try:
        bc = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        return None
    return bc if bc.ca else None




def _check_root(root: x509.Certificate, now: datetime) -> None:
    bc = _ca(root)
    if not trust.issued_by(root, root) or bc is None or (bc.path_length is not None and bc.path_length < 1):
        raise TrustUpdateError("trust update: a root is not a self-signed CA for an issuing CA (path length ≥ 1)")
    if not trust.valid_at(root, now):
        raise TrustUpdateError("trust update: a root is not valid now")


def _check_issuing(issuing: x509.Certificate, root: x509.Certificate, now: datetime) -> None:
    bc = _ca(issuing)
    if bc is None or bc.path_length != 0 or not trust.issued_by(issuing, root) or not trust.valid_at(issuing, now):
        raise TrustUpdateError("trust update: issuing is not a CA (path length 0) of the first root, valid now")


def _check_crls(crls: Sequence[x509.CertificateRevocationList], cas: Sequence[x509.Certificate]) -> None:
    for crl in crls:
        if not any(crl.issuer == ca.subject
                   and crl.is_signature_valid(cast(CertificateIssuerPublicKeyTypes, ca.public_key()))
                   for ca in cas):
            raise TrustUpdateError(f"trust update: the CRL of {crl.issuer.rfc4514_string()} is not signed by "
                                   "one of its CAs")


def _vouched(signer: x509.Certificate, held: Sequence[x509.Certificate], cross: Sequence[x509.Certificate],
             now: datetime) -> bool:
    """The signer is a held root, or a held root certified the signer's key (``cross``)."""
    if any(same_cert(signer, r) for r in held):
        return True
    for c in cross:
        if (c.subject == signer.subject and c.public_key() == signer.public_key() and _ca(c) is not None
                and trust.valid_at(c, now) and any(trust.issued_by(c, r) for r in held)):
            return True
    return False
