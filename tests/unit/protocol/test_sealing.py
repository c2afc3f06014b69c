"""Sealed capture v1: round trips, zeroization and the station-side rules of DESIGN §4."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from typing import Any

import pytest
from clinicam.common.errors import ConfigError, SealError
from clinicam.common.zeroize import is_zero
from clinicam.protocol import manifest as mf
from clinicam.protocol.recipient import RecipientPrivateKey
from clinicam.protocol.sealing import (
    CHUNK_SIZE,
    OpenedCapture,
    SealedCapture,
    Sealer,
    aad,
    choose_aead,
    nonce,
    open_capture,
)
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305

KEMS = ("X25519", "MLKEM768-X25519")
AEADS = ("AES-256-GCM", "CHACHA20-POLY1305")
META = {"patient": {"id": "CANARY-PATIENT-0001", "issuer": "GS1", "encounter": None},
        "image": {"media_type": "image/jpeg", "width": 4, "height": 3}}


def open_(sealed: SealedCapture, ca: Any, keys: list[RecipientPrivateKey],
          device_id: str = "cam-ward7-01", **kw: Any) -> OpenedCapture:
    return open_capture(sealed.manifest, dict(enumerate(sealed.parts)),
                        topic_device=device_id, topic_capture_id=sealed.capture_id,
                        ca_cert=ca.cert, recipients=keys, **kw)


@pytest.mark.parametrize("kem", KEMS)
@pytest.mark.parametrize("aead", AEADS)
@pytest.mark.parametrize("size", [1, CHUNK_SIZE - 1, CHUNK_SIZE, CHUNK_SIZE + 1, 12 * 2**20])
def test_round_trip(make_sealer: Callable[..., Sealer], site_ca: Any,
                    recipients: dict[str, RecipientPrivateKey], kem: str, aead: str,
                    size: int) -> None:
    image = bytearray(os.urandom(size))
    original = bytes(image)
    sealed = make_sealer(kem, aead).seal(image, META)
    opened = open_(sealed, site_ca, list(recipients.values()))
    assert opened.image == original
    assert opened.metadata["patient"] == META["patient"]
    assert opened.metadata["image"]["sha256"] == hashlib.sha256(original).hexdigest()
    assert opened.manifest["parts"] == len(sealed.parts) == 1 + -(-size // CHUNK_SIZE)
    assert opened.manifest["kem"] == kem and opened.manifest["aead"] == aead
    assert sealed.size == sum(len(p) for p in sealed.parts) == opened.manifest["size"]
    assert max(len(p) for p in sealed.parts[1:]) <= CHUNK_SIZE + 16


def test_empty_image_is_refused(make_sealer: Callable[..., Sealer]) -> None:
    with pytest.raises(SealError, match="empty image"):
        make_sealer().seal(bytearray(), META)


def test_image_and_content_key_are_zeroed(make_sealer: Callable[..., Sealer],
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    keys: list[bytearray] = []
    import clinicam.protocol.sealing as sealing
    orig_cipher = sealing._cipher

    def capture_key(aead: str, key: bytearray) -> Any:
        keys.append(key)
        assert not is_zero(key)  # positive control: K is live while encrypting
        return orig_cipher(aead, key)

    monkeypatch.setattr(sealing, "_cipher", capture_key)
    image = bytearray(os.urandom(300_000))
    make_sealer().seal(image, META)
    assert keys and all(is_zero(k) for k in keys)
    assert is_zero(image) and len(image) == 300_000


def test_image_is_zeroed_even_when_sealing_fails(make_sealer: Callable[..., Sealer]) -> None:
    image = bytearray(b"\xff" * 1000)
    bad = {**META, "camera": {"exposure_us": object()}}
    with pytest.raises(SealError, match="metadata must be JSON"):
        make_sealer().seal(image, bad)
    assert is_zero(image)


def test_metadata_disagreeing_with_image_is_refused(make_sealer: Callable[..., Sealer]) -> None:
    meta = {"image": {"size": 5}}
    with pytest.raises(SealError, match=r"image\.size"):
        make_sealer().seal(bytearray(b"1234"), meta)


def test_seq_counts_per_boot_from_one(make_sealer: Callable[..., Sealer]) -> None:
    sealer = make_sealer()
    seqs = [mf.parse_manifest_message(sealer.seal(bytearray(b"x"), META).manifest)[0]["seq"]
            for _ in range(3)]
    assert seqs == [1, 2, 3]
    boot = mf.parse_manifest_message(sealer.seal(bytearray(b"x"), META).manifest)[0]["boot"]
    assert boot == sealer.boot_id and len(boot) == 32


def test_manifest_fields_follow_design(make_sealer: Callable[..., Sealer],
                                       device: Any) -> None:
    sealed = make_sealer(chunk_size=100).seal(bytearray(b"a" * 250), META)
    m, _ = mf.parse_manifest_message(sealed.manifest)
    assert m["created"] == "2026-11-26T12:00:00.123Z"
    assert m["device"] == device.id and m["cert"] == device.cert_pem
    assert m["parts"] == 4 and [len(p) for p in sealed.parts[1:]] == [116, 116, 66]
    assert m["part_sha256"] == [hashlib.sha256(p).hexdigest() for p in sealed.parts]
    assert sealed.manifest == mf.canonical(json.loads(sealed.manifest))


@pytest.mark.parametrize("aead", AEADS)
def test_parts_decrypt_with_the_normative_nonce_and_aad(
        make_sealer: Callable[..., Sealer], aead: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    # Independent of the opener: recover K by recording it, then decrypt by hand.
    import clinicam.protocol.sealing as sealing
    seen: list[bytes] = []
    orig = sealing._cipher
    monkeypatch.setattr(sealing, "_cipher", lambda a, k: (seen.append(bytes(k)), orig(a, k))[1])
    sealed = make_sealer(aead=aead, chunk_size=64).seal(bytearray(range(200)), META)
    cls = AESGCM if aead == "AES-256-GCM" else ChaCha20Poly1305
    cipher, cid = cls(seen[0]), bytes.fromhex(sealed.capture_id)
    assert nonce(3) == bytes(4) + (3).to_bytes(8, "big")
    assert aad(cid, 2, 5) == b"clinicam/v1" + cid + b"\0\0\0\x02\0\0\0\x05"
    image = b"".join(cipher.decrypt(nonce(i), bytes(sealed.parts[i]), aad(cid, i, 5))
                     for i in range(1, 5))
    assert image == bytes(range(200))


def test_aead_auto_follows_cpuinfo(tmp_path: Any) -> None:
    x86 = tmp_path / "x86"
    x86.write_text("processor\t: 0\nflags\t\t: fpu sse2 aes avx2\n")
    a72 = tmp_path / "a72"
    a72.write_text("processor\t: 0\nFeatures\t: fp asimd evtstrm crc32 cpuid\n")
    a76 = tmp_path / "a76"
    a76.write_text("Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32\n")
    assert choose_aead("auto", x86) == "AES-256-GCM"
    assert choose_aead("auto", a72) == "CHACHA20-POLY1305"
    assert choose_aead("auto", a76) == "AES-256-GCM"
    assert choose_aead("auto", tmp_path / "missing") == "CHACHA20-POLY1305"
    assert choose_aead("CHACHA20-POLY1305", x86) == "CHACHA20-POLY1305"
    with pytest.raises(ConfigError):
        choose_aead("AES-128-GCM", x86)


def test_misprovisioned_identity_is_refused(site_ca: Any, device: Any,
                                            recipients: dict[str, RecipientPrivateKey]) -> None:
    from cryptography.hazmat.primitives.asymmetric import ec
    pub = recipients["X25519"].public_key()
    other = ec.generate_private_key(ec.SECP256R1())
    with pytest.raises(ConfigError, match="does not match the device key"):
        Sealer(device.id, other, device.cert_pem, pub)
    with pytest.raises(ConfigError, match="device id"):
        Sealer("Bad Id", device.key, device.cert_pem, pub)
    with pytest.raises(ConfigError, match="chunk_size"):
        Sealer(device.id, device.key, device.cert_pem, pub, chunk_size=0)
    with pytest.raises(ConfigError, match="P-256"):
        Sealer(device.id, ec.generate_private_key(ec.SECP384R1()), device.cert_pem, pub)


def test_opened_at_injected_time(make_sealer: Callable[..., Sealer], site_ca: Any, pki: Any,
                                 recipients: dict[str, RecipientPrivateKey]) -> None:
    sealed = make_sealer().seal(bytearray(b"jpeg"), META)
    assert open_(sealed, site_ca, [recipients["X25519"]], now=pki.NOW).image == b"jpeg"


def test_sealed_into_the_vault_parts_are_back_to_back_in_its_arena(
        make_sealer: Callable[..., Sealer], site_ca: Any,
        recipients: dict[str, RecipientPrivateKey]) -> None:
    from clinicam.firmware.capture.vault import Vault
    vault = Vault()
    image = bytearray(os.urandom(3 * CHUNK_SIZE + 7))
    original = bytes(image)
    sealed = make_sealer(buffers=vault).seal(image, META)
    assert is_zero(image)
    assert sealed.storage is not None and vault._arena is not None
    assert vault._arena.owns(sealed.storage)
    assert bytes(sealed.storage) == b"".join(bytes(p) for p in sealed.parts)  # back to back
    assert len(sealed.storage) == sealed.size
    assert open_(sealed, site_ca, list(recipients.values())).image == original
    vault.put(sealed)
    assert vault.ack(sealed.capture_id) and is_zero(sealed.storage)
    assert vault._arena.in_use == 0


class _Ledger:
    """A ``Buffers`` that records what it hands out and gets back."""

    def __init__(self) -> None:
        self.out: list[memoryview] = []
        self.back: list[memoryview] = []

    def allocate(self, nbytes: int) -> memoryview:
        self.out.append(memoryview(bytearray(nbytes)))
        return self.out[-1]

    def release(self, buf: memoryview) -> None:
        self.back.append(buf)


def test_buffer_goes_back_when_sealing_fails_after_encrypting(
        make_sealer: Callable[..., Sealer], monkeypatch: pytest.MonkeyPatch) -> None:
    ledger = _Ledger()
    sealer = make_sealer(buffers=ledger)
    sealer.seal(bytearray(b"ok"), META)
    assert len(ledger.out) == 1 and not ledger.back  # control: a good seal keeps its buffer

    def broken(*_: Any) -> bytes:
        raise SealError("signing failed")

    monkeypatch.setattr(mf, "manifest_message", broken)
    image = bytearray(b"\xff" * 1000)
    with pytest.raises(SealError, match="signing failed"):
        sealer.seal(image, META)
    assert len(ledger.out) == 2 and len(ledger.back) == 1 and ledger.back[0] is ledger.out[1]
    assert is_zero(image)
