"""Revocation over MQTT (issue 17): the site's CRL bulletins and the broker agent's receipt.

A bulletin carries site CRLs (PEM) and the device ids revoked by its CRL number, signed
by the CA whose CRL carries that number — its *author*. Each CRL has one author and one
retained topic, so neither overwrites the other's copy:

- ``P/_site/crl``: the issuing CA's CRL, from the registrar (``relay revoke`` on the
  relay host: stations of a two-tier site);
- ``P/_site/crl-root``: the root's CRL, from the admin machine (``provision revoke``:
  service identities, the issuing CA, and every certificate of a single-tier site).

A CRL is self-authenticating, but the list of ids is not: the ids tell the broker agent
whose ACL block to drop and the registrar or admin whose session to cut, so the whole
bulletin is signed. ``_site`` can never be a device id (``[a-z0-9-]``), so no station's
ACL block can reach it.

``P/_site/crl-installed`` (broker agent → registrar, admin; retained) says which CRL
numbers the broker has loaded (``number``: the issuing CA's, ``root``: the root's); from
then on a revoked identity's reconnect fails the TLS handshake, so its open session is
cut (``provisioning.kick``).

Receivers keep, per issuer, the CRL with the highest CRL number: an older bulletin (a
replay, a stale retained message) is refused, and a newer CRL that drops a serial the
held one lists is refused too — a merge never loses an entry. A bulletin may carry an
older copy of another author's CRL (the registrar's copy of the root CRL): that copy is
ignored, never installed over the newer one.
"""

from __future__ import annotations

import re
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
SITE_LEVEL = "_site"
MAX_BULLETIN = 1 << 20  # 1 MiB: thousands of revoked serials; anything bigger is not ours
MAX_IDS = 1000
_DEVICE = re.compile(r"[a-z0-9-]{3,64}")


def is_identity(name: str) -> bool:
    """Whether ``name`` can stand in a bulletin's ``revoked`` list (a client identity's CN)."""
    return bool(_DEVICE.fullmatch(name))


class RevocationError(ClinicamError):
    """A CRL bulletin or receipt that must not be installed; the message says why."""


def crl_topic(prefix: str) -> str:
    """``P/_site/crl``: the site's CRLs, retained."""
    return Topics(prefix).site_crl()


def root_crl_topic(prefix: str) -> str:
    """``P/_site/crl-root``: the root's CRL bulletin (from the admin machine), retained."""
    return Topics(prefix).site_crl_root()


def installed_topic(prefix: str) -> str:
    """``P/_site/crl-installed``: the CRL number the broker has loaded, retained."""
    return Topics(prefix).site_crl_installed()


def crl_number(crl: x509.CertificateRevocationList) -> int:
    """The CRL number extension; 0 for CRLs written before numbers existed."""
    try:
        return int(crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number)
    except x509.ExtensionNotFound:
        return 0


def crls_pem(crls: Sequence[x509.CertificateRevocationList]) -> bytes:
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in crls)


def _serials(crl: x509.CertificateRevocationList) -> set[int]:
    return {r.serial_number for r in crl}


def successor(held: Sequence[x509.CertificateRevocationList],
              new: Sequence[x509.CertificateRevocationList], *,
              author: x509.Name | None = None) -> list[x509.CertificateRevocationList]:
    """The CRLs to hold after ``new`` arrives: per issuer, the higher CRL number wins.

    Raises ``RevocationError`` when ``new`` holds an issuer's CRL with a lower number
    than the held one (a rollback), or a higher one that lacks a serial the held one
    lists (an entry would be lost). With ``author`` (a bulletin's signer), only the
    author's own CRL must not go back; another issuer's older or conflicting copy is
    ignored (the held one stays).
    """
    by_issuer: dict[bytes, x509.CertificateRevocationList] = {c.issuer.public_bytes(): c for c in held}
    for crl in new:
        key = crl.issuer.public_bytes()
        old = by_issuer.get(key)
        if old is not None and crl_number(crl) == crl_number(old) == 0:
            by_issuer[key] = crl  # CRLs from before CRL numbers: the newest copy wins, as before
            continue
        if (old is not None and author is not None and crl.issuer != author
                and crl_number(crl) <= crl_number(old)):
            continue  # another author's older copy: keep the newer one held
        if old is not None:
            if crl_number(crl) < crl_number(old):
                raise RevocationError(f"CRL number {crl_number(crl)} of {crl.issuer.rfc4514_string()} is older "
                                      f"than the installed {crl_number(old)}: refused (replay or stale copy)")
            if crl_number(crl) == crl_number(old) and _serials(crl) != _serials(old):
                raise RevocationError(f"CRL number {crl_number(crl)} of {crl.issuer.rfc4514_string()} differs "
                                      "from the installed CRL with the same number: refused")
            if not _serials(old) <= _serials(crl):
                raise RevocationError(f"CRL number {crl_number(crl)} of {crl.issuer.rfc4514_string()} drops "
                                      "serials the installed CRL lists: refused (a merge never loses an entry)")
            if crl_number(crl) == crl_number(old):
                continue
        by_issuer[key] = crl
    return list(by_issuer.values())


