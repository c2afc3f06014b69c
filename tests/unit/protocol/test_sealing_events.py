"""Signed events (DESIGN §5 ``void``): ECDSA over the canonical event without ``sig``."""

from __future__ import annotations

import json
from typing import Any

import pytest
from clinicam.protocol import manifest as mf
from clinicam.protocol.reasons import OpenError
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

VOID = {"event": "void", "at": "2026-11-26T12:00:00.000Z",
        "capture_id": "0123456789abcdef0123456789abcdef"}


def test_sign_then_verify_with_cert_or_key(device: Any) -> None:
    signed = mf.sign_event(VOID, device.key)
    assert set(signed) == {*VOID, "sig"} and {k: v for k, v in signed.items()
                                                      if k != "sig"} == VOID
    cert = x509.load_pem_x509_certificate(device.cert_pem.encode())
    assert mf.verify_event(signed, cert) == VOID
    assert mf.verify_event(signed, device.key.public_key()) == VOID


def test_signature_covers_canonical_bytes_not_key_order(device: Any) -> None:
    signed = mf.sign_event(VOID, device.key)
    reordered = json.loads(json.dumps(dict(reversed(list(signed.items())))))
    assert mf.verify_event(reordered, device.key.public_key()) == VOID
    sig = mf.unb64(signed["sig"])
    mf.verify(mf.canonical(VOID), sig, device.key.public_key())


def test_resigning_replaces_an_old_sig(device: Any) -> None:
    twice = mf.sign_event(mf.sign_event(VOID, device.key), device.key)
    assert mf.verify_event(twice, device.key.public_key()) == VOID


@pytest.mark.parametrize(("field", "value"), [("capture_id", "f" * 32), ("at", "x"),
                                              ("event", "stored"), ("extra", 1)])
def test_any_change_breaks_the_signature(device: Any, field: str, value: Any) -> None:
    signed = {**mf.sign_event(VOID, device.key), field: value}
    with pytest.raises(OpenError) as info:
        mf.verify_event(signed, device.key.public_key())
    assert info.value.reason == "signature"


def test_another_devices_key_is_refused(device: Any) -> None:
    signed = mf.sign_event(VOID, ec.generate_private_key(ec.SECP256R1()))
    with pytest.raises(OpenError) as info:
        mf.verify_event(signed, device.key.public_key())
    assert info.value.reason == "signature"


@pytest.mark.parametrize("event", [VOID, {**VOID, "sig": 5}, {**VOID, "sig": "%%%"}, []])
def test_unsigned_or_malformed_is_refused(device: Any, event: Any) -> None:
    with pytest.raises(OpenError) as info:
        mf.verify_event(event, device.key.public_key())
    assert info.value.reason == "malformed"
