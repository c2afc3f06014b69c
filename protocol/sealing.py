"""Sealed capture v1 (DESIGN §4): the station seals, the relay opens.

Sealing streams: each part is encrypted with ``encrypt_into`` straight from the
caller's plaintext ``bytearray`` into its slice of one ciphertext buffer that holds all
parts back to back (their sizes are known before encrypting); no second plaintext copy
of the image is made. The buffer comes from ``buffers`` — the vault's arena in the
station, so nothing is allocated, zero-filled or page-faulted per capture and a wipe is
one ``memset`` — or from the heap by default. Afterwards the image buffer and the content key
``K`` are overwritten with zeros, and ``K`` has been wrapped (HPKE) to the relay's
public key, so the station cannot open what it holds.

Copies Python cannot zero, and what the process does about them (see ``memory``):
the metadata's JSON text (an immutable ``str``/``bytes``, freed right after part 0 is
encrypted), the 32 random bytes ``rng`` returns for ``K`` before they are copied into
a zeroable ``bytearray``, and OpenSSL's key schedule inside the AEAD object (which
OpenSSL cleanses when the object is freed). The station runs with ``PYTHONMALLOC=malloc``
and ``MALLOC_PERTURB_`` so freed blocks are overwritten, locked in RAM and non-dumpable.

Opening checks, in DESIGN §4's order, and fails with ``OpenError(reason)``.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from clinicam.common.errors import ConfigError, SealError
from clinicam.common.zeroize import Buffers, HeapBuffers, zero
from clinicam.protocol import manifest as mf
from clinicam.protocol.ids import DEVICE_ID_RULE, is_device_id, is_hex
from clinicam.protocol.manifest import parse_manifest_message, sign_event, verify_event
from clinicam.protocol.reasons import OpenError
from clinicam.protocol.recipient import RecipientPrivateKey, RecipientPublicKey
from cryptography import x509
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305

__all__ = [
    "CHUNK_SIZE", "OpenedCapture", "SealedCapture", "Sealer", "choose_aead", "open_capture",
    "parse_manifest_message", "sign_event", "verify_event",
]

CHUNK_SIZE = 122880
TAG_SIZE = 16
FORMAT = b"clinicam/v1"
KEY_INFO = b"clinicam/v1 key "
AES_GCM, CHACHA = mf.AEADS

Cipher = AESGCM | ChaCha20Poly1305
Part = bytearray | memoryview  # a ciphertext part, writable so that it can be zeroed


def cpu_has_aes(cpuinfo_path: str | Path = "/proc/cpuinfo") -> bool:
    """Whether the CPU has AES instructions: ``aes`` in x86 ``flags`` or Arm ``Features``."""
    try:
        text = Path(cpuinfo_path).read_text(encoding="ascii", errors="replace")
    except OSError:
        return False  # unknown CPU: ChaCha20 is fast everywhere, AES only with hardware
    for line in text.splitlines():
        name, _, value = line.partition(":")
        if name.strip() in ("flags", "Features") and "aes" in value.split():
            return True
    return False


def choose_aead(preference: str = "auto", cpuinfo_path: str | Path = "/proc/cpuinfo") -> str:
    """``AES-256-GCM`` with AES instructions, else ``CHACHA20-POLY1305``; or the forced one."""
    if preference == "auto":
        return AES_GCM if cpu_has_aes(cpuinfo_path) else CHACHA
    if preference not in mf.AEADS:
        raise ConfigError(f"aead must be 'auto', {' or '.join(map(repr, mf.AEADS))}, "
                          f"not {preference!r}")
    return preference


def nonce(i: int) -> bytes:
    """``nonce_i = 4 zero bytes || uint64_be(i)``."""
    return bytes(4) + i.to_bytes(8, "big")


def aad(capture_id: bytes, i: int, parts: int) -> bytes:
    """``aad_i = "clinicam/v1" || capture_id || uint32_be(i) || uint32_be(parts)``."""
    return FORMAT + capture_id + i.to_bytes(4, "big") + parts.to_bytes(4, "big")


def _cipher(aead: str, key: bytearray | bytes) -> Cipher:
    return AESGCM(key) if aead == AES_GCM else ChaCha20Poly1305(key)


def _encrypt_part(cipher: Cipher, capture_id: bytes, i: int, count: int,
                  plain: bytes | memoryview, ct: memoryview) -> str:
    """``ct_i`` into its slice of the capture's buffer; returns its SHA-256."""
    cipher.encrypt_into(nonce(i), plain, aad(capture_id, i, count), ct)
    return hashlib.sha256(ct).hexdigest()


