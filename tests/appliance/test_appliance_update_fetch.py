"""update-fetch (image-build/update/update-fetch) against a real HTTPS server on
loopback that pins like the broker: site CA, client certificate required, Range
requests. The first transfer is cut off half way: the download must resume, not
restart; a wrong digest, a wrong CA and a missing client certificate are refused.
update-install is replaced by a recorder (the install itself runs in make test-update)."""

from __future__ import annotations

import hashlib
import http.server
import os
import ssl
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import pytest
from appliance_support import IMAGE_BUILD, need

FETCH = IMAGE_BUILD / "update" / "update-fetch"
PAYLOAD = os.urandom(3 * 65536 + 123)


def openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=60)


def make_ca(d: Path, name: str) -> None:
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "2",
            "-subj", f"/CN={name}", "-keyout", str(d / f"{name}.key"), "-out", str(d / f"{name}.pem"),
            "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign")


def issue(d: Path, ca: str, name: str, ext: str) -> None:
    openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-subj", f"/CN={name}",
            "-keyout", str(d / f"{name}.key"), "-out", str(d / f"{name}.csr"))
    (d / f"{name}.ext").write_text(ext)
    openssl("x509", "-req", "-in", str(d / f"{name}.csr"), "-CA", str(d / f"{ca}.pem"), "-CAkey",
            str(d / f"{ca}.key"), "-CAcreateserial", "-days", "2", "-extfile", str(d / f"{name}.ext"),
            "-out", str(d / f"{name}.pem"))


class Handler(http.server.BaseHTTPRequestHandler):
    """Serves PAYLOAD with Range support; the first full transfer is cut off half way."""

    cut_first: ClassVar[bool] = True
    ranges: ClassVar[list[str]] = []

    def do_GET(self) -> None:
        rng = self.headers.get("Range", "")
        Handler.ranges.append(rng)
        start = int(rng.removeprefix("bytes=").rstrip("-")) if rng else 0
        body = PAYLOAD[start:]
        self.send_response(206 if rng else 200)
        self.send_header("Content-Length", str(len(body)))
        if rng:
            self.send_header("Content-Range", f"bytes {start}-{len(PAYLOAD) - 1}/{len(PAYLOAD)}")
        self.end_headers()
        if Handler.cut_first and not rng:
            Handler.cut_first = False
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.connection.shutdown(2)  # the Wi-Fi dropped
            return
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, str]]:
    need("curl", "curl")
    need("openssl", "openssl")
    d = tmp_path_factory.mktemp("site")
    make_ca(d, "ca")
    make_ca(d, "other-ca")
    issue(d, "ca", "server", "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n")
    issue(d, "ca", "station", "extendedKeyUsage=clientAuth\n")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(d / "server.pem", d / "server.key")
    ctx.load_verify_locations(d / "ca.pem")
    ctx.verify_mode = ssl.CERT_REQUIRED  # like the broker: no certificate, no bundle
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield d, f"https://127.0.0.1:{server.server_address[1]}/station.raucb"
    server.shutdown()


def identity(tmp: Path, d: Path, ca: str = "ca", client: bool = True) -> Path:
    ident = tmp / "identity"
    ident.mkdir()
    (ident / "ca.pem").write_bytes((d / f"{ca}.pem").read_bytes())
    (ident / "device.pem").write_bytes((d / "station.pem").read_bytes() if client else b"")
    (ident / "device.key").write_bytes((d / "station.key").read_bytes() if client else b"")
    return ident


def fetch(tmp: Path, ident: Path, url: str, digest: str) -> subprocess.CompletedProcess[str]:
    recorder = tmp / "update-install"
    recorder.write_text('#!/bin/sh\necho "update-install $*" > "$(dirname "$0")/installed"\n')
    recorder.chmod(0o755)
    env = dict(os.environ, CLINICAM_IDENTITY_DIR=str(ident), CLINICAM_UPDATE_RUN=str(tmp / "run"),
               CLINICAM_UPDATE_INSTALL=str(recorder), CLINICAM_FETCH_ATTEMPTS="3", CLINICAM_FETCH_BACKOFF_S="0")
    return subprocess.run(["sh", str(FETCH), url, digest, "--wait-idle", "60"], env=env, capture_output=True,
                          text=True, check=False, timeout=60)


def test_fetch_resumes_a_dropped_download_and_hands_over(tmp_path: Path, site: tuple[Path, str]) -> None:
    d, url = site
    Handler.cut_first, Handler.ranges = True, []
    result = fetch(tmp_path, identity(tmp_path, d), url, hashlib.sha256(PAYLOAD).hexdigest())
    assert result.returncode == 0, result.stderr
    assert "link dropped at" in result.stderr
    # The second request asked only for the rest (a resume, not a restart).
    assert Handler.ranges[0] == "" and Handler.ranges[1].startswith("bytes=") and Handler.ranges[1] != "bytes=0-"
    bundle = tmp_path / "run/bundle.raucb"
    assert bundle.read_bytes() == PAYLOAD
    assert (tmp_path / "installed").read_text().split() == ["update-install", str(bundle), "--wait-idle", "60"]


def test_fetch_refuses_a_wrong_digest(tmp_path: Path, site: tuple[Path, str]) -> None:
    d, url = site
    Handler.cut_first = False
    result = fetch(tmp_path, identity(tmp_path, d), url, "0" * 64)
    assert result.returncode == 3 and "SHA-256" in result.stderr
    assert not (tmp_path / "installed").exists() and not (tmp_path / "run/bundle.raucb").exists()


@pytest.mark.parametrize(("ca", "client"), [("other-ca", True), ("ca", False)])
def test_fetch_needs_the_pinned_ca_and_a_client_certificate(tmp_path: Path, site: tuple[Path, str],
                                                            ca: str, client: bool) -> None:
    d, url = site
    Handler.cut_first = False
    result = fetch(tmp_path, identity(tmp_path, d, ca=ca, client=client), url, hashlib.sha256(PAYLOAD).hexdigest())
    assert result.returncode == 6 and "gave up" in result.stderr
    assert not (tmp_path / "installed").exists()
