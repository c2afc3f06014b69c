"""The signed manifest of a sealed capture (DESIGN §4) and signed audit events (§5).

Everything here is wire format, shared by the station (which signs) and the relay
(which verifies): canonical JSON, the strict parser, the device-certificate check and
ECDSA P-256 signatures. The parser is deliberately unforgiving — a duplicate key, an
unknown or missing key, a boolean where an integer belongs, a float, a version, KEM or
AEAD we do not know: each is ``OpenError("malformed")`` — because a lenient reader is
how two implementations come to disagree about what was signed.

Signatures are deterministic (RFC 6979) so known-answer vectors are exact; a verifier
accepts any valid ECDSA signature.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from clinicam.protocol import certprofile, chain
from clinicam.protocol.ids import is_capture_id, is_device_id, is_hex
from clinicam.protocol.reasons import OpenError, PrePolicyCertificate
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

VERSION = 1
AEADS: tuple[str, ...] = ("AES-256-GCM", "CHACHA20-POLY1305")
KEMS: tuple[str, ...] = ("X25519", "MLKEM768-X25519")
_CREATED = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z")
_SIGN = ec.ECDSA(hashes.SHA256(), deterministic_signing=True)
_VERIFY = ec.ECDSA(hashes.SHA256())


def canonical(obj: Mapping[str, Any]) -> bytes:
    """The canonical bytes of DESIGN §4: sorted keys, no spaces, ASCII-only."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def rfc3339_ms(when: datetime) -> str:
    """``2026-11-26T13:51:25.123Z``: UTC, milliseconds, ``Z`` (DESIGN §4 and §6)."""
    if when.tzinfo is None:
        raise ValueError("timestamps must be timezone-aware; pass datetime.now(UTC)")
    utc = when.astimezone(UTC)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"


def parse_rfc3339_ms(text: str) -> datetime:
    """Inverse of :func:`rfc3339_ms`; ``ValueError`` for any other shape."""
    if not _CREATED.fullmatch(text):
        raise ValueError("timestamp must look like 2026-01-31T12:00:00.000Z")
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)


def b64(data: bytes) -> str:
    """Standard base64 with padding, as every base64 field of the format."""
    return base64.b64encode(data).decode("ascii")


def unb64(text: str) -> bytes:
    """Strict standard base64; ``ValueError`` for anything else."""
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError) as exc:
        raise ValueError("not standard base64") from exc


# -- strict parsing -----------------------------------------------------------------


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        raise ValueError("duplicate key")
    return obj


def _refuse(_: str) -> Any:
    raise ValueError("floats, NaN and Infinity are not part of the format")


def strict_json(payload: bytes) -> Any:
    """UTF-8 JSON without duplicate keys, floats or NaN; ``ValueError`` otherwise."""
    text = payload.decode("utf-8")
    return json.loads(
        text, object_pairs_hook=_no_duplicates, parse_float=_refuse, parse_constant=_refuse
    )


def _is_int(x: Any, low: int = 0) -> bool:
    return type(x) is int and x >= low


def _is_b64(x: Any) -> bool:
    if not isinstance(x, str):
        return False
    try:
        unb64(x)
    except ValueError:
        return False
    return True


def _is_created(x: Any) -> bool:
    try:
        parse_rfc3339_ms(x)
    except (TypeError, ValueError):
        return False
    return True


_FIELDS: dict[str, Callable[[Any], bool]] = {
    "v": lambda x: type(x) is int and x == VERSION,
    "capture_id": is_capture_id,
    "device": is_device_id,
    "created": _is_created,
    "boot": is_hex(32),
    "seq": lambda x: _is_int(x, 1),
    "aead": lambda x: x in AEADS,
    "kem": lambda x: x in KEMS,
    "recipient": is_hex(64),
    "wrapped_key": _is_b64,
    "parts": lambda x: _is_int(x, 2),
    "part_sha256": lambda x: type(x) is list and all(is_hex(64)(h) for h in x),
    "size": lambda x: _is_int(x, 0),
    "cert": lambda x: isinstance(x, str) and x.isascii(),
}
MANIFEST_KEYS: frozenset[str] = frozenset(_FIELDS)


def check_manifest(m: Any) -> dict[str, Any]:
    """Validate a manifest object's keys and types; ``OpenError("malformed")`` if off."""
    if type(m) is not dict or set(m) != MANIFEST_KEYS:
        raise OpenError("malformed", "manifest keys are not exactly those of DESIGN §4")
    bad = sorted(k for k, ok in _FIELDS.items() if not ok(m[k]))
    if bad:
        raise OpenError("malformed", f"manifest fields out of format: {', '.join(bad)}")
    if len(m["part_sha256"]) != m["parts"]:
        raise OpenError("malformed", "manifest part_sha256 does not list every part")
    return m


def parse_manifest_message(payload: bytes) -> tuple[dict[str, Any], bytes]:
    """Parse ``{"m": …, "sig": …}`` strictly; returns the manifest and the raw signature."""
    try:
        msg = strict_json(payload)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise OpenError("malformed", "manifest message is not strict UTF-8 JSON") from exc
    if type(msg) is not dict or set(msg) != {"m", "sig"} or not _is_b64(msg["sig"]):
        raise OpenError("malformed", "manifest message must be {\"m\": {...}, \"sig\": base64}")
    return check_manifest(msg["m"]), unb64(msg["sig"])


# -- signatures ---------------------------------------------------------------------


def sign(data: bytes, device_key: ec.EllipticCurvePrivateKey) -> bytes:
    """Deterministic ECDSA P-256/SHA-256 (RFC 6979), DER."""
    return device_key.sign(data, _SIGN)


