"""Recipient key formats of DESIGN §4: PEM layout, fingerprint, strict loading."""

from __future__ import annotations

import hashlib

import pytest
from clinicam.common.errors import ProvisioningError
from clinicam.protocol.recipient import (
    KEMS,
    generate_recipient_key,
    load_recipient_private,
    load_recipient_public,
)
from cryptography.hazmat.primitives.asymmetric import x25519


@pytest.mark.parametrize("kem", KEMS)
def test_pem_round_trip_keeps_kem_and_fingerprint(kem: str) -> None:
    key = generate_recipient_key(kem)
    private = load_recipient_private(key.private_pem())
    public = load_recipient_public(key.public_pem())
    assert private.kem == public.kem == kem
    assert private.fingerprint == public.fingerprint == key.fingerprint
    assert public.public_pem() == key.public_pem()


def test_hybrid_pem_is_mlkem_block_then_x25519_block() -> None:
    key = generate_recipient_key("MLKEM768-X25519")
    pub = key.public_pem()
    assert pub.count(b"-----BEGIN PUBLIC KEY-----") == 2
    second = pub.index(b"-----BEGIN", 1)
    x = load_recipient_public(pub[second:])
    assert x.kem == "X25519"
    assert x.x25519.public_bytes_raw() == key.x25519.public_key().public_bytes_raw()
    assert key.private_pem().count(b"-----BEGIN PRIVATE KEY-----") == 2


def test_fingerprint_is_sha256_of_raw_public_bytes() -> None:
    x = generate_recipient_key("X25519")
    raw = x.x25519.public_key().public_bytes_raw()
    assert x.fingerprint == hashlib.sha256(raw).hexdigest()
    h = generate_recipient_key("MLKEM768-X25519")
    assert h.mlkem is not None
    raw = h.mlkem.public_key().public_bytes_raw() + h.x25519.public_key().public_bytes_raw()
    assert h.fingerprint == hashlib.sha256(raw).hexdigest()
    assert len(h.fingerprint) == 64 and h.fingerprint == h.fingerprint.lower()


def test_half_of_a_hybrid_key_has_another_fingerprint() -> None:
    h = generate_recipient_key("MLKEM768-X25519")
    pem = h.public_pem()
    x_half = load_recipient_public(pem[pem.index(b"-----BEGIN", 1):])
    assert x_half.fingerprint != h.fingerprint


def test_blocks_in_wrong_order_are_refused() -> None:
    pem = generate_recipient_key("MLKEM768-X25519").public_pem()
    cut = pem.index(b"-----BEGIN", 1)
    with pytest.raises(ProvisioningError, match="PEM block must be"):
        load_recipient_public(pem[cut:] + pem[:cut])


def test_three_blocks_or_none_are_refused() -> None:
    pem = generate_recipient_key("X25519").public_pem()
    with pytest.raises(ProvisioningError, match="found 3 blocks"):
        load_recipient_public(pem * 3)
    with pytest.raises(ProvisioningError, match="found 0 blocks"):
        load_recipient_public(b"not a key")


def test_garbage_block_is_refused() -> None:
    bad = b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n"
    with pytest.raises(ProvisioningError, match="unreadable"):
        load_recipient_public(bad)


def test_private_pem_where_public_expected_is_refused() -> None:
    key = generate_recipient_key("X25519")
    with pytest.raises(ProvisioningError):
        load_recipient_public(key.private_pem())


def test_unknown_kem_is_refused() -> None:
    with pytest.raises(ProvisioningError, match="unknown recipient KEM"):
        generate_recipient_key("P256")


def test_x25519_key_of_other_type_is_refused() -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    ec_pem = ec.generate_private_key(ec.SECP256R1()).public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    with pytest.raises(ProvisioningError, match="X25519PublicKey"):
        load_recipient_public(ec_pem)
    assert x25519  # imported for the type name the message cites
