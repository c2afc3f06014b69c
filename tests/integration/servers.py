"""Helpers for the record-system integration tests: synthetic captures with real JPEGs,
the PACS-outage check both Orthanc sink tests run, a throwaway TLS CA for HTTPS
servers, and the FHIR server (sekmet) process."""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import ipaddress
import json
import os
import shutil
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from clinicam.protocol.reasons import SinkError
from clinicam.relay.sinks import Sink
from clinicam.tools.orthanc import Orthanc, free_port
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from PIL import Image

REPO = Path(__file__).resolve().parents[2]


def jpeg(width: int = 320, height: int = 240, seed: int = 0) -> bytes:
    """A real baseline JPEG with some texture (so it is not trivially compressible)."""
    img = Image.effect_noise((width, height), 40 + seed % 30).convert("RGB")
    out = io.BytesIO()
    img.save(out, "JPEG", quality=90)
    return out.getvalue()


def sized_jpeg(target_bytes: int) -> bytes:
    """A JPEG of roughly ``target_bytes`` (for the benchmark's 1 MB and 5 MB images)."""
    side = 512
    while True:
        data = jpeg(side, side * 3 // 4, seed=side)
        if len(data) >= target_bytes:
            return data
        side = int(side * (target_bytes / len(data)) ** 0.5 * 1.05) + 8


@dataclass
class Capture:
    """The five fields a sink reads of an opened capture."""

    device: str
    capture_id: str
    manifest: dict[str, Any]
    metadata: dict[str, Any]
    image: bytes


def capture(
    index: int = 1,
    *,
    patient: str = "SYN0001",
    issuer: str = "urn:oid:2.999.1",
    session: str = "5e" * 16,
    device: str = "ward5-cart1",
    purpose: str | None = "WOUND",
    image: bytes | None = None,
    body_site: dict[str, str] | None = None,
) -> Capture:
    """A synthetic capture (no real PHI) with DESIGN §6 metadata."""
    data = image if image is not None else jpeg(seed=index)
    capture_id = hashlib.sha256(f"{device}/{session}/{index}".encode()).hexdigest()[:32]
    md = {
        "patient": {"id": patient, "issuer": issuer, "encounter": "ENC-SYN-1"},
        "operator": {"id": "OP-SYN-7", "issuer": "urn:oid:2.999.2"},
        "purpose": purpose,
        "laterality": "RIGHT",
        "view": "CLOSE-UP",
        "consent": "VERBAL",
        "body_site": body_site
        or {"code": "7769000", "system": "http://snomed.info/sct", "display": "Right foot"},
        "captured_at": f"2026-03-02T09:{index % 60:02d}:05.123Z",
        "tz_offset": "+01:00",
        "clock_synced": True,
        "session": {"id": session, "index": index},
        "image": {"media_type": "image/jpeg", "width": 0, "height": 0, "size": len(data),
                  "sha256": hashlib.sha256(data).hexdigest()},
        "camera": {"model": "imx708", "exposure_us": 1000, "analogue_gain": 1.0,
                   "lens_position": None},
        "device": {"id": device, "site": "north", "location": "Ward 5", "firmware": "0.1.0"},
    }
    return Capture(device, capture_id, {"capture_id": capture_id}, md, data)


def check_pacs_down_then_up(server: Orthanc, sink: Sink, cap: Capture) -> None:
    """Stop ``server``, expect ``sink-unavailable`` (so the relay retries), start it
    again, and expect the retry and a redelivery to leave one instance; stops the server."""
    try:
        server.stop()
        with pytest.raises(SinkError) as err:
            sink.store(cap)
        assert err.value.reason == "sink-unavailable"
        server.start()
        ref = sink.store(cap)
        assert sink.store(cap) == ref
        assert len(server.find_instances(ref)) == 1
    finally:
        server.stop()


@dataclass
class TestTls:
    """A throwaway CA and a loopback server certificate signed by it."""

    ca_pem: Path
    server_pem: Path  # certificate followed by its key (Orthanc's SslCertificate form)
    server_cert: Path
    server_key: Path


def make_tls(directory: Path) -> TestTls:
    directory.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "clinicam test PACS CA")])
    ca = (
        x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
        .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False),
                       critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([
            x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]), False)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH,
                                              x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH]), False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                       False)
        .sign(ca_key, hashes.SHA256())
    )
    cert_pem = cert.public_bytes(serialization.Encoding.PEM)
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    tls = TestTls(directory / "ca.pem", directory / "server.pem", directory / "server.crt",
                  directory / "server.key")
    tls.ca_pem.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    tls.server_pem.write_bytes(cert_pem + key_pem)
    tls.server_cert.write_bytes(cert_pem)
    tls.server_key.write_bytes(key_pem)
    return tls