def verify(data: bytes, sig: bytes, public_key: Any) -> None:
    """Verify an ECDSA P-256 signature; ``OpenError("signature")`` when it does not hold."""
    if not isinstance(public_key, ec.EllipticCurvePublicKey):
        raise OpenError("signature", "signer key is not an ECDSA key")
    try:
        public_key.verify(sig, data, _VERIFY)
    except InvalidSignature:
        raise OpenError("signature", "signature does not verify") from None


def manifest_message(m: Mapping[str, Any], device_key: ec.EllipticCurvePrivateKey) -> bytes:
    """Sign a manifest and return the manifest message payload of DESIGN §4."""
    return canonical({"m": m, "sig": b64(sign(canonical(m), device_key))})


def sign_event(event: Mapping[str, Any], device_key: ec.EllipticCurvePrivateKey) -> dict[str, Any]:
    """Return ``event`` with ``sig``: ECDSA over the canonical event without ``sig`` (§5)."""
    body = {k: v for k, v in event.items() if k != "sig"}
    return {**body, "sig": b64(sign(canonical(body), device_key))}


def verify_event(event: Mapping[str, Any], signer: Any) -> dict[str, Any]:
    """Check a signed event (e.g. ``void``) against the device's certificate or public key.

    Returns the event without ``sig``. Raises ``OpenError("malformed")`` when there is no
    base64 ``sig``, ``OpenError("signature")`` when it does not verify.
    """
    sig = event.get("sig") if isinstance(event, Mapping) else None
    if not _is_b64(sig):
        raise OpenError("malformed", "event has no base64 sig")
    body = {k: v for k, v in event.items() if k != "sig"}
    key = signer.public_key() if isinstance(signer, x509.Certificate) else signer
    verify(canonical(body), unb64(str(sig)), key)
    return body


# -- device certificate -------------------------------------------------------------


def _refuse_cert(why: str) -> OpenError:
    return OpenError("certificate", f"device certificate refused: {why}")


def _load_one_cert(pem: str) -> x509.Certificate:
    if pem.count("-----BEGIN CERTIFICATE-----") != 1:
        raise _refuse_cert("cert must hold exactly one PEM certificate")
    try:
        return x509.load_pem_x509_certificate(pem.encode("ascii"))
    except ValueError:
        raise _refuse_cert("unreadable PEM") from None


def _check_issuer(cert: x509.Certificate, store: chain.TrustStore, now: datetime) -> None:
    try:
        store.path(cert, now)
    except chain.ChainError as exc:
        raise _refuse_cert(str(exc)) from None


def _check_validity(cert: x509.Certificate, now: datetime) -> None:
    if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
        raise _refuse_cert("not valid at this time")


def _check_eku(cert: x509.Certificate) -> None:
    try:
        eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        raise _refuse_cert("no extendedKeyUsage") from None
    if ExtendedKeyUsageOID.CLIENT_AUTH not in eku:
        raise _refuse_cert("extendedKeyUsage lacks clientAuth")


def _check_cn(cert: x509.Certificate, device: str) -> None:
    cns = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if len(cns) != 1 or cns[0].value != device:
        raise _refuse_cert("subject must have exactly one CN equal to the manifest's device")


def _check_revocation(cert: x509.Certificate, store: chain.TrustStore, now: datetime) -> None:
    # A CRL set that lacks the issuer's CRL is a relay configuration fault, not the
    # station's: answering "rejected" would lose the capture, so TrustStore raises
    # ConfigError for it instead.
    try:
        store.verify(cert, now)
    except chain.ChainError as exc:
        raise _refuse_cert(str(exc)) from None


def _check_profile(cert: x509.Certificate, now: datetime, legacy_until: datetime | None) -> None:
    """Only a station certificate files photos (DESIGN §3.5, §7; see ``certprofile``)."""
    kind = certprofile.profile(cert)
    if kind == "other":
        raise OpenError("identity", "not a station certificate (operator, relay or service identity)")
    if kind == "pre-policy" and (legacy_until is None or now >= legacy_until):
        raise PrePolicyCertificate()


def check_device_cert(
    pem: str,
    device: str,
    ca_cert: x509.Certificate | Sequence[x509.Certificate],
    *,
    crl: x509.CertificateRevocationList | None = None,
    now: datetime | None = None,
    legacy_until: datetime | None = None,
    chain_certs: Sequence[x509.Certificate] = (),
    crls: Sequence[x509.CertificateRevocationList] = (),
) -> x509.Certificate:
    """The §4 certificate checks; returns the certificate or raises ``certificate``.

    A certificate of the site that is not a station's is ``identity``; a pre-policy
    station certificate is accepted only before ``legacy_until``, else it raises
    ``PrePolicyCertificate`` (also ``identity``, which the relay answers with ``retry``).
    """
    cert = _load_one_cert(pem)
    now = now or datetime.now(UTC)
    # Two-tier sites: the relay holds the issuing CA(s) (``chain_certs``), DESIGN §4.
    all_crls = [*crls, *([crl] if crl is not None else [])]
    # Several roots while a CA rotation overlaps (issue 17): each is an anchor.
    roots = [ca_cert] if isinstance(ca_cert, x509.Certificate) else list(ca_cert)
    store = chain.TrustStore(roots, tuple(chain_certs), tuple(all_crls))
    _check_issuer(cert, store, now)
    _check_profile(cert, now, legacy_until)
    _check_validity(cert, now)
    _check_eku(cert)
    _check_cn(cert, device)
    key = cert.public_key()
    if not (isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, ec.SECP256R1)):
        raise _refuse_cert("device key must be ECDSA P-256")
    if all_crls:
        _check_revocation(cert, store, now)
    return cert