def _utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass
class SealedCapture:
    """What the vault holds and the uplink sends: ciphertext only.

    A capture from :class:`Sealer` has ``parts`` that are ``memoryview`` slices of one
    ``storage`` buffer, back to back, so zeroing it is one call; one built by hand may
    have parts of their own (``bytearray``) and no storage.
    """

    capture_id: str
    manifest: bytes  # the manifest message payload {"m": …, "sig": …}
    parts: Sequence[Part]  # ct_0 … ct_n
    size: int  # sum of len(ct_i)
    storage: memoryview | None = field(default=None, repr=False, compare=False)

    @property
    def nbytes(self) -> int:
        """Bytes this capture occupies: parts plus manifest."""
        return self.size + len(self.manifest)

    def scrub(self) -> None:
        """Overwrite every ciphertext byte with zeros (the buffer stays allocated)."""
        if self.storage is not None:
            zero(self.storage)
        else:
            for part in self.parts:
                zero(part)


@dataclass(frozen=True)
class OpenedCapture:
    """A verified, decrypted capture, as the relay hands it to its sinks."""

    device: str
    capture_id: str
    manifest: dict[str, Any]
    metadata: dict[str, Any]
    image: bytes


def _metadata_json(metadata: Mapping[str, Any], size: int, sha256: str) -> bytes:
    """Part 0; the sealer is the authority on the image's size and hash."""
    image = dict(metadata.get("image") or {})
    for key, value in (("size", size), ("sha256", sha256)):
        if image.setdefault(key, value) != value:
            raise SealError(f"metadata image.{key} disagrees with the image being sealed")
    try:
        text = json.dumps({**metadata, "image": image}, sort_keys=True,
                          separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise SealError("metadata must be JSON: dicts, lists, str, int, float, bool, None") \
            from exc
    return text.encode("utf-8")


class Sealer:
    """Seals captures for one device, one recipient key, one boot."""

    def __init__(
        self,
        device_id: str,
        device_key: ec.EllipticCurvePrivateKey,
        device_cert_pem: bytes | str,
        recipient_public: RecipientPublicKey,
        *,
        aead: str = "auto",
        chunk_size: int = CHUNK_SIZE,
        rng: Callable[[int], bytes] = os.urandom,
        utc: Callable[[], datetime] = _utc_now,
        boot_id: str | None = None,
        cpuinfo_path: str | Path = "/proc/cpuinfo",
        buffers: Buffers | None = None,
    ) -> None:
        self.device_id = device_id
        self._key = device_key
        self._cert = (device_cert_pem.decode("ascii") if isinstance(device_cert_pem, bytes)
                      else device_cert_pem)
        self._check_identity()
        self.recipient = recipient_public
        self._wrap = recipient_public.hpke_key()
        self._fingerprint = recipient_public.fingerprint
        self.aead = choose_aead(aead, cpuinfo_path)
        if type(chunk_size) is not int or not 1 <= chunk_size <= 1 << 24:
            raise ConfigError("chunk_size must be an integer from 1 to 16777216 bytes")
        self.chunk_size = chunk_size
        self._rng = rng
        self._utc = utc
        self._buffers = buffers if buffers is not None else HeapBuffers()
        self.boot_id = boot_id or rng(16).hex()
        if not is_hex(32)(self.boot_id):
            raise ConfigError("boot_id must be 32 lowercase hex characters")
        self._seq = 0
        self._lock = threading.Lock()

    def use_identity(self, device_key: ec.EllipticCurvePrivateKey, device_cert_pem: bytes | str) -> None:
        """Sign from now on with a renewed key and certificate (issue 17); same device id."""
        cert = device_cert_pem.decode("ascii") if isinstance(device_cert_pem, bytes) else device_cert_pem
        with self._lock:
            old = self._key, self._cert
            self._key, self._cert = device_key, cert
            try:
                self._check_identity()
            except ConfigError:
                self._key, self._cert = old
                raise

    def use_recipient(self, recipient_public: RecipientPublicKey) -> None:
        """Seal captures from now on to a rotated recipient key (issue 17); ones already
        sealed keep the key they were sealed to (the relay holds both during the overlap)."""
        with self._lock:
            self.recipient = recipient_public
            self._wrap = recipient_public.hpke_key()
            self._fingerprint = recipient_public.fingerprint

    def _check_identity(self) -> None:
        """Refuse a misprovisioned identity now rather than have every capture rejected."""
        if not is_device_id(self.device_id):
            raise ConfigError(f"device id must match {DEVICE_ID_RULE}")
        if not (isinstance(self._key, ec.EllipticCurvePrivateKey)
                and isinstance(self._key.curve, ec.SECP256R1)):
            raise ConfigError("device key must be an ECDSA P-256 private key")
        try:
            cert = x509.load_pem_x509_certificate(self._cert.encode("ascii"))
        except ValueError as exc:
            raise ConfigError("device certificate is not a PEM certificate") from exc
        spki = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        if cert.public_key().public_bytes(*spki) != self._key.public_key().public_bytes(*spki):
            raise ConfigError("device certificate does not match the device key: re-provision")

    def _next_seq(self) -> int:
        with self._lock:
            self._seq += 1
            return self._seq

    def seal(self, image: bytearray | memoryview, metadata: Mapping[str, Any]) -> SealedCapture:
        """Seal ``image`` (then zeroed, even on failure) and ``metadata`` into a capture."""
        if len(image) == 0:
            raise SealError("empty image refused: the camera returned no bytes")
        view = memoryview(image)
        try:
            return self._seal_raw(view, lambda size, sha: _metadata_json(metadata, size, sha))
        finally:
            view.release()
            zero(image)

    def _seal_raw(self, view: memoryview, part0_of: Callable[[int, str], bytes]
                  ) -> SealedCapture:
        """Hash the image, encrypt part 0 (it carries the hash) and the image parts, wrap K, sign.

        ``part0_of(size, sha256_hex)`` makes the metadata; tests use it to forge part 0.
        """
        seq = self._next_seq()
        capture_id = self._rng(16)
        key = bytearray(self._rng(32))
        try:
            if len(capture_id) != 16 or len(key) != 32:
                raise SealError("rng returned the wrong number of bytes")
            part0 = part0_of(view.nbytes, hashlib.sha256(view).hexdigest())
            storage, parts = self._layout(len(part0), view.nbytes)
            try:
                hashes = self._encrypt(_cipher(self.aead, key), capture_id, parts, part0, view)
                del part0
                wrapped = self.recipient.suite().encrypt(key, self._wrap,
                                                         info=KEY_INFO + capture_id)
                with self._lock:  # the certificate and the key that signs must be one pair
                    m = self._manifest(capture_id.hex(), seq, wrapped, parts, hashes)
                    message = mf.manifest_message(m, self._key)
            except BaseException:
                self._buffers.release(storage)
                raise
        finally:
            zero(key)
        return SealedCapture(capture_id.hex(), message, parts, m["size"], storage)

    def _layout(self, part0_len: int, image_len: int) -> tuple[memoryview, list[memoryview]]:
        """One buffer for all ``ct_i`` and their slices: part 0, then the image's chunks."""
        cs = self.chunk_size
        sizes = [part0_len] + [min(cs, image_len - off) for off in range(0, image_len, cs)]
        storage = self._buffers.allocate(sum(sizes) + TAG_SIZE * len(sizes))
        parts, offset = [], 0
        for size in sizes:
            parts.append(storage[offset:offset + size + TAG_SIZE])
            offset += size + TAG_SIZE
        return storage, parts

    def _encrypt(self, cipher: Cipher, capture_id: bytes, parts: list[memoryview],
                 part0: bytes, view: memoryview) -> list[str]:
        """Each ``ct_i`` into its slice; image parts straight from the caller's buffer."""
        count, cs = len(parts), self.chunk_size
        hashes = [_encrypt_part(cipher, capture_id, 0, count, part0, parts[0])]
        for i in range(1, count):
            with view[(i - 1) * cs:i * cs] as piece:
                hashes.append(_encrypt_part(cipher, capture_id, i, count, piece, parts[i]))
        return hashes

    def _manifest(self, capture_id: str, seq: int, wrapped: bytes,
                  parts: Sequence[Part], hashes: list[str]) -> dict[str, Any]:
        return {
            "v": mf.VERSION,
            "capture_id": capture_id,
            "device": self.device_id,
            "created": mf.rfc3339_ms(self._utc()),
            "boot": self.boot_id,
            "seq": seq,
            "aead": self.aead,
            "kem": self.recipient.kem,
            "recipient": self._fingerprint,
            "wrapped_key": mf.b64(wrapped),
            "parts": len(parts),
            "part_sha256": hashes,
            "size": sum(len(p) for p in parts),
            "cert": self._cert,
        }


# -- opening (relay) ----------------------------------------------------------------


def _recipient_for(m: Mapping[str, Any],
                   recipients: Sequence[RecipientPrivateKey]) -> RecipientPrivateKey:
    for key in recipients:
        if key.kem == m["kem"] and key.fingerprint == m["recipient"]:
            return key
    raise OpenError("recipient", "sealed to a recipient key this relay does not hold")


def _check_parts(m: Mapping[str, Any], parts: Mapping[int, bytes]) -> None:
    if set(parts) != set(range(m["parts"])):
        raise OpenError("parts", "received parts do not match the manifest's part count")
    for i, want in enumerate(m["part_sha256"]):
        if hashlib.sha256(parts[i]).hexdigest() != want:
            raise OpenError("parts", f"part {i} does not match its SHA-256")
    if sum(len(p) for p in parts.values()) != m["size"]:
        raise OpenError("parts", "total size does not match the manifest")


def _unwrap(m: Mapping[str, Any], key: RecipientPrivateKey) -> Cipher:
    capture_id = bytes.fromhex(m["capture_id"])
    try:
        k = bytearray(key.suite().decrypt(mf.unb64(m["wrapped_key"]), key.hpke_key(),
                                          info=KEY_INFO + capture_id))
    except (InvalidTag, ValueError):
        raise OpenError("decrypt", "wrapped key does not open with the recipient key") from None
    try:
        if len(k) != 32:
            raise OpenError("decrypt", "wrapped key is not a 32-byte content key")
        return _cipher(m["aead"], k)
    finally:
        zero(k)


def _decrypt(m: Mapping[str, Any], parts: Mapping[int, bytes],
             key: RecipientPrivateKey) -> tuple[bytes, bytes]:
    cipher = _unwrap(m, key)
    capture_id, count = bytes.fromhex(m["capture_id"]), m["parts"]
    try:
        part0 = cipher.decrypt(nonce(0), parts[0], aad(capture_id, 0, count))
        image = bytearray(sum(max(len(parts[i]) - TAG_SIZE, 0) for i in range(1, count)))
        offset = 0
        for i in range(1, count):
            end = offset + len(parts[i]) - TAG_SIZE
            cipher.decrypt_into(nonce(i), parts[i], aad(capture_id, i, count),
                                memoryview(image)[offset:end])
            offset = end
    except (InvalidTag, ValueError):
        raise OpenError("decrypt", "a part does not decrypt under its nonce and AAD") from None
    return part0, bytes(image)


# Part 0 of DESIGN §6 is 3 levels deep; sinks walk it recursively, so anything much
# deeper is refused here rather than crash the relay (json.loads and the sinks recurse).
MAX_METADATA_DEPTH = 16


def _depth_within(value: Any, limit: int) -> bool:
    """Whether ``value`` nests at most ``limit`` containers deep (iterative: no recursion)."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else ()
        for child in children:
            if isinstance(child, (dict, list)):
                if depth + 1 > limit:
                    return False
                stack.append((child, depth + 1))
    return True


def _check_image(part0: bytes, image: bytes) -> dict[str, Any]:
    try:
        metadata = json.loads(part0.decode("utf-8"), object_pairs_hook=mf._no_duplicates)
        info = metadata["image"]
        size, digest = info["size"], info["sha256"]
    except (UnicodeDecodeError, ValueError, KeyError, TypeError, RecursionError):
        raise OpenError("image", "metadata does not parse or lacks image size/sha256") \
            from None
    if not _depth_within(metadata, MAX_METADATA_DEPTH):
        raise OpenError("image", f"metadata nests deeper than {MAX_METADATA_DEPTH} levels")
    if type(metadata) is not dict or type(size) is not int or size != len(image):
        raise OpenError("image", "image size differs from the metadata")
    if digest != hashlib.sha256(image).hexdigest():
        raise OpenError("image", "image SHA-256 differs from the metadata")
    return metadata


def open_capture(
    manifest_payload: bytes,
    parts: Mapping[int, bytes],
    *,
    topic_device: str,
    topic_capture_id: str,
    ca_cert: x509.Certificate | Sequence[x509.Certificate],
    recipients: Sequence[RecipientPrivateKey],
    crl: x509.CertificateRevocationList | None = None,
    now: datetime | None = None,
    legacy_until: datetime | None = None,
    chain: Sequence[x509.Certificate] = (),
    crls: Sequence[x509.CertificateRevocationList] = (),
) -> OpenedCapture:
    """Verify and open a capture, in DESIGN §4's order; ``OpenError(reason)`` on the first fault.

    ``legacy_until``: accept pre-policy station certificates until then (see
    ``certprofile``); without it they raise ``PrePolicyCertificate``.
    """
    m, sig = mf.parse_manifest_message(manifest_payload)
    if topic_device != m["device"] or topic_capture_id != m["capture_id"]:
        raise OpenError("identity", "topic device or capture id differs from the manifest")
    cert = mf.check_device_cert(m["cert"], m["device"], ca_cert, crl=crl, now=now,
                                legacy_until=legacy_until, chain_certs=chain, crls=crls)
    mf.verify(mf.canonical(m), sig, cert.public_key())
    key = _recipient_for(m, recipients)
    _check_parts(m, parts)
    part0, image = _decrypt(m, parts, key)
    metadata = _check_image(part0, image)
    return OpenedCapture(m["device"], m["capture_id"], m, metadata, image)
