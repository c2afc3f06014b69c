"""Every way a capture can be wrong is rejected, with its own reason (DESIGN §4 order)."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from clinicam.common.errors import ConfigError
from clinicam.protocol import manifest as mf
from clinicam.protocol.reasons import OpenError, PrePolicyCertificate
from clinicam.protocol.recipient import RecipientPrivateKey
from clinicam.protocol.sealing import SealedCapture, Sealer, open_capture
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID

DEV = "cam-ward7-01"
META = {"patient": {"id": "CANARY-PATIENT-0002", "issuer": "GS1", "encounter": None}}


@pytest.fixture
def sealed(make_sealer: Callable[..., Sealer]) -> SealedCapture:
    return make_sealer(chunk_size=64).seal(bytearray(range(256)) * 1, META)


@pytest.fixture
def opener(site_ca: Any, recipients: dict[str, RecipientPrivateKey]) -> Callable[..., Any]:
    def open_(payload: bytes, parts: dict[int, bytes], cid: str, **kw: Any) -> Any:
        kw.setdefault("topic_device", DEV)
        kw.setdefault("ca_cert", site_ca.cert)
        kw.setdefault("recipients", list(recipients.values()))
        return open_capture(payload, parts, topic_capture_id=cid, **kw)
    return open_


def reason(fn: Callable[[], Any]) -> str:
    with pytest.raises(OpenError) as info:
        fn()
    return info.value.reason


def parts_of(s: SealedCapture) -> dict[int, bytes]:
    return {i: bytes(p) for i, p in enumerate(s.parts)}


def manifest_of(s: SealedCapture) -> dict[str, Any]:
    return dict(json.loads(s.manifest)["m"])


def flip(data: bytes, bit: int = 0) -> bytes:
    out = bytearray(data)
    out[bit // 8] ^= 1 << (bit % 8)
    return bytes(out)


def resign(m: dict[str, Any], key: ec.EllipticCurvePrivateKey) -> bytes:
    return mf.manifest_message(m, key)


def unsigned(s: SealedCapture, m: dict[str, Any]) -> bytes:
    return mf.canonical({"m": m, "sig": json.loads(s.manifest)["sig"]})


def test_control_the_untouched_capture_opens(sealed: SealedCapture, opener: Any) -> None:
    assert opener(sealed.manifest, parts_of(sealed), sealed.capture_id).image == bytes(range(256))


# -- parts --------------------------------------------------------------------------

@pytest.mark.parametrize("index", [0, 1, 4])
@pytest.mark.parametrize("bit", [0, 7, 8 * 40 + 3])
def test_flipped_bit_in_a_part(sealed: SealedCapture, opener: Any, index: int, bit: int) -> None:
    parts = parts_of(sealed)
    parts[index] = flip(parts[index], bit)
    assert reason(lambda: opener(sealed.manifest, parts, sealed.capture_id)) == "parts"


@pytest.mark.parametrize("index", [0, 1, 4])
def test_flipped_bit_with_matching_hash_fails_decryption(
        sealed: SealedCapture, opener: Any, device: Any, index: int) -> None:
    import hashlib
    parts, m = parts_of(sealed), manifest_of(sealed)
    parts[index] = flip(parts[index], 5)
    m["part_sha256"][index] = hashlib.sha256(parts[index]).hexdigest()
    assert reason(lambda: opener(resign(m, device.key), parts, sealed.capture_id)) == "decrypt"


def test_swapped_parts(sealed: SealedCapture, opener: Any, device: Any) -> None:
    parts, m = parts_of(sealed), manifest_of(sealed)
    parts[1], parts[2] = parts[2], parts[1]
    assert reason(lambda: opener(sealed.manifest, parts, sealed.capture_id)) == "parts"
    h = m["part_sha256"]
    h[1], h[2] = h[2], h[1]
    assert reason(lambda: opener(resign(m, device.key), parts, sealed.capture_id)) == "decrypt"


def test_missing_duplicated_extra_and_truncated_parts(sealed: SealedCapture,
                                                      opener: Any) -> None:
    def check(parts: dict[int, bytes]) -> None:
        assert reason(lambda: opener(sealed.manifest, parts, sealed.capture_id)) == "parts"

    good = parts_of(sealed)
    check({i: p for i, p in good.items() if i != 2})
    check({**good, 2: good[1]})
    check({**good, len(good): good[1]})
    check({**good, 4: good[4][:-1]})
    check({**good, 0: good[0] + b"\0"})


def test_total_size_mismatch_is_parts(sealed: SealedCapture, opener: Any, device: Any) -> None:
    m = manifest_of(sealed)
    m["size"] += 1
    assert reason(lambda: opener(resign(m, device.key), parts_of(sealed),
                                 sealed.capture_id)) == "parts"


# -- wrapped key --------------------------------------------------------------------

def test_flipped_bit_in_wrapped_key(sealed: SealedCapture, opener: Any, device: Any) -> None:
    m = manifest_of(sealed)
    m["wrapped_key"] = mf.b64(flip(mf.unb64(m["wrapped_key"]), 9))
    parts = parts_of(sealed)
    assert reason(lambda: opener(unsigned(sealed, m), parts, sealed.capture_id)) == "signature"
    assert reason(lambda: opener(resign(m, device.key), parts, sealed.capture_id)) == "decrypt"


# -- every manifest field -----------------------------------------------------------

CHANGES: dict[str, tuple[Callable[[Any], Any], str]] = {
    "v": (lambda v: 2, "malformed"),
    "capture_id": (lambda v: "0" * 32, "identity"),
    "device": (lambda v: "cam-ward7-02", "identity"),
    "created": (lambda v: "2026-11-26T12:00:01.000Z", "signature"),
    "boot": (lambda v: "f" * 32, "signature"),
    "seq": (lambda v: v + 1, "signature"),
    "aead": (lambda v: "CHACHA20-POLY1305", "signature"),
    "kem": (lambda v: "MLKEM768-X25519", "signature"),
    "recipient": (lambda v: "e" * 64, "signature"),
    "wrapped_key": (lambda v: mf.b64(b"x" * 80), "signature"),
    "parts": (lambda v: v + 1, "malformed"),
    "part_sha256": (lambda v: [*v[:-1], "0" * 64], "signature"),
    "size": (lambda v: v - 1, "signature"),
    "cert": (lambda v: v.replace("MII", "MIJ", 1), "certificate"),
}


def test_every_manifest_key_has_a_change_case() -> None:
    assert set(CHANGES) == mf.MANIFEST_KEYS


@pytest.mark.parametrize("field", sorted(CHANGES))
def test_any_changed_manifest_field(sealed: SealedCapture, opener: Any, field: str) -> None:
    change, expected = CHANGES[field]
    m = manifest_of(sealed)
    m[field] = change(m[field])
    assert reason(lambda: opener(unsigned(sealed, m), parts_of(sealed),
                                 sealed.capture_id)) == expected


def test_cert_of_same_device_other_key(sealed: SealedCapture, opener: Any, pki: Any,
                                       site_ca: Any) -> None:
    m = manifest_of(sealed)
    m["cert"] = pki.issue(site_ca, DEV).cert_pem
    assert reason(lambda: opener(unsigned(sealed, m), parts_of(sealed),
                                 sealed.capture_id)) == "signature"


@pytest.mark.parametrize(("field", "value"), [("v", 2), ("kem", "P256"),
                                              ("aead", "AES-128-GCM")])
def test_unsupported_version_kem_aead_even_when_signed(
        sealed: SealedCapture, opener: Any, device: Any, field: str, value: Any) -> None:
    m = manifest_of(sealed)
    m[field] = value
    assert reason(lambda: opener(resign(m, device.key), parts_of(sealed),
                                 sealed.capture_id)) == "malformed"


# -- identity, certificate, signature, recipient ------------------------------------

def test_topic_device_differs(sealed: SealedCapture, opener: Any) -> None:
    assert reason(lambda: opener(sealed.manifest, parts_of(sealed), sealed.capture_id,
                                 topic_device="cam-ward7-02")) == "identity"
    assert reason(lambda: opener(sealed.manifest, parts_of(sealed), "a" * 32)) == "identity"


def test_signature_from_another_key(sealed: SealedCapture, opener: Any) -> None:
    other = ec.generate_private_key(ec.SECP256R1())
    assert reason(lambda: opener(resign(manifest_of(sealed), other), parts_of(sealed),
                                 sealed.capture_id)) == "signature"


def seal_as(make_sealer: Callable[..., Sealer], dev: Any, **kw: Any) -> SealedCapture:
    return make_sealer(device=dev, **kw).seal(bytearray(b"jpeg"), META)


def test_certificate_from_another_ca(make_sealer: Callable[..., Sealer], opener: Any,
                                     pki: Any) -> None:
    s = seal_as(make_sealer, pki.issue(pki.make_ca("rogue CA"), DEV))
    assert reason(lambda: opener(s.manifest, parts_of(s), s.capture_id)) == "certificate"


def test_certificate_cn_differs_from_device(make_sealer: Callable[..., Sealer], opener: Any,
                                            pki: Any, site_ca: Any) -> None:
    other = pki.issue(site_ca, "cam-ward7-02")
    s = seal_as(make_sealer, pki.Device(DEV, other.key, other.cert_pem))
    assert reason(lambda: opener(s.manifest, parts_of(s), s.capture_id)) == "certificate"
    two = pki.issue(site_ca, DEV, cns=(DEV, DEV))
    s = seal_as(make_sealer, two)
    assert reason(lambda: opener(s.manifest, parts_of(s), s.capture_id)) == "certificate"


@pytest.mark.parametrize("eku", [None, (ExtendedKeyUsageOID.SERVER_AUTH,)])
def test_certificate_without_client_auth(make_sealer: Callable[..., Sealer], opener: Any,
                                         pki: Any, site_ca: Any, eku: Any) -> None:
    s = seal_as(make_sealer, pki.issue(site_ca, DEV, eku=eku))
    assert reason(lambda: opener(s.manifest, parts_of(s), s.capture_id)) == "certificate"


def test_certificate_validity_window(make_sealer: Callable[..., Sealer], opener: Any,
                                     pki: Any, site_ca: Any) -> None:
    dev = pki.issue(site_ca, DEV, not_before=pki.NOW - timedelta(days=10),
                    not_after=pki.NOW + timedelta(days=10))
    s = seal_as(make_sealer, dev)
    assert opener(s.manifest, parts_of(s), s.capture_id, now=pki.NOW).image == b"jpeg"
    for now in (pki.NOW + timedelta(days=11), pki.NOW - timedelta(days=11)):
        assert reason(lambda n=now: opener(s.manifest, parts_of(s), s.capture_id,
                                           now=n)) == "certificate"


def test_revoked_certificate(make_sealer: Callable[..., Sealer], opener: Any, pki: Any,
                             site_ca: Any) -> None:
    dev = pki.issue(site_ca, DEV, serial=4242)
    s = seal_as(make_sealer, dev)
    assert opener(s.manifest, parts_of(s), s.capture_id,
                  crl=pki.revoke(site_ca, 1)).image == b"jpeg"
    assert reason(lambda: opener(s.manifest, parts_of(s), s.capture_id,
                                 crl=pki.revoke(site_ca, 4242))) == "certificate"


def test_crl_not_from_site_ca_is_a_config_error(sealed: SealedCapture, opener: Any,
                                                pki: Any) -> None:
    with pytest.raises(ConfigError, match="CRL"):
        opener(sealed.manifest, parts_of(sealed), sealed.capture_id,
               crl=pki.revoke(pki.make_ca("rogue CA")))


def test_sealed_to_another_recipient(sealed: SealedCapture, opener: Any,
                                     recipients: dict[str, RecipientPrivateKey]) -> None:
    assert reason(lambda: opener(sealed.manifest, parts_of(sealed), sealed.capture_id,
                                 recipients=[recipients["MLKEM768-X25519"]])) == "recipient"


def test_half_of_a_hybrid_key_never_opens(make_sealer: Callable[..., Sealer], opener: Any,
                                          recipients: dict[str, RecipientPrivateKey]) -> None:
    hybrid = recipients["MLKEM768-X25519"]
    half = RecipientPrivateKey("X25519", hybrid.x25519)
    s = make_sealer("MLKEM768-X25519").seal(bytearray(b"jpeg"), META)
    assert reason(lambda: opener(s.manifest, parts_of(s), s.capture_id,
                                 recipients=[half])) == "recipient"
    assert opener(s.manifest, parts_of(s), s.capture_id,
                  recipients=[half, hybrid]).image == b"jpeg"


# -- image --------------------------------------------------------------------------

@pytest.mark.parametrize("part0", [
    b'{"image":{"size":4,"sha256":"' + b"0" * 64 + b'"}}',
    b'{"image":{"size":5,"sha256":"' + b"0" * 64 + b'"}}',
    b'{"image":{"size":true,"sha256":"x"}}',
    b'{"image":{}}',
    b"not json",
    b"[1,2]",
])
def test_metadata_that_does_not_match_the_image(make_sealer: Callable[..., Sealer],
                                                opener: Any, part0: bytes) -> None:
    s = make_sealer()._seal_raw(memoryview(bytearray(b"jpeg")), lambda size, sha: part0)
    assert reason(lambda: opener(s.manifest, parts_of(s), s.capture_id)) == "image"


def _nested(depth: int, sha: str) -> bytes:
    """Valid metadata for ``b"jpeg"`` whose ``camera`` value is ``depth`` lists deep."""
    return (b'{"image":{"size":4,"sha256":"' + sha.encode() + b'"},"camera":'
            + b"[" * depth + b"]" * depth + b"}")


@pytest.mark.parametrize("depth", [17, 900, 100_000])
def test_deeply_nested_metadata_is_image_not_a_crash(make_sealer: Callable[..., Sealer],
                                                     opener: Any, depth: int) -> None:
    """Validly signed, decrypts, image matches: the nesting alone is refused (§6 is 3 deep)."""
    s = make_sealer()._seal_raw(memoryview(bytearray(b"jpeg")), lambda size, sha: _nested(depth, sha))
    assert reason(lambda: opener(s.manifest, parts_of(s), s.capture_id)) == "image"
    ok = make_sealer()._seal_raw(memoryview(bytearray(b"jpeg")), lambda size, sha: _nested(8, sha))
    assert opener(ok.manifest, parts_of(ok), ok.capture_id).image == b"jpeg"  # positive control


# -- strict parsing -----------------------------------------------------------------

def _payload_variants(s: SealedCapture) -> list[bytes]:
    msg = json.loads(s.manifest)
    text = s.manifest.decode()
    m = msg["m"]
    out = [
        text.replace('{"m":{', '{"m":{"v":1,', 1).encode(),  # duplicate key
        mf.canonical({**msg, "m": {**m, "extra": 1}}),
        mf.canonical({**msg, "m": {k: v for k, v in m.items() if k != "boot"}}),
        mf.canonical({**msg, "m": {**m, "seq": True}}),
        mf.canonical({**msg, "m": {**m, "v": True}}),
        mf.canonical({**msg, "m": {**m, "parts": str(m["parts"])}}),
        mf.canonical({**msg, "m": {**m, "capture_id": m["capture_id"].upper()}}),
        mf.canonical({**msg, "m": {**m, "created": "2026-11-26T12:00:00Z"}}),
        mf.canonical({**msg, "m": {**m, "created": "2026-13-26T12:00:00.000Z"}}),
        mf.canonical({**msg, "m": {**m, "wrapped_key": "not base64!"}}),
        mf.canonical({**msg, "m": {**m, "part_sha256": "abc"}}),
        mf.canonical({**msg, "sig": "***"}),
        mf.canonical({**msg, "extra": 1}),
        mf.canonical({"m": m}),
        text.replace(f'"seq":{m["seq"]}', '"seq":1.0').encode(),
        text.replace(f'"seq":{m["seq"]}', '"seq":NaN').encode(),
        b"\xff" + s.manifest,
        s.manifest.decode().encode("utf-16"),
        b"[]",
        b"[" * 100000,
    ]
    return out


def test_strict_parse_rejects_each_malformation(sealed: SealedCapture, opener: Any) -> None:
    variants = _payload_variants(sealed)
    for i, payload in enumerate(variants):
        assert reason(lambda p=payload: opener(p, parts_of(sealed), sealed.capture_id)) \
            == "malformed", i


def test_reasons_never_carry_phi(sealed: SealedCapture, opener: Any) -> None:
    parts = parts_of(sealed)
    parts[1] = flip(parts[1])
    with pytest.raises(OpenError) as info:
        opener(sealed.manifest, parts, sealed.capture_id)
    assert "CANARY" not in str(info.value) and "CANARY" not in repr(info.value.__cause__)


# -- station profile (DESIGN §3.5, §7): only station certificates file photos ---------

@pytest.mark.parametrize("name", ["operator-jane", "relay-1", "broker", "admin-x"])
def test_service_identity_is_identity_even_with_the_station_policy(
        make_sealer: Callable[..., Sealer], opener: Any, pki: Any, site_ca: Any, name: str) -> None:
    for station in (False, True):  # a misissued policy does not make a service a station
        s = seal_as(make_sealer, pki.issue(site_ca, name, station=station))
        assert reason(lambda s=s: opener(s.manifest, parts_of(s), s.capture_id,
                                         topic_device=name)) == "identity"


def test_profile_checked_after_the_chain(make_sealer: Callable[..., Sealer], opener: Any,
                                         pki: Any) -> None:
    s = seal_as(make_sealer, pki.issue(pki.make_ca("rogue CA"), "operator-jane", station=False))
    assert reason(lambda: opener(s.manifest, parts_of(s), s.capture_id,
                                 topic_device="operator-jane")) == "certificate"


def test_pre_policy_station_certificate(make_sealer: Callable[..., Sealer], opener: Any,
                                        pki: Any, site_ca: Any) -> None:
    s = seal_as(make_sealer, pki.issue(site_ca, DEV, station=False))
    with pytest.raises(PrePolicyCertificate) as info:
        opener(s.manifest, parts_of(s), s.capture_id, now=pki.NOW)
    assert info.value.reason == "identity" and "renew" in str(info.value)
    grace = pki.NOW + timedelta(days=1)
    assert opener(s.manifest, parts_of(s), s.capture_id, now=pki.NOW,
                  legacy_until=grace).image == b"jpeg"
    with pytest.raises(PrePolicyCertificate):
        opener(s.manifest, parts_of(s), s.capture_id, now=grace, legacy_until=grace)
