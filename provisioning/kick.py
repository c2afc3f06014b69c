"""Cut a revoked identity's open connection on Mosquitto 2.0 (issue 17, docs/interfaces.md).

Mosquitto re-reads its CRL on SIGHUP for *new* connections but keeps open ones, and its
dynamic-security plugin's kick would make dynsec the authority for every client. What
2.0 does offer: ``use_username_as_clientid true`` — a new connection with CN ``D`` closes
``D``'s open one (session takeover). So, once the broker has reloaded the CRL and the
ACL (which then grants ``D`` nothing), the registrar (or, for a revocation by the root,
the admin machine: ``provision publish-crl``) connects once as ``D`` with a certificate
from its CA valid for a few minutes and *without* the station policy (the relay never
accepts it as a station), then disconnects. The revoked identity's reconnect fails the
CRL check in the handshake. Used by the registrar (``relay.registrar``) and the admin
machine, hence here, below both.

The short-lived key and certificate exist only in a private temporary directory for the
few seconds of the connection (Python's ``ssl`` loads identities from files).
"""

from __future__ import annotations

import datetime as dt
import tempfile
import threading
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from clinicam.provisioning import pki
from clinicam.provisioning.tlsctx import client_context
from cryptography import x509
from paho.mqtt.enums import CallbackAPIVersion

KICK_MINUTES = 5


def kick(device: str, *, host: str, port: int, ca: Path, issuing_cert: x509.Certificate,
         issuing_key: pki.PrivateKey, now: dt.datetime | None = None, timeout_s: float = 10.0) -> bool:
    """Take over ``device``'s MQTT session and leave; ``True`` when the broker let us in.

    ``issuing_cert``/``issuing_key``: the CA that signs the short-lived certificate (the
    issuing CA at the registrar; the root for a service identity such as an operator)."""
    now = now or pki.utcnow()
    key = pki.new_key()
    # No station policy: this certificate can never file a photo, and lives minutes.
    cert = pki.issue(issuing_key, issuing_cert, key.public_key(), pki.check_id(device, allow_reserved=True),
                     now=now, lifetime=dt.timedelta(minutes=KICK_MINUTES))
    with tempfile.TemporaryDirectory(prefix="clinicam-kick-") as tmp:
        cert_path, key_path = Path(tmp) / "kick.pem", Path(tmp) / "kick.key"
        pki.write_private(key_path, pki.key_pem(key))
        chain = b"" if issuing_cert.issuer == issuing_cert.subject else pki.cert_pem(issuing_cert)
        pki.write_public(cert_path, pki.cert_pem(cert) + chain)
        ctx = client_context(ca, cert_path, key_path)
    done, result = threading.Event(), {"ok": False}

    def on_connect(client: mqtt.Client, userdata: Any, flags: Any, rc: Any, props: Any) -> None:
        result["ok"] = not rc.is_failure
        done.set()

    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=device, protocol=mqtt.MQTTv5)
    client.tls_set_context(ctx)
    client.on_connect = on_connect
    client.on_connect_fail = lambda *_a: done.set()
    client.on_disconnect = lambda *_a: done.set()
    try:
        client.connect(host, port, keepalive=10)
    except OSError:
        return False
    client.loop_start()
    done.wait(timeout_s)
    client.disconnect()
    client.loop_stop()
    return result["ok"]