@dataclass(frozen=True)
class Bulletin:
    """A verified CRL bulletin: ``number`` is the CRL number of its author (``signer``,
    the issuing CA or the root)."""

    number: int
    at: datetime
    crls: list[x509.CertificateRevocationList]
    revoked: list[str]
    signer: x509.Name

    @property
    def pem(self) -> bytes:
        return crls_pem(self.crls)


def build_bulletin(*, crls: Sequence[x509.CertificateRevocationList], revoked: Sequence[str], at: datetime,
                   signer_key: ec.EllipticCurvePrivateKey, signer_cert: x509.Certificate) -> bytes:
    """The signed bulletin for ``crls``, which must hold the CRL of ``signer_cert`` (the
    issuing CA for the registrar's, the root for the admin's); its number is the bulletin's."""
    own = [c for c in crls if c.issuer == signer_cert.subject]
    if len(own) != 1:
        raise RevocationError("the bulletin needs exactly one CRL of its signer")
    for device in revoked:
        if not _DEVICE.fullmatch(device):
            raise RevocationError(f"{device!r} is not a device id")
    body: dict[str, Any] = {"v": VERSION, "number": crl_number(own[0]), "at": rfc3339_ms(at),
                            "crl": crls_pem(crls).decode("ascii"), "revoked": sorted(set(revoked))}
    return canonical({**body, "sig": b64(sign(canonical(body), signer_key))})


def parse_bulletin(payload: bytes, store: trust.TrustStore) -> Bulletin:
    """Parse and verify a bulletin against the site's roots and issuing CAs (``store``;
    its own CRLs are not consulted). Every CRL must be signed by one of them, and the
    signature by the CA (issuing CA or root) whose CRL carries the bulletin's number."""
    if len(payload) > MAX_BULLETIN:
        raise RevocationError("CRL bulletin larger than 1 MiB: refused")
    try:
        obj = strict_json(payload)
    except (ValueError, UnicodeDecodeError) as exc:
        raise RevocationError("CRL bulletin is not strict UTF-8 JSON") from exc
    if not isinstance(obj, dict) or set(obj) != {"v", "number", "at", "crl", "revoked", "sig"}:
        raise RevocationError("CRL bulletin must have exactly v, number, at, crl, revoked, sig")
    if obj["v"] != VERSION or type(obj["number"]) is not int or obj["number"] < 1:
        raise RevocationError("CRL bulletin: unknown version or bad number")
    revoked = obj["revoked"]
    if (not isinstance(revoked, list) or len(revoked) > MAX_IDS
            or not all(isinstance(d, str) and _DEVICE.fullmatch(d) for d in revoked)):
        raise RevocationError("CRL bulletin: revoked must be a list of device ids")
    try:
        at = parse_rfc3339_ms(obj["at"])
        sig = unb64(obj["sig"])
        crls = trust.load_crls(str(obj["crl"]).encode("ascii"), "CRL bulletin")
    except (ValueError, TypeError, UnicodeEncodeError, ClinicamError) as exc:
        raise RevocationError(f"CRL bulletin: unreadable field ({type(exc).__name__})") from exc
    signers = [*store.roots, *store.intermediates]
    for crl in crls:
        if not any(crl.issuer == s.subject
                   and crl.is_signature_valid(cast(CertificateIssuerPublicKeyTypes, s.public_key()))
                   for s in signers):
            raise RevocationError(f"CRL of {crl.issuer.rfc4514_string()} is not signed by this site: refused")
    authors = [s for s in signers if any(c.issuer == s.subject and crl_number(c) == obj["number"] for c in crls)]
    body = {k: v for k, v in obj.items() if k != "sig"}
    for cert in authors:
        key = cert.public_key()
        try:
            if isinstance(key, ec.EllipticCurvePublicKey):
                key.verify(sig, canonical(body), ec.ECDSA(hashes.SHA256()))
                return Bulletin(obj["number"], at, crls, list(revoked), cert.subject)
        except InvalidSignature:
            continue
    raise RevocationError("CRL bulletin: not signed by the site CA whose CRL it numbers: refused")


def build_installed(number: int, at: datetime, root: int = 0) -> bytes:
    """The broker agent's receipt: ``{"v": 1, "number", "root", "at"}`` — the issuing CA's
    and the root's CRL numbers the broker has loaded."""
    return canonical({"v": VERSION, "number": number, "root": root, "at": rfc3339_ms(at)})


@dataclass(frozen=True)
class Receipt:
    """What the broker has loaded: the issuing CA's CRL number (0: none) and the root's."""

    number: int
    root: int


def parse_receipt(payload: bytes) -> Receipt:
    """A receipt, or ``RevocationError``. ``root`` is absent from an agent of before root
    bulletins (read as 0)."""
    try:
        obj = strict_json(payload)
    except (ValueError, UnicodeDecodeError) as exc:
        raise RevocationError("CRL receipt is not strict UTF-8 JSON") from exc
    if (not isinstance(obj, dict) or set(obj) - {"root"} != {"v", "number", "at"} or obj["v"] != VERSION
            or any(type(obj.get(k, 0)) is not int or obj.get(k, 0) < 0 for k in ("number", "root"))):
        raise RevocationError("CRL receipt must be {v: 1, number, root, at}")
    return Receipt(int(obj["number"]), int(obj.get("root", 0)))


def parse_installed(payload: bytes) -> int:
    """The issuing CA's CRL number of a receipt, or ``RevocationError``."""
    return parse_receipt(payload).number
