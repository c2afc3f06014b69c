"""A throwaway site (CA, two devices, a recipient key) for relay unit tests.

Made with ``clinicam.provisioning.pki`` in memory; captures are sealed by the real
``Sealer``, so the relay opens exactly what a station sends.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
from clinicam.protocol.recipient import RecipientPrivateKey, generate_recipient_key
from clinicam.protocol.sealing import SealedCapture, Sealer
from clinicam.provisioning import pki
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec


@dataclass
class UnitSite:
    ca_key: Any
    ca_cert: x509.Certificate
    recipient: RecipientPrivateKey
    keys: dict[str, ec.EllipticCurvePrivateKey]
    sealers: dict[str, Sealer]

    def seal(self, device: str, image: bytes, **metadata: Any) -> SealedCapture:
        md = {"patient": {"id": "SYNTH-0001", "issuer": "test", "encounter": None}, **metadata}
        return self.sealers[device].seal(bytearray(image), md)


@pytest.fixture(scope="session")
def unit_site() -> UnitSite:
    now = pki.utcnow()
    ca_key = pki.new_key()
    ca = pki.make_ca(ca_key, "unit-test", now=now)
    recipient = generate_recipient_key("X25519")
    keys, sealers = {}, {}
    # station-a/-b: station profile (site sign); operator-x, relay-9: site-signed service
    # identities; station-old: a station certificate from before the profile existed.
    for device in ("station-a", "station-b", "operator-x", "relay-9", "station-old"):
        key = pki.new_key()
        station = device in ("station-a", "station-b")
        cert = pki.issue(ca_key, ca, key.public_key(), device, now=now, station=station)
        keys[device] = key
        sealers[device] = Sealer(device, key, pki.cert_pem(cert), recipient.public_key(),
                                 chunk_size=1000, aead="AES-256-GCM")
    return UnitSite(ca_key, ca, recipient, keys, sealers)
