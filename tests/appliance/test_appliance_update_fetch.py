"""update-fetch (image-build/update/update-fetch) against the update server the boot
test runs (image-build/standin/update-server.py) on loopback, pinning like the
broker: site CA, client certificate required, Range requests. The first transfer is
cut off half way: the download must resume, not restart; a wrong digest, a wrong CA
and a missing client certificate are refused.
update-install is replaced by a recorder (the install itself runs in make test-update)."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

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


SERVER = IMAGE_BUILD / "standin" / "update-server.py"


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, str]]:
    """The update server the boot test runs (standin/update-server.py), as a process.

    It serves the payload twice: ``cut.raucb`` has its first full transfer cut off
    half way, ``station.raucb`` is served whole."""
    need("curl", "curl")
    need("openssl", "openssl")
    d = tmp_path_factory.mktemp("site")
    make_ca(d, "ca")
    make_ca(d, "other-ca")
    issue(d, "ca", "server", "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n")
    issue(d, "ca", "station", "extendedKeyUsage=clientAuth\n")
    (d / "www").mkdir()
    for name in ("cut.raucb", "station.raucb"):
        (d / "www" / name).write_bytes(PAYLOAD)
    port_file = d / "port"
    proc = subprocess.Popen([sys.executable, str(SERVER), "--dir", str(d / "www"), "--cert", str(d / "server.pem"),
                             "--key", str(d / "server.key"), "--ca", str(d / "ca.pem"), "--port-file", str(port_file),
                             "--log", str(d / "requests.jsonl"), "--cut-first", "cut.raucb"])
    try:
        for _ in range(200):
            if port_file.exists() or proc.poll() is not None:
                break
            time.sleep(0.05)
        assert port_file.exists(), "update-server.py did not start"
        yield d, f"https://127.0.0.1:{int(port_file.read_text())}"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def requests(d: Path, name: str) -> list[dict[str, object]]:
    lines = (d / "requests.jsonl").read_text().splitlines() if (d / "requests.jsonl").exists() else []
    return [r for r in map(json.loads, lines) if r["path"] == name]


def identity(tmp: Path, d: Path, ca: str = "ca", client: bool = True) -> Path:
    ident = tmp / "identity"
    ident.mkdir()
    (ident / "ca.pem").write_bytes((d / f"{ca}.pem").read_bytes())
    (ident / "device.pem").write_bytes((d / "station.pem").read_bytes() if client else b"")
    (ident / "device.key").write_bytes((d / "station.key").read_bytes() if client else b"")
    return ident


def fetch(tmp: Path, ident: Path, url: str, digest: str, tmpfs: str = "none") -> subprocess.CompletedProcess[str]:
    recorder = tmp / "update-install"
    recorder.write_text('#!/bin/sh\necho "update-install $*" > "$(dirname "$0")/installed"\n')
    recorder.chmod(0o755)
    env = dict(os.environ, CLINICAM_IDENTITY_DIR=str(ident), CLINICAM_UPDATE_RUN=str(tmp / "run"),
               CLINICAM_UPDATE_INSTALL=str(recorder), CLINICAM_FETCH_ATTEMPTS="3", CLINICAM_FETCH_BACKOFF_S="0",
               CLINICAM_FETCH_TMPFS=tmpfs)
    return subprocess.run(["sh", str(FETCH), url, digest, "--wait-idle", "60"], env=env, capture_output=True,
                          text=True, check=False, timeout=60)


def test_fetch_resumes_a_dropped_download_and_hands_over(tmp_path: Path, site: tuple[Path, str]) -> None:
    d, base = site
    result = fetch(tmp_path, identity(tmp_path, d), f"{base}/cut.raucb", hashlib.sha256(PAYLOAD).hexdigest())
    assert result.returncode == 0, result.stderr
    assert "link dropped at" in result.stderr
    # The second request asked only for the rest (a resume, not a restart).
    first, second = requests(d, "cut.raucb")
    assert first["range"] == "" and first["cut"] is True
    assert second["range"] == f"bytes={first['sent']}-" and second["sent"] == len(PAYLOAD) - first["sent"]
    bundle = tmp_path / "run/spool/bundle.raucb"
    assert bundle.read_bytes() == PAYLOAD
    assert (tmp_path / "installed").read_text().split() == ["update-install", str(bundle), "--wait-idle", "60"]


def test_fetch_refuses_a_wrong_digest(tmp_path: Path, site: tuple[Path, str]) -> None:
    d, base = site
    result = fetch(tmp_path, identity(tmp_path, d), f"{base}/station.raucb", "0" * 64)
    assert result.returncode == 3 and "SHA-256" in result.stderr
    assert not (tmp_path / "installed").exists() and not (tmp_path / "run/spool/bundle.raucb").exists()


@pytest.mark.parametrize(("ca", "client"), [("other-ca", True), ("ca", False)])
def test_fetch_needs_the_pinned_ca_and_a_client_certificate(tmp_path: Path, site: tuple[Path, str],
                                                            ca: str, client: bool) -> None:
    d, base = site
    result = fetch(tmp_path, identity(tmp_path, d, ca=ca, client=client), f"{base}/station.raucb",
                   hashlib.sha256(PAYLOAD).hexdigest())
    assert result.returncode == 6 and "gave up" in result.stderr
    assert not (tmp_path / "installed").exists()


def test_a_bundle_that_does_not_fit_in_ram_is_refused_at_once(tmp_path: Path, site: tuple[Path, str]) -> None:
    """A spool smaller than the bundle (a tmpfs of 64 KiB): a clear message, no retries."""
    if os.geteuid() != 0:
        pytest.skip("mounting the spool tmpfs needs root (as make test runs)")
    d, base = site
    try:
        result = fetch(tmp_path, identity(tmp_path, d), f"{base}/station.raucb", hashlib.sha256(PAYLOAD).hexdigest(),
                       tmpfs="64k")
    finally:
        subprocess.run(["umount", str(tmp_path / "run/spool")], check=False, timeout=30)
    assert result.returncode == 6 and "does not fit in" in result.stderr and "CLINICAM_FETCH_TMPFS" in result.stderr
    assert "resuming" not in result.stderr and not (tmp_path / "installed").exists()
