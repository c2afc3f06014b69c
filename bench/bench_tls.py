"""mTLS connect cost of a station: paho (as the station uses it) beside ``mosquitto_pub``.

Both sides do the same protocol work against the same broker started from a
throwaway site's generated config: TLS handshake with the device certificate, MQTT 5
CONNECT/CONNACK, one QoS 1 PUBLISH of an empty payload to the device's event topic
(PUBACK), DISCONNECT. Honest differences, stated in the figures' notes:

* paho runs in this already-started Python process and builds its ``SSLContext``
  (loads CA, certificate and key) each run, as a reconnecting station would;
* ``mosquitto_pub`` is a whole process run: exec, library start-up, the same file
  loading, the same protocol. Its exec cost alone is reported as a third figure
  (``mosquitto_pub --help``), so a reader can subtract it.

There is no budget for this in DESIGN §10: it is reported so a regression in the
handshake (a cipher, a curve, a certificate chain) shows up.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
from pathlib import Path

import paho.mqtt.client as mqtt
from clinicam.protocol.topics import Topics
from clinicam.provisioning import identity
from clinicam.provisioning.site import Site
from clinicam.provisioning.tlsctx import client_context
from clinicam.tools.brokerproc import LOOPBACK, Mosquitto, free_port
from harness import Context, Figure, measure
from paho.mqtt.enums import CallbackAPIVersion

AREA = "tls"
DEVICE = "bench-station"


def _provision(root: Path) -> tuple[Site, identity.DeviceIdentity]:
    site = Site.create(root / "site", "Bench Clinic", [LOOPBACK], port=free_port(), kem="x25519")
    d = root / "station"
    site.sign(identity.create_device_key(d, DEVICE).read_bytes())
    bundle = site.bundle(DEVICE, root / "bundle")
    return site, identity.install(identity.InstallFiles.from_bundle(bundle), d)


def _paho_once(ident: identity.DeviceIdentity, port: int) -> None:
    """Connect, publish QoS 1, disconnect: all in this thread, driven by ``loop()``."""
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=DEVICE, protocol=mqtt.MQTTv5)
    c.tls_set_context(client_context(ident.ca_path, ident.cert_path, ident.key_path))
    connected: list[bool] = []
    c.on_connect = lambda *a: connected.append(not a[3].is_failure)
    c.connect(LOOPBACK, port, keepalive=30)
    while not connected:
        c.loop(1.0)
    if not connected[0]:
        raise RuntimeError("broker refused the bench station")
    info = c.publish(Topics().event(DEVICE), b"", qos=1)
    while not info.is_published():
        c.loop(1.0)
    c.disconnect()


def _pub_cmd(ident: identity.DeviceIdentity, port: int) -> list[str]:
    return [
        "mosquitto_pub", "-h", LOOPBACK, "-p", str(port), "-V", "mqttv5",
        "--cafile", str(ident.ca_path), "--cert", str(ident.cert_path),
        "--key", str(ident.key_path), "-t", Topics().event(DEVICE), "-n", "-q", "1",
    ]  # fmt: skip


def _handshake_once(ident: identity.DeviceIdentity, port: int) -> None:
    ctx = client_context(ident.ca_path, ident.cert_path, ident.key_path)
    with socket.create_connection((LOOPBACK, port)) as raw, ctx.wrap_socket(
        raw, server_hostname=LOOPBACK
    ):
        pass


def run(ctx: Context) -> list[Figure]:
    if shutil.which("mosquitto_pub") is None or shutil.which("mosquitto") is None:
        raise RuntimeError("bench_tls needs mosquitto and mosquitto_pub (apt: mosquitto-clients)")
    runs = max(5, ctx.runs)
    root = ctx.workdir / "bench_tls"
    site, ident = _provision(root)
    with Mosquitto(site.broker_dir, root / "broker", port=site.port) as broker:
        cmd = _pub_cmd(ident, broker.port)
        paho = measure(lambda: _paho_once(ident, broker.port), runs=runs)
        pub = measure(lambda: subprocess.run(cmd, check=True, timeout=30), runs=runs)
        exec_only = measure(
            lambda: subprocess.run(["mosquitto_pub", "--help"], capture_output=True, check=False),
            runs=runs,
        )
        tls = measure(lambda: _handshake_once(ident, broker.port), runs=runs)
    return [
        Figure(AREA, "station connect+publish q1+disconnect (paho)", "s", paho,
               baseline_name="mosquitto_pub -n -q 1, whole process run", baseline=pub,
               note="paho in-process incl. SSLContext load; baseline includes process exec "
               "(see 'mosquitto_pub exec only')"),
        Figure(AREA, "mosquitto_pub exec only (--help)", "s", exec_only,
               note="process start cost inside the baseline above"),
        Figure(AREA, "TLS handshake only (ssl, device cert)", "s", tls,
               note="TCP connect + TLS handshake with client certificate, no MQTT"),
    ]  # fmt: skip
