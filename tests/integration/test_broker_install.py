"""The broker installed as the README says, run as Debian's ``mosquitto`` user.

``site-init`` writes ``broker/``; the README's install block (run here verbatim, with
the folder and port substituted) copies it and starts ``mosquitto -c``, which as root
drops to the ``mosquitto`` user before it reads the ACL and the CRL. The broker must
come up and let the site's relay in; the control shows the test really runs as that
user: without the README's ``chown`` of the key, Mosquitto cannot load it.
"""

from __future__ import annotations

import os
import pwd
import re
import shlex
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from clinicam.provisioning.tlsctx import client_context
from clinicam.tools.brokerproc import free_port
from paho.mqtt.enums import CallbackAPIVersion

ROOT = Path(__file__).resolve().parents[2]
CLINICAM = [sys.executable, "-m", "clinicam.tools.cli"]

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("mosquitto") is None, reason="needs root and mosquitto (to drop to its user)"
)


def readme_broker_block() -> list[str]:
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"On the broker host, as root.*?```sh\n(.*?)```", readme, re.S)
    assert block, "README: no broker install block"
    return [line for line in block.group(1).splitlines() if line.strip()]


@pytest.fixture
def world() -> Iterator[Path]:
    """A folder the mosquitto user may traverse (pytest's tmp_path is root's, 0700)."""
    path = Path(tempfile.mkdtemp(prefix="clinicam-broker-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path)


def site_and_commands(world: Path) -> tuple[Path, int, list[list[str]]]:
    site, target, port = world / "site", world / "etc-mosquitto-clinicam", free_port("127.0.0.1")
    subprocess.run(
        [*CLINICAM, "provision", "site-init", str(site), "--site", "Broker Clinic", "--broker-host", "127.0.0.1",
         "--broker-port", str(port), "--kem", "x25519", "--broker-conf-dir", str(target)],
        check=True, capture_output=True, timeout=120,
    )
    commands = []
    for line in readme_broker_block():
        line = line.replace("/etc/mosquitto/clinicam", str(target)).replace("SITE/", f"{site}/")
        commands.append(line)
    return site, port, [shlex.split(c) if "*" not in c else ["sh", "-c", c] for c in commands]


def start(argv: list[str]) -> subprocess.Popen[str]:
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def wait_listening(proc: subprocess.Popen[str], port: int, timeout: float = 15) -> bool:
    import socket

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return True
        time.sleep(0.1)
    return False


def stop(proc: subprocess.Popen[str]) -> str:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=15)
    return out


def uid_of(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"^Uid:\s+(\d+)", status, re.M).group(1))  # type: ignore[union-attr]


def test_the_readme_broker_install_runs_as_the_mosquitto_user(world: Path) -> None:
    site, port, commands = site_and_commands(world)
    assert commands[-1][0] == "mosquitto"
    for argv in commands[:-1]:
        subprocess.run(argv, check=True, timeout=60)
    broker = start(commands[-1])
    try:
        assert wait_listening(broker, port), stop(broker)
        assert uid_of(broker.pid) == pwd.getpwnam("mosquitto").pw_uid
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="relay-1", protocol=mqtt.MQTTv5)
        relay = site / "relay"
        client.tls_set_context(client_context(relay / "ca.pem", relay / "relay-1.pem", relay / "relay-1.key"))
        done, codes = threading.Event(), []
        client.on_connect = lambda _c, _u, _f, rc, _p: (codes.append(rc), done.set())
        client.connect("127.0.0.1", port)
        client.loop_start()
        assert done.wait(15)
        client.disconnect()
        client.loop_stop()
    finally:
        log = stop(broker)
    assert codes and not codes[0].is_failure, log
    assert "Unable to" not in log and "Error" not in log, log


def test_control_without_the_chown_the_mosquitto_user_cannot_read_the_key(world: Path) -> None:
    _, _, commands = site_and_commands(world)
    for argv in commands[:-1]:
        if argv[0] != "chown":
            subprocess.run(argv, check=True, timeout=60)
    broker = start(commands[-1])
    try:
        # Mosquitto opens its socket before it loads the key, so "listening" proves nothing here.
        code = broker.wait(timeout=20)
    finally:
        log = stop(broker)
    assert code != 0, log
    assert re.search(r"Unable to load server key|Permission denied|Unable to open", log), log


def test_site_init_gives_the_relay_the_files_its_example_config_names(world: Path) -> None:
    """relay.example.toml's [identity] expects /etc/clinicam/relay/{relay-1.pem, .key,
    ca.pem, recipient.key}: copying SITE/relay/ there makes every path check pass."""
    from clinicam.relay.config import EXAMPLE, check_files, load_relay_config

    site, _, _ = site_and_commands(world)
    installed = world / "etc-clinicam-relay"
    shutil.copytree(site / "relay", installed)
    assert (installed / "ca.pem").read_bytes() == (site / "ca.pem").read_bytes()
    text = EXAMPLE.read_text().replace("/etc/clinicam/relay", str(installed))
    text = text.replace("/var/lib/clinicam-relay", str(world / "state")).replace("/run/clinicam-relay", str(world))
    config = world / "relay.toml"
    config.write_text(text)
    check_files(load_relay_config(config))
    ssl.create_default_context(cafile=str(installed / "ca.pem"))  # a real PEM CA
