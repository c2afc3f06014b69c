"""The registrar's MQTT side: subscribe to ``P/+/renew``, answer on ``P/D/cert``.

paho's network thread only enqueues; one worker thread runs ``RegistrarCore`` and
publishes, so decisions (and the journal) are strictly sequential.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from clinicam.common.errors import ConfigError
from clinicam.protocol import chain as trust
from clinicam.protocol.topics import REGISTRAR, Topics
from clinicam.provisioning import pki
from clinicam.provisioning.tlsctx import client_context
from clinicam.relay.registrar.config import RegistrarConfig
from clinicam.relay.registrar.core import Journal, Policy, RegistrarCore
from paho.mqtt.enums import CallbackAPIVersion

log = logging.getLogger(__name__)


class FileTrust:
    """The site's trust as files: re-read when ``crl.pem`` changes (a revocation)."""

    def __init__(self, ca: Path, issuing: Path, crl: Path) -> None:
        self.ca, self.issuing, self.crl = ca, issuing, crl
        self._stamp: float | None = None
        self._store: trust.TrustStore | None = None

    def __call__(self) -> trust.TrustStore:
        try:
            stamp = self.crl.stat().st_mtime_ns
        except OSError as exc:
            raise ConfigError(f"[identity] crl: {self.crl} cannot be read: copy the site's crl.pem") from exc
        if self._store is None or stamp != self._stamp:
            roots = trust.load_certs(self.ca.read_bytes(), str(self.ca))
            inter = trust.load_certs(self.issuing.read_bytes(), str(self.issuing))
            crls = trust.load_crls(self.crl.read_bytes(), str(self.crl))
            self._store, self._stamp = trust.TrustStore(roots, inter, crls), stamp
        return self._store


def build_core(config: RegistrarConfig, now: Callable[[], Any] | None = None) -> RegistrarCore:
    iss = config.issuing
    policy = Policy(days=iss.days, min_interval=timedelta(seconds=iss.min_interval_s), max_per_day=iss.max_per_day)
    key = pki.load_key(Path(iss.key), "copy the site's registrar/ folder to this host")
    cert = pki.load_cert(Path(iss.cert), "copy the site's registrar/ folder to this host")
    files = FileTrust(Path(config.identity.ca), Path(iss.cert), Path(config.identity.crl))
    files()  # fail at start, not at the first request
    return RegistrarCore(issuing_key=key, issuing_cert=cert, trust_store=files, journal=Journal(Path(iss.journal)),
                         policy=policy, topic_prefix=iss.topic_prefix, utc=now)


class Registrar:
    """``start()``/``stop()`` around a connected MQTT client and the decision thread."""

    def __init__(self, config: RegistrarConfig, core: RegistrarCore) -> None:
        self.config, self.core = config, core
        self.topics = Topics(config.issuing.topic_prefix)
        self._jobs: queue.Queue[tuple[str, bytes] | None] = queue.Queue()
        ident = config.identity
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=REGISTRAR, protocol=mqtt.MQTTv5)
        self.client.tls_set_context(client_context(Path(ident.ca), Path(ident.cert), Path(ident.key)))
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self._thread: threading.Thread | None = None
        self.connected = threading.Event()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="registrar", daemon=True)
        self._thread.start()
        b = self.config.broker
        self.client.connect_async(b.host, b.port, keepalive=b.keepalive_s)
        self.client.loop_start()

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
        self._jobs.put(None)
        if self._thread is not None:
            self._thread.join(5)

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, rc: Any, props: Any) -> None:
        if rc.is_failure:
            log.warning("registrar: broker refused the connection (%s)", rc)
            return
        client.subscribe([(t, 1) for t in self.topics.registrar_subscriptions()])
        self.connected.set()
        log.info("registrar: connected")

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        if not msg.retain:  # a retained request is a replay, never a fresh one
            self._jobs.put((msg.topic, bytes(msg.payload)))

    def _run(self) -> None:
        while (job := self._jobs.get()) is not None:
            try:
                out = self.core.handle(*job)
            except Exception:  # one bad request must not stop the registrar
                log.exception("registrar: a request could not be handled")
                continue
            if out is not None:
                self.client.publish(out[0], out[1], qos=1)