# ---------------------------------------------------------------------------- FHIR server

def sekmet_bin() -> str | None:
    """The ``sekmet`` FHIR server: $CLINICAM_SEKMET, the repo's .venv-fhir, or PATH."""
    for candidate in (os.environ.get("CLINICAM_SEKMET"), str(REPO / ".venv-fhir/bin/sekmet")):
        if candidate and Path(candidate).is_file():
            return candidate
    return shutil.which("sekmet")


@dataclass
class FhirServer:
    """A sekmet FHIR R4 server on a free loopback port, data in ``workdir``.

    It accepts the bearer ``token`` only, validates inbound resources strictly, and
    serves HTTPS with a certificate from ``tls`` when given.
    """

    workdir: Path
    token: str = "fhir-test-token"
    tls: TestTls | None = None
    port: int = field(default_factory=free_port)
    _proc: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        scheme = "https" if self.tls else "http"
        return f"{scheme}://127.0.0.1:{self.port}/fhir"

    def settings(self) -> dict[str, Any]:
        settings: dict[str, Any] = {
            "host": "127.0.0.1",
            "port": self.port,
            "base_url": self.base_url,
            "data_dir": str(self.workdir / "data"),
            "own_private_key_path": str(self.workdir / "keys" / "sekmet.pem"),
            "simulator": {"enabled": False},
            "server_auth": {"types": ["bearer"], "tokens": [self.token]},
            "validation": {"inbound": "strict"},
            "log_inbound": False,
        }
        if self.tls:
            settings["tls_certfile"] = str(self.tls.server_cert)
            settings["tls_keyfile"] = str(self.tls.server_key)
        return settings

    def start(self, timeout_s: float = 60.0) -> None:
        binary = sekmet_bin()
        assert binary, "sekmet not installed"
        self.workdir.mkdir(parents=True, exist_ok=True)
        config = self.workdir / "settings.yaml"
        config.write_text(json.dumps(self.settings()))  # JSON is YAML
        log = (self.workdir / "sekmet.log").open("ab")
        self._proc = subprocess.Popen(
            [binary, "serve", "--config", str(config)], cwd=self.workdir,
            stdout=log, stderr=subprocess.STDOUT,
        )
        log.close()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self._proc.poll() is None, (self.workdir / "sekmet.log").read_text()[-3000:]
            try:
                self.request("GET", "/metadata")
                return
            except (OSError, urllib.error.URLError):
                time.sleep(0.2)
        raise AssertionError("sekmet did not answer /fhir/metadata")

    def stop(self) -> None:
        if self._proc is not None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
            self._proc = None

    def request(self, method: str, path: str, body: Any = None) -> Any:
        """A request with the server's token (pinned to the test CA over HTTPS)."""
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.base_url + path, data=data, method=method)
        req.add_header("Content-Type", "application/fhir+json")
        req.add_header("Accept", "application/fhir+json")
        req.add_header("Authorization", "Bearer " + self.token)
        context = ssl.create_default_context(cafile=str(self.tls.ca_pem)) if self.tls else None
        with urllib.request.urlopen(req, timeout=10, context=context) as response:
            return json.loads(response.read() or b"{}")

    def add_patient(self, patient_id: str, issuer: str, **extra: Any) -> str:
        body = {"resourceType": "Patient",
                "identifier": [{"system": issuer, "value": patient_id}], **extra}
        return str(self.request("POST", "/Patient", body)["id"])

    def search(self, query: str) -> list[dict[str, Any]]:
        bundle = self.request("GET", query)
        return [e["resource"] for e in bundle.get("entry") or []]
