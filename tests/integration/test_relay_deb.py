"""``make deb``: the relay host's package, installed into a clean Debian 12 root.

mmdebstrap builds a minimal bookworm (with systemd and logrotate, as on a server);
the root first gets a stand-in for a package of 0.1.0 (its logrotate policy as a conffile)
and an old relay's status file under /run, then apt installs the package over it and
resolves its dependencies from the archive. Then: dpkg has it with relay.toml as its only
conffile, the old logrotate policy is gone (the relay rotates its audit log itself,
``[audit]``), the old status file's stations were carried to the state directory, the
service user and directories exist, ``systemd-analyze verify`` passes on the unit inside
that root, and ``clinicam relay run`` from the package, as the service user, files a real
station's capture from the real broker and keeps the carried stations. Needs root and
the Debian mirror (a package registry); skipped without them.
"""

from __future__ import annotations

import json
import os
import re
import select
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from test_delivery_support import jpeg_like, make_station

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]
UID = 976  # packaging/relay/sysusers.conf


def need(tool: str) -> None:
    if shutil.which(tool) is None:
        pytest.skip(f"{tool} not installed")


def mirror() -> str:
    for path in [*Path("/etc/apt/sources.list.d").glob("*.sources"), Path("/etc/apt/sources.list")]:
        text = path.read_text() if path.exists() else ""
        for block in text.split("\n\n"):
            uri = re.search(r"^URIs:\s*(\S+)", block, re.M)
            if uri and re.search(r"^Suites:.*\bbookworm(\s|$)", block, re.M):
                return uri.group(1)
        found = re.search(r"^deb\s+(\S+)\s+bookworm\s", text, re.M)
        if found:
            return found.group(1)
    pytest.skip("no Debian bookworm mirror in the host's apt sources")


