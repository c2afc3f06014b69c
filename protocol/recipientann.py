"""Recipient-key rotation over MQTT (issue 17): the site announces the key stations seal to.

``P/_site/recipient`` (registrar → stations; retained) carries the current
``recipient.pub`` (DESIGN §4 format), its fingerprint, the time of the announcement and
the issuing CA certificate that signed it; ``sig`` is ECDSA P-256/SHA-256 by the
issuing CA key over the canonical JSON without ``sig``. A station verifies that the
issuing CA was issued by its pinned root (``ca.pem``) and is a valid CA now, then the
signature, and only then seals new captures to the announced key. Captures already
sealed stay sealed to the old key; the relay holds both keys during the overlap.

Two guards keep a replay from doing harm: an announcement no newer (``at``) than the
one a station holds is ignored, so a stale retained copy cannot move stations back to a
retired key; and the KEM may not change (a hybrid site never falls back to X25519).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from clinicam.common.errors import ClinicamError
from clinicam.protocol.chain import issued_by
from clinicam.protocol.manifest import b64, canonical, parse_rfc3339_ms, rfc3339_ms, sign, strict_json, unb64
from clinicam.protocol.recipient import RecipientPublicKey, load_recipient_public
from clinicam.protocol.topics import Topics
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

VERSION = 1
MAX_ANNOUNCEMENT = 65536
FIELDS = {"v", "recipient", "fingerprint", "at", "signer", "sig"}


class AnnouncementError(ClinicamError):
    """A recipient announcement a station must not adopt; the message says why."""


def recipient_topic(prefix: str) -> str:
    """``P/_site/recipient``: the site's current recipient key, retained."""
    return Topics(prefix).site_recipient()


@dataclass(frozen=True)
class Announcement:
    recipient: RecipientPublicKey
    pem: bytes
    at: datetime


def build_announcement(*, recipient_pem: bytes, at: datetime, issuing_key: ec.EllipticCurvePrivateKey,
                       issuing_cert: x509.Certificate) -> bytes:
    """The signed announcement of ``recipient_pem``."""
    pub = load_recipient_public(recipient_pem)
    body = {"v": VERSION, "recipient": recipient_pem.decode("ascii"), "fingerprint": pub.fingerprint,
            "at": rfc3339_ms(at), "signer": issuing_cert.public_bytes(serialization.Encoding.PEM).decode("ascii")}
    return canonical({**body, "sig": b64(sign(canonical(body), issuing_key))})



def parse_announcement(payload: bytes, *, root: x509.Certificate | Sequence[x509.Certificate], now: datetime,
                       current: RecipientPublicKey | None = None) -> Announcement:
    """Verify an announcement against the pinned ``root`` (or any of several, while a CA
    rotation overlaps); ``AnnouncementError`` otherwise."""
    if len(payload) > MAX_ANNOUNCEMENT:
        raise AnnouncementError("recipient announcement larger than 64 KiB")
    try:
        obj = strict_json(payload)
    except (ValueError, UnicodeDecodeError) as exc:
        raise AnnouncementError("recipient announcement is not strict UTF-8 JSON") from exc
    if not isinstance(obj, dict) or set(obj) != FIELDS or obj["v"] != VERSION:
        raise AnnouncementError("recipient announcement must have exactly " + ", ".join(sorted(FIELDS)))
    try:
        at = parse_rfc3339_ms(obj["at"])
        sig = unb64(obj["sig"])
        signer = x509.load_pem_x509_certificate(str(obj["signer"]).encode("ascii"))
        pem = str(obj["recipient"]).encode("ascii")
        pub = load_recipient_public(pem)
    except (ValueError, TypeError, UnicodeEncodeError, ClinicamError) as exc:
        raise AnnouncementError(f"recipient announcement: unreadable field ({type(exc).__name__})") from exc
    roots = [root] if isinstance(root, x509.Certificate) else list(root)
    if not any(issued_by(signer, r) for r in roots):
        raise AnnouncementError("recipient announcement: signer not issued by this site's root")
    try:
        bc = signer.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound as exc:
        raise AnnouncementError("recipient announcement: signer is not a CA") from exc
    if not bc.ca or not signer.not_valid_before_utc <= now <= signer.not_valid_after_utc:
        raise AnnouncementError("recipient announcement: signer is not a CA valid now")
    key = signer.public_key()
    body = {k: v for k, v in obj.items() if k != "sig"}
    try:
        if not isinstance(key, ec.EllipticCurvePublicKey):
            raise InvalidSignature
        key.verify(sig, canonical(body), ec.ECDSA(hashes.SHA256()))
    except InvalidSignature as exc:
        raise AnnouncementError("recipient announcement: signature does not verify") from exc
    if obj["fingerprint"] != pub.fingerprint:
        raise AnnouncementError("recipient announcement: fingerprint does not match the key")
    if current is not None and pub.kem != current.kem:
        raise AnnouncementError(f"recipient announcement changes the KEM ({current.kem} → {pub.kem}): refused")
    return Announcement(pub, pem, at)
