"""The relay's recipient key: the public half seals every capture, the private half opens it.

DESIGN §4 fixes the formats byte for byte, because a station, a relay and any
independent implementation must agree on them:

* ``recipient.pub`` is PEM SubjectPublicKeyInfo: one X25519 block, or for the
  post-quantum hybrid ``MLKEM768-X25519`` an ML-KEM-768 block followed by an X25519
  block. ``recipient.key`` is the same with PKCS#8 private blocks.
* The fingerprint is the lowercase hex SHA-256 of the raw public bytes (hybrid: the
  ML-KEM-768 raw bytes followed by the X25519 raw bytes). It names the key in every
  manifest, so a relay holding several keys (rotation) picks the right one.

The hybrid is held as its two halves and only ever used as a pair: a hybrid key file
with one block missing, or its blocks in the other order, is refused, and its
fingerprint never equals that of its X25519 half alone, so a relay never opens a
capture with one half of a hybrid key.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Any

from clinicam.common.errors import ProvisioningError
from cryptography.hazmat.primitives import hpke, serialization
from cryptography.hazmat.primitives.asymmetric import mlkem, x25519

KEM_X25519 = "X25519"
KEM_HYBRID = "MLKEM768-X25519"
KEMS: tuple[str, ...] = (KEM_X25519, KEM_HYBRID)

_HPKE_KEM = {KEM_X25519: hpke.KEM.X25519, KEM_HYBRID: hpke.KEM.MLKEM768_X25519}
_PEM_BLOCK = re.compile(rb"-----BEGIN ([A-Z ]+)-----\r?\n.*?-----END \1-----\r?\n?", re.DOTALL)


def hpke_suite(kem: str) -> hpke.Suite:
    """The HPKE suite of DESIGN §4 for ``kem``: HKDF-SHA256 and AES-256-GCM."""
    return hpke.Suite(_hpke_kem(kem), hpke.KDF.HKDF_SHA256, hpke.AEAD.AES_256_GCM)


def _hpke_kem(kem: str) -> hpke.KEM:
    try:
        return _HPKE_KEM[kem]
    except KeyError:
        raise ProvisioningError(
            f"unknown recipient KEM {kem!r}: use one of {', '.join(KEMS)}"
        ) from None


@dataclass(frozen=True)
class RecipientPublicKey:
    """The public recipient key a station seals content keys to."""

    kem: str
    x25519: x25519.X25519PublicKey
    mlkem: mlkem.MLKEM768PublicKey | None = None

    def raw_bytes(self) -> bytes:
        """Raw public bytes as DESIGN §4 fingerprints them (ML-KEM first for the hybrid)."""
        raw = self.x25519.public_bytes_raw()
        return raw if self.mlkem is None else self.mlkem.public_bytes_raw() + raw

    @property
    def fingerprint(self) -> str:
        """Lowercase hex SHA-256 of :meth:`raw_bytes`; the manifest's ``recipient``."""
        return hashlib.sha256(self.raw_bytes()).hexdigest()

    def public_pem(self) -> bytes:
        """``recipient.pub``: SPKI PEM, ML-KEM-768 block then X25519 block for the hybrid."""
        spki = (serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        blocks = [self.x25519.public_bytes(*spki)]
        if self.mlkem is not None:
            blocks.insert(0, self.mlkem.public_bytes(*spki))
        return b"".join(blocks)

    def hpke_key(self) -> Any:
        """The object ``hpke.Suite.encrypt`` takes for this KEM."""
        if self.mlkem is None:
            return self.x25519
        return hpke.MLKEM768X25519PublicKey(self.mlkem, self.x25519)

    def suite(self) -> hpke.Suite:
        """The HPKE suite for this key's KEM."""
        return hpke_suite(self.kem)


@dataclass(frozen=True)
class RecipientPrivateKey:
    """The relay's private recipient key; stays in ``relay/`` and never on a station."""

    kem: str
    x25519: x25519.X25519PrivateKey
    mlkem: mlkem.MLKEM768PrivateKey | None = None

    def public_key(self) -> RecipientPublicKey:
        """The matching public key."""
        pq = None if self.mlkem is None else self.mlkem.public_key()
        return RecipientPublicKey(self.kem, self.x25519.public_key(), pq)

    @property
    def fingerprint(self) -> str:
        """The fingerprint of the public half."""
        return self.public_key().fingerprint

    def public_pem(self) -> bytes:
        """``recipient.pub`` for this key."""
        return self.public_key().public_pem()

    def private_pem(self) -> bytes:
        """``recipient.key``: PKCS#8 PEM, ML-KEM-768 block then X25519 block for the hybrid."""
        pkcs8 = (
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        blocks = [self.x25519.private_bytes(*pkcs8)]
        if self.mlkem is not None:
            blocks.insert(0, self.mlkem.private_bytes(*pkcs8))
        return b"".join(blocks)

    def hpke_key(self) -> Any:
        """The object ``hpke.Suite.decrypt`` takes for this KEM."""
        if self.mlkem is None:
            return self.x25519
        return hpke.MLKEM768X25519PrivateKey(self.mlkem, self.x25519)

    def suite(self) -> hpke.Suite:
        """The HPKE suite for this key's KEM."""
        return hpke_suite(self.kem)


def generate_recipient_key(kem: str) -> RecipientPrivateKey:
    """Make a fresh recipient key pair for ``kem`` (``X25519`` or ``MLKEM768-X25519``)."""
    _hpke_kem(kem)
    x = x25519.X25519PrivateKey.generate()
    if kem == KEM_X25519:
        return RecipientPrivateKey(kem, x)
    return RecipientPrivateKey(kem, x, mlkem.MLKEM768PrivateKey.generate())


def _blocks(pem: bytes, what: str) -> list[bytes]:
    blocks = [m.group(0) for m in _PEM_BLOCK.finditer(pem)]
    if len(blocks) not in (1, 2):
        raise ProvisioningError(
            f"recipient {what} key must hold one X25519 PEM block, or an ML-KEM-768 block "
            f"followed by an X25519 block; found {len(blocks)} blocks"
        )
    return blocks


def _expect(key: object, cls: type, what: str, position: str) -> Any:
    if not isinstance(key, cls):
        raise ProvisioningError(
            f"recipient {what} key: the {position} PEM block must be {cls.__name__}, "
            f"not {type(key).__name__}; regenerate it with 'clinicam provision site-init'"
        )
    return key


def _load_one(block: bytes, private: bool) -> object:
    try:
        if private:
            return serialization.load_pem_private_key(block, password=None)
        return serialization.load_pem_public_key(block)
    except (ValueError, TypeError) as exc:
        kind = "private" if private else "public"
        raise ProvisioningError(f"recipient {kind} key holds an unreadable PEM block") from exc


def load_recipient_public(pem: bytes) -> RecipientPublicKey:
    """Read ``recipient.pub`` (DESIGN §4), refusing anything but the two exact layouts."""
    keys = [_load_one(b, private=False) for b in _blocks(pem, "public")]
    x = _expect(keys[-1], x25519.X25519PublicKey, "public", "last")
    if len(keys) == 1:
        return RecipientPublicKey(KEM_X25519, x)
    pq = _expect(keys[0], mlkem.MLKEM768PublicKey, "public", "first")
    return RecipientPublicKey(KEM_HYBRID, x, pq)


def load_recipient_private(pem: bytes) -> RecipientPrivateKey:
    """Read ``recipient.key`` (DESIGN §4), refusing anything but the two exact layouts."""
    keys = [_load_one(b, private=True) for b in _blocks(pem, "private")]
    x = _expect(keys[-1], x25519.X25519PrivateKey, "private", "last")
    if len(keys) == 1:
        return RecipientPrivateKey(KEM_X25519, x)
    pq = _expect(keys[0], mlkem.MLKEM768PrivateKey, "private", "first")
    return RecipientPrivateKey(KEM_HYBRID, x, pq)
