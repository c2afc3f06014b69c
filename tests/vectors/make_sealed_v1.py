"""Write the known-answer vectors of sealed capture v1 (DESIGN §4) to this folder.

Run once, by hand: ``.venv/bin/python tests/vectors/make_sealed_v1.py``. The vectors
are then data: ``tests/unit/firmware/test_sealing_vectors.py`` checks the code against
them byte for byte, so any change of the bytes on the wire fails a test. Never rerun
this to make a failing test pass — a new wire format is a new version (``v``).

Fixed: device key and certificate, site CA, recipient keys, capture id, content key
``K``, boot id, time, sequence number, metadata and image. HPKE draws its ephemeral key
internally, so ``wrapped_key`` (and the signature over it) are recorded as produced.
"""

from __future__ import annotations

import itertools
import json
from datetime import UTC, datetime
from pathlib import Path

from clinicam.protocol.recipient import generate_recipient_key
from clinicam.protocol.sealing import Sealer
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

HERE = Path(__file__).resolve().parent
CREATED = datetime(2026, 11, 26, 9, 30, 15, 250000, tzinfo=UTC)
START, END = datetime(2026, 1, 1, tzinfo=UTC), datetime(2126, 1, 1, tzinfo=UTC)
DEVICE = "cam-kat-01"
CAPTURE_ID = bytes.fromhex("00112233445566778899aabbccddeeff")
CONTENT_KEY = bytes(range(32))
BOOT = "0f" * 16
METADATA = {
    "patient": {"id": "SYNTHETIC-PATIENT-0001", "issuer": "GS1", "encounter": None},
    "operator": None, "purpose": "WOUND", "laterality": "LEFT", "view": "CLOSE-UP",
    "consent": "VERBAL",
    "body_site": {"code": "40983000", "system": "http://snomed.info/sct", "display": "Upper arm"},
    "captured_at": "2026-11-26T09:30:15.000Z", "tz_offset": "+01:00", "clock_synced": True,
    "session": {"id": "ab" * 16, "index": 1},
    "image": {"media_type": "image/jpeg", "width": 8, "height": 8},
    "camera": {"model": None, "exposure_us": None, "analogue_gain": None, "lens_position": None},
    "device": {"id": DEVICE, "site": "kat", "location": "bench", "firmware": "0.1.0"},
}
IMAGE = bytes(b"\xff\xd8\xff\xe0" + bytes((i * 7) % 256 for i in range(292)) + b"\xff\xd9")
CHUNK = 128


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _cert(subject: str, key: ec.EllipticCurvePrivateKey, issuer: str,
          signer: ec.EllipticCurvePrivateKey, ca: bool) -> x509.Certificate:
    b = (x509.CertificateBuilder().subject_name(_name(subject)).issuer_name(_name(issuer))
         .public_key(key.public_key()).serial_number(x509.random_serial_number())
         .not_valid_before(START).not_valid_after(END))
    if ca:
        b = b.add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
    else:
        b = b.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), False)
    return b.sign(signer, hashes.SHA256())


def _pem(obj: object) -> str:
    if isinstance(obj, x509.Certificate):
        return obj.public_bytes(serialization.Encoding.PEM).decode()
    assert isinstance(obj, ec.EllipticCurvePrivateKey)
    return obj.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()


def main() -> None:
    ca_key, dev_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(
        ec.SECP256R1())
    ca = _cert("clinicam KAT CA", ca_key, "clinicam KAT CA", ca_key, ca=True)
    dev = _cert(DEVICE, dev_key, "clinicam KAT CA", ca_key, ca=False)
    for kem, aead in itertools.product(("X25519", "MLKEM768-X25519"),
                                       ("AES-256-GCM", "CHACHA20-POLY1305")):
        recipient = generate_recipient_key(kem)
        draws = iter([CAPTURE_ID, CONTENT_KEY])
        sealer = Sealer(DEVICE, dev_key, _pem(dev), recipient.public_key(), aead=aead,
                        chunk_size=CHUNK, rng=lambda n, d=draws: next(d), utc=lambda: CREATED,
                        boot_id=BOOT)
        sealed = sealer.seal(bytearray(IMAGE), METADATA)
        vector = {
            "kem": kem, "aead": aead, "chunk_size": CHUNK, "device_id": DEVICE,
            "device_key_pem": _pem(dev_key), "device_cert_pem": _pem(dev), "ca_cert_pem": _pem(ca),
            "recipient_key_pem": recipient.private_pem().decode(),
            "capture_id": CAPTURE_ID.hex(), "content_key": CONTENT_KEY.hex(), "boot": BOOT,
            "created": "2026-11-26T09:30:15.250Z", "seq": 1, "metadata": METADATA,
            "image_hex": IMAGE.hex(), "parts_hex": [bytes(p).hex() for p in sealed.parts],
            "manifest_message": sealed.manifest.decode("ascii"),
        }
        name = f"sealed_v1_{kem.lower()}_{aead.split('-')[0].lower()}.json"
        (HERE / name).write_text(json.dumps(vector, indent=1) + "\n")
        print("wrote", name)


if __name__ == "__main__":
    main()