def chroot(root: Path, *cmd: str) -> str:
    done = subprocess.run(["chroot", str(root), *cmd], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"{cmd}: {done.stdout}{done.stderr}"
    return done.stdout


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if os.geteuid() != 0:
        pytest.skip("installing into a root needs root")
    for tool in ("mmdebstrap", "dpkg-deb", "systemd-analyze", "chroot"):
        need(tool)
    built = subprocess.run([str(REPO / "scripts/build-deb.sh")], cwd=REPO, capture_output=True, text=True,
                           timeout=1200)
    assert built.returncode == 0, built.stderr
    deb = REPO / built.stdout.split(":")[0].strip()
    work = tmp_path_factory.mktemp("debian12")
    old, root = old_package(work), work / "root"
    status = '{"stations": {"station-old": {"state": "offline", "pending": 2}}}'
    hooks = [f"copy-in {deb} {old} /tmp",
             f'chroot "$1" dpkg -i /tmp/{old.name}',
             f"mkdir -p \"$1/run/clinicam-relay\" && echo '{status}' > \"$1/run/clinicam-relay/status.json\"",
             f'chroot "$1" apt-get install -y --no-install-recommends /tmp/{deb.name}']
    boot = subprocess.run(["mmdebstrap", "--variant=minbase", "--include=systemd,logrotate",
                           *[f"--customize-hook={h}" for h in hooks], "bookworm", str(root), mirror()],
                          capture_output=True, text=True, timeout=1800, stdin=subprocess.DEVNULL)
    assert boot.returncode == 0, boot.stderr[-4000:]
    return root


def old_package(work: Path) -> Path:
    """What packages up to 0.1.0 left on a host: /etc/logrotate.d/clinicam-relay as a conffile."""
    stage = work / "old"
    (stage / "DEBIAN").mkdir(parents=True)
    (stage / "etc/logrotate.d").mkdir(parents=True)
    (stage / "etc/logrotate.d/clinicam-relay").write_text("/var/lib/clinicam-relay/audit.jsonl {\n    weekly\n}\n")
    (stage / "DEBIAN/conffiles").write_text("/etc/logrotate.d/clinicam-relay\n")
    (stage / "DEBIAN/control").write_text(
        "Package: clinicam-relay\nVersion: 0.0.9\nArchitecture: all\nMaintainer: t <t@example.org>\n"
        "Description: stand-in for the 0.1.0 package\n")
    deb = work / "clinicam-relay_0.0.9_all.deb"
    subprocess.run(["dpkg-deb", "--root-owner-group", "--build", str(stage), str(deb)], check=True,
                   capture_output=True)
    return deb


def test_the_package_installs_like_debian_software(installed: Path) -> None:
    root = installed
    assert chroot(root, "dpkg-query", "-W", "-f=${Status}", "clinicam-relay") == "install ok installed"
    conffiles = chroot(root, "dpkg-query", "-W", "-f=${Conffiles}", "clinicam-relay")
    assert "/etc/clinicam/relay.toml" in conffiles  # positive control for the next line
    # one rotation, the relay's own: the upgrade removed the old package's logrotate policy
    assert "logrotate" not in conffiles, conffiles
    assert not list((root / "etc/logrotate.d").glob("clinicam-relay*"))
    assert (root / "etc/logrotate.d").is_dir()  # logrotate is installed there
    moved = root / "var/lib/clinicam-relay/status.json"  # the old /run status file, carried over
    assert '"station-old"' in moved.read_text() and moved.stat().st_uid == UID
    user = chroot(root, "getent", "passwd", "clinicam-relay").split(":")
    assert user[2] == str(UID) and user[6].strip() == "/usr/sbin/nologin"
    state, keys = (root / "var/lib/clinicam-relay").stat(), (root / "etc/clinicam/relay").stat()
    assert (state.st_uid, oct(state.st_mode & 0o777)) == (UID, "0o700")
    assert (keys.st_uid, keys.st_gid, oct(keys.st_mode & 0o777)) == (0, UID, "0o750")
    verify = subprocess.run(["systemd-analyze", "verify", f"--root={root}", "clinicam-relay.service"],
                            capture_output=True, text=True, timeout=120)
    assert verify.returncode == 0, verify.stderr
    assert "clinicam-relay.service" not in verify.stderr, verify.stderr  # no warning about our unit
    chroot(root, "/opt/clinicam/venv/bin/python", "-c",
           "import clinicam.relay.sinks.dicomweb, clinicam.relay.sinks.dimse, clinicam.relay.sinks.fhir")


def test_the_relay_runs_from_the_package_and_files_a_capture(
        installed: Path, site: Any, broker: Any) -> None:
    root = installed
    etc = root / "etc/clinicam/relay"
    relay = site.relay(1)
    for src, name in ((relay.cert, "relay-1.pem"), (relay.key, "relay-1.key"), (site.ca_pem, "ca.pem"),
                      (site.recipient_key_path, "recipient.key")):
        shutil.copy(src, etc / name)
        os.chown(etc / name, 0, UID)
        (etc / name).chmod(0o640)
    conf = (root / "etc/clinicam/relay.toml").read_text()
    conf = conf.replace('host = "localhost"', 'host = "127.0.0.1"').replace("port = 8883", f"port = {broker.port}")
    (root / "etc/clinicam/relay.toml").write_text(conf)
    command = [shutil.which("chroot") or "chroot", f"--userspec={UID}:{UID}", str(root),
               "/usr/bin/clinicam", "relay", "run", "--config", "/etc/clinicam/relay.toml"]
    proc = subprocess.Popen(command, stderr=subprocess.PIPE,
                            env={"PATH": "/usr/bin:/bin", "PYTHONDONTWRITEBYTECODE": "1"})
    assert proc.stderr is not None
    seen, deadline = b"", time.monotonic() + 60
    station = None
    try:
        while b"clinicam relay: running" not in seen:
            ready, _, _ = select.select([proc.stderr], [], [], max(0.0, deadline - time.monotonic()))
            chunk = proc.stderr.read1(4096) if ready else b""  # type: ignore[attr-defined]
            assert chunk, f"the packaged relay did not start: {seen.decode(errors='replace')}"
            seen += chunk
        station = make_station(site, "station-a", broker.port, presence_settle_s=0.5)
        cid = station.capture(jpeg_like(30_000, seed=5))
        station.wait_stored([cid])
    finally:
        if station is not None:
            station.uplink.stop()
        proc.terminate()
        assert proc.wait(30) == 0
    filed = root / "var/lib/clinicam-relay/captures/station-a" / f"{cid}.jpg"
    assert filed.exists() and filed.stat().st_uid == UID
    assert (root / "var/lib/clinicam-relay/audit.jsonl").exists()
    # the status file is in the state directory: both the carried station and the new one
    stations = json.loads((root / "var/lib/clinicam-relay/status.json").read_text())["stations"]
    assert {"station-old", "station-a"} <= set(stations), stations
