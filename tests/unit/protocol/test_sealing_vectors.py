"""Known-answer vectors of sealed capture v1 (tests/vectors/sealed_v1_*.json).

Any change of the bytes on the wire fails here. The parts are recomputed here with
cryptography's AEADs from the normative nonce/AAD formulas, independently of the
sealer; the sealer's own output must equal the recorded parts and, once the recorded
``wrapped_key`` (HPKE is randomised) is put in, the recorded manifest message byte
for byte (RFC 6979 signatures are deterministic).
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from clinicam.protocol import manifest as mf
from clinicam.protocol.recipient import load_recipient_private
from clinicam.protocol.sealing import Sealer, open_capture
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305

VECTORS = sorted((Path(__file__).parents[2] / "vectors").glob("sealed_v1_*.json"))


def load(path: Path) -> dict[str, Any]:
    return dict(json.loads(path.read_text()))


def test_all_four_suites_have_vectors() -> None:
    assert {(load(p)["kem"], load(p)["aead"]) for p in VECTORS} == {
        (k, a) for k in ("X25519", "MLKEM768-X25519")
        for a in ("AES-256-GCM", "CHACHA20-POLY1305")}


def _part0(v: dict[str, Any]) -> bytes:
    image = bytes.fromhex(v["image_hex"])
    meta = {**v["metadata"], "image": {**v["metadata"]["image"], "size": len(image),
                                       "sha256": hashlib.sha256(image).hexdigest()}}
    return json.dumps(meta, sort_keys=True, separators=(",", ":"),
                      ensure_ascii=False).encode("utf-8")


@pytest.mark.parametrize("path", VECTORS, ids=lambda p: p.stem)
def test_parts_follow_the_normative_formulas(path: Path) -> None:
    v = load(path)
    key, cid = bytes.fromhex(v["content_key"]), bytes.fromhex(v["capture_id"])
    cipher = (AESGCM if v["aead"] == "AES-256-GCM" else ChaCha20Poly1305)(key)
    image, cs = bytes.fromhex(v["image_hex"]), v["chunk_size"]
    plain = [_part0(v)] + [image[o:o + cs] for o in range(0, len(image), cs)]
    n = len(plain)
    expect = [cipher.encrypt(bytes(4) + i.to_bytes(8, "big"), p,
                             b"clinicam/v1" + cid + i.to_bytes(4, "big") + n.to_bytes(4, "big"))
              for i, p in enumerate(plain)]
    assert [e.hex() for e in expect] == v["parts_hex"]
    m = json.loads(v["manifest_message"])["m"]
    assert m["part_sha256"] == [hashlib.sha256(e).hexdigest() for e in expect]
    assert m["size"] == sum(map(len, expect)) and m["parts"] == n


@pytest.mark.parametrize("path", VECTORS, ids=lambda p: p.stem)
def test_sealer_reproduces_the_vector(path: Path) -> None:
    v = load(path)
    recipient = load_recipient_private(v["recipient_key_pem"].encode())
    device_key: Any = serialization.load_pem_private_key(v["device_key_pem"].encode(), None)
    draws = iter([bytes.fromhex(v["capture_id"]), bytes.fromhex(v["content_key"])])
    created = mf.parse_rfc3339_ms(v["created"])
    sealer = Sealer(v["device_id"], device_key, v["device_cert_pem"], recipient.public_key(),
                    aead=v["aead"], chunk_size=v["chunk_size"], rng=lambda n: next(draws),
                    utc=lambda: created, boot_id=v["boot"])
    sealed = sealer.seal(bytearray.fromhex(v["image_hex"]), v["metadata"])
    assert [bytes(p).hex() for p in sealed.parts] == v["parts_hex"]
    m = json.loads(sealed.manifest)["m"]
    recorded = json.loads(v["manifest_message"])["m"]
    assert m["wrapped_key"] != recorded["wrapped_key"]  # HPKE is randomised, as expected
    m["wrapped_key"] = recorded["wrapped_key"]
    assert mf.manifest_message(m, device_key) == v["manifest_message"].encode("ascii")


@pytest.mark.parametrize("path", VECTORS, ids=lambda p: p.stem)
def test_recorded_capture_opens_to_recorded_plaintext(path: Path) -> None:
    v = load(path)
    recipient = load_recipient_private(v["recipient_key_pem"].encode())
    m = json.loads(v["manifest_message"])["m"]
    info = b"clinicam/v1 key " + bytes.fromhex(v["capture_id"])
    assert recipient.suite().decrypt(mf.unb64(m["wrapped_key"]), recipient.hpke_key(),
                                     info=info).hex() == v["content_key"]
    opened = open_capture(
        v["manifest_message"].encode(), {i: bytes.fromhex(p) for i, p in
                                         enumerate(v["parts_hex"])},
        topic_device=v["device_id"], topic_capture_id=v["capture_id"],
        ca_cert=x509.load_pem_x509_certificate(v["ca_cert_pem"].encode()),
        recipients=[recipient], now=datetime.fromisoformat("2026-11-26T09:30:16+00:00"),
        # the vectors' device certificate predates the station profile (certprofile)
        legacy_until=datetime.fromisoformat("2026-11-27T00:00:00+00:00"))
    assert opened.image.hex() == v["image_hex"]
    assert opened.metadata == json.loads(_part0(v))
    assert (m["boot"], m["seq"], m["created"], m["kem"]) == (v["boot"], v["seq"], v["created"],
                                                            v["kem"])
