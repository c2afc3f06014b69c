"""Start a throwaway Orthanc PACS (Debian's ``orthanc`` + ``orthanc-dicomweb``) on free
loopback ports: the PACS of the integration tests, the benchmark and ``demo --pacs``.

Orthanc is the real thing, not a fake: what it accepts by STOW-RS and C-STORE is what a
hospital PACS built on it accepts. Its storage lives in a directory the caller owns, so
a stop and a start keep what was stored (the tests restart it to prove re-delivery).
It serves plain HTTP on loopback only: Debian's Orthanc 1.10 crashes on its first HTTPS
request, so HTTPS with a pinned CA is tested against the FHIR server instead.
"""

from __future__ import annotations

import base64
import json
import logging
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from clinicam.common.errors import ConfigError

log = logging.getLogger(__name__)

ORTHANC_BIN = "/usr/sbin/Orthanc"
DICOMWEB_PLUGIN = "/usr/share/orthanc/plugins/libOrthancDicomWeb.so"


def orthanc_available() -> bool:
    """Whether Orthanc and its DICOMweb plugin are installed."""
    return Path(ORTHANC_BIN).is_file() and Path(DICOMWEB_PLUGIN).is_file()


def free_port() -> int:
    """A TCP port free on loopback right now (the OS picks it)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Orthanc:
    """One Orthanc process; ``start()`` waits until its REST API answers."""

    workdir: Path
    aet: str = "ORTHANC"
    username: str = "clinicam"
    password: str = "clinicam-test"  # noqa: S105 - a throwaway server on loopback
    # DICOM TLS: Orthanc's certificate, its key, and the CA(s) whose clients it accepts
    dicom_tls: tuple[Path, Path, Path] | None = None
    http_port: int = field(default_factory=free_port)
    dicom_port: int = field(default_factory=free_port)
    _proc: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def dicomweb_url(self) -> str:
        return self.base_url + "/dicom-web"

    @property
    def viewer_url(self) -> str:
        """Orthanc Explorer, where a person can look at what was stored."""
        return self.base_url + "/app/explorer.html"

    def config(self) -> dict[str, Any]:
        """Orthanc's configuration: loopback only, authenticated, called AE checked."""
        storage = str(self.workdir / "storage")
        cfg: dict[str, Any] = {
            "Name": "clinicam-test-pacs",
            "StorageDirectory": storage,
            "IndexDirectory": storage,
            "HttpPort": self.http_port,
            "DicomPort": self.dicom_port,
            "DicomAet": self.aet,
            "DicomCheckCalledAet": True,
            "DicomAlwaysAllowStore": True,
            "DicomAlwaysAllowFind": True,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": True,
            "RegisteredUsers": {self.username: self.password},
            "Plugins": [DICOMWEB_PLUGIN],
            "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
            "StorageCompression": False,
            "OverwriteInstances": False,
            "DefaultEncoding": "Utf8",
            "HttpThreadsCount": 8,
        }
        if self.dicom_tls:
            cert, key, trusted = self.dicom_tls
            cfg.update({"DicomTlsEnabled": True, "DicomTlsCertificate": str(cert),
                        "DicomTlsPrivateKey": str(key),
                        "DicomTlsTrustedCertificates": str(trusted),
                        "DicomTlsRemoteCertificateRequired": True})
        return cfg

    def start(self, timeout_s: float = 30.0) -> None:
        """Write the config, launch Orthanc and wait for ``GET /system``."""
        if not orthanc_available():
            raise ConfigError("Orthanc is not installed: apt-get install orthanc orthanc-dicomweb")
        self.workdir.mkdir(parents=True, exist_ok=True)
        config_path = self.workdir / "orthanc.json"
        config_path.write_text(json.dumps(self.config(), indent=2))
        logfile = (self.workdir / "orthanc.log").open("ab")
        self._proc = subprocess.Popen(
            [ORTHANC_BIN, str(config_path)], stdout=logfile, stderr=subprocess.STDOUT
        )
        logfile.close()
        self._wait_ready(timeout_s)

    def _wait_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._proc is not None and self._proc.poll() is not None:
                raise ConfigError(f"Orthanc exited at start: see {self.workdir}/orthanc.log")
            try:
                self.get("/system")
                return
            except (OSError, urllib.error.URLError):
                time.sleep(0.1)
        self.stop()
        raise ConfigError(f"Orthanc did not answer in {timeout_s:g} s: see its log")

    def stop(self) -> None:
        """Terminate Orthanc (storage kept) and wait for it."""
        if self._proc is None:
            return
        self._proc.terminate()
        try:
            self._proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        self._proc = None

    def __enter__(self) -> Orthanc:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def get(self, path: str) -> Any:
        """GET a REST path as the configured user and decode its JSON."""
        return json.loads(self.call("GET", path))

    def get_bytes(self, path: str) -> bytes:
        """GET a REST path as the configured user; the raw body."""
        return self.call("GET", path)

    def find_instances(self, sop_instance_uid: str) -> list[dict[str, Any]]:
        """Orthanc's expanded records of the instances with this SOP Instance UID."""
        query = {"Level": "Instance", "Query": {"SOPInstanceUID": sop_instance_uid},
                 "Expand": True}
        return list(json.loads(self.call("POST", "/tools/find", json.dumps(query).encode())))

    def call(self, method: str, path: str, body: bytes | None = None) -> bytes:
        """One REST call as the configured user."""
        request = urllib.request.Request(  # noqa: S310 - our own http:// base URL
            self.base_url + path, data=body, method=method
        )
        token = base64.b64encode(f"{self.username}:{self.password}".encode()).decode()
        request.add_header("Authorization", "Basic " + token)
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 (http only)
            return bytes(response.read())

    def remove(self) -> None:
        """Stop and delete the storage directory."""
        self.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)
