"""The registrar's MQTT side: subscribe to ``P/+/renew``, answer on ``P/D/cert``.

paho's network thread only enqueues; one worker thread runs ``RegistrarCore`` and
publishes, so decisions (and the journal) are strictly sequential. The same thread
publishes the site's CRL bulletin (retained, ``P/_site/crl``) whenever ``[identity] crl``
changes, and cuts the revoked stations' sessions once the broker agent's receipt
(``P/_site/crl-installed``) names that CRL number (issue 17).
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from clinicam.common.errors import ConfigError
from clinicam.protocol import chain as trust
from clinicam.protocol import recipientann as ra
from clinicam.protocol import revocation as rv
from clinicam.protocol import trustann as ta
from clinicam.protocol.topics import REGISTRAR, Topics
from clinicam.provisioning import pki
from clinicam.relay.mqttservice import MqttService
from clinicam.relay.registrar.config import RegistrarConfig
from clinicam.relay.registrar.core import Journal, Policy, RegistrarCore
from clinicam.relay.registrar.kick import kick
from clinicam.relay.registrar.revocation import RevocationLog, current_bulletin

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


class Registrar(MqttService):
    """``start()``/``stop()`` around a connected MQTT client and the decision thread."""

    thread_name = "registrar"

    def __init__(self, config: RegistrarConfig, core: RegistrarCore) -> None:
        ident, b = config.identity, config.broker
        super().__init__(client_id=REGISTRAR, ca=ident.ca, cert=ident.cert, key=ident.key,
                         host=b.host, port=b.port, keepalive_s=b.keepalive_s)
        self.config, self.core = config, core
        self.topics = Topics(config.issuing.topic_prefix)
        self.connected = threading.Event()
        self._crl_stamp: int | None = None
        self._published = 0  # the CRL number last published
        self._pending: dict[int, list[str]] = {}  # CRL number -> ids to cut once installed
        self._cut: set[int] = set()
        self._recipient_stamp: int | None = None
        self._trust_stamp: int | None = None

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, rc: Any, props: Any) -> None:
        if rc.is_failure:
            log.warning("registrar: broker refused the connection (%s)", rc)
            return
        prefix = self.config.issuing.topic_prefix
        client.subscribe([(t, 1) for t in [*self.topics.registrar_subscriptions(), rv.installed_topic(prefix),
                                           rv.root_crl_topic(prefix)]])
        self._crl_stamp = None  # (re)publish the bulletin on every connection
        self._recipient_stamp = None
        self._trust_stamp = None
        self._jobs.put(("", b""))
        self.connected.set()
        log.info("registrar: connected")

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        prefix = self.config.issuing.topic_prefix
        if msg.topic in (rv.installed_topic(prefix), rv.root_crl_topic(prefix)) or not msg.retain:
            # a retained request is a replay, never a fresh one; a retained receipt is news
            self._jobs.put((msg.topic, bytes(msg.payload)))

    def _run(self) -> None:
        installed = rv.installed_topic(self.config.issuing.topic_prefix)
        root_crl = rv.root_crl_topic(self.config.issuing.topic_prefix)
        while True:
            try:
                job = self._jobs.get(timeout=self.config_poll_s)
            except queue.Empty:
                job = ("", b"")
            if job is None:
                return
            for publish in (self._publish_crl, self._publish_recipient, self._publish_trust):
                try:
                    publish()
                except Exception as exc:  # a missing file must not stop renewals
                    log.error("registrar: %s failed (%s: %s)", publish.__name__, type(exc).__name__, exc)
            try:
                if job[0] == installed:
                    self._installed(rv.parse_installed(job[1]))
                    continue
                if job[0] == root_crl:
                    self._adopt_root(job[1])
                    continue
                out = self.core.handle(*job) if job[0] else None
            except Exception:  # one bad request must not stop the registrar
                log.exception("registrar: a request could not be handled")
                continue
            if out is not None:
                self.client.publish(out[0], out[1], qos=1)

    config_poll_s = 2.0

    def _publish_crl(self) -> None:
        """Publish the bulletin (retained) when ``[identity] crl`` changed or on (re)connect."""
        if not self.connected.is_set():
            return
        path = Path(self.config.identity.crl)
        stamp = path.stat().st_mtime_ns
        if stamp == self._crl_stamp:
            return
        iss = self.config.issuing
        number, payload, ids = current_bulletin(crl_path=path, issuing_cert=self.core.issuing,
                                                issuing_key=self.core.key, log=RevocationLog(Path(iss.revocations)),
                                                now=pki.utcnow())
        self._crl_stamp = stamp
        if number < 1:
            return  # a CRL from before CRL numbers: nothing to announce until the next revocation
        self.client.publish(rv.crl_topic(iss.topic_prefix), payload, qos=1, retain=True)
        if number > self._published:
            log.info("registrar: published CRL %d (revoking %s)", number, ", ".join(ids) or "nobody new")
        self._published = max(self._published, number)
        if ids and number not in self._cut:
            self._pending[number] = ids

    def _publish_recipient(self) -> None:
        """Announce ``[issuing] recipient`` (retained, signed) when it changed or on (re)connect.

        The announcement's time is the file's modification time, so a registrar restart
        re-announces the same key with the same ``at`` (stations ignore it) and only a new
        file moves stations on."""
        path = self.config.issuing.recipient
        if not path or not self.connected.is_set():
            return
        st = Path(path).stat()
        if st.st_mtime_ns == self._recipient_stamp:
            return
        at = datetime.fromtimestamp(st.st_mtime, UTC)
        payload = ra.build_announcement(recipient_pem=Path(path).read_bytes(), at=at, issuing_key=self.core.key,
                                        issuing_cert=self.core.issuing)
        self.client.publish(ra.recipient_topic(self.config.issuing.topic_prefix), payload, qos=1, retain=True)
        self._recipient_stamp = st.st_mtime_ns
        log.info("registrar: announced the recipient key %s", path)

    def _adopt_root(self, payload: bytes) -> None:
        """A root CRL bulletin from the admin machine: merge it into ``[identity] crl``, so
        renewals refuse what the root revoked and our own bulletin carries the newer copy."""
        path, ca = Path(self.config.identity.crl), Path(self.config.identity.ca)
        store = trust.TrustStore(trust.load_certs(ca.read_bytes(), str(ca)), [self.core.issuing])
        try:
            bulletin = rv.parse_bulletin(payload, store)
            held = trust.load_crls(path.read_bytes(), str(path))
            merged = rv.successor(held, bulletin.crls, author=bulletin.signer)
        except rv.RevocationError as exc:
            log.warning("registrar: root CRL bulletin not taken: %s", exc)
            return
        if rv.crls_pem(merged) != rv.crls_pem(held):
            pki.write_public(path, rv.crls_pem(merged))
            log.info("registrar: took the root's CRL %d", bulletin.number)

    def _publish_trust(self) -> None:
        """Publish ``[issuing] trust`` (retained) as it is, when it changed or on (re)connect.

        The file is signed offline by a root (``provision rotate-ca``); the registrar only
        checks that it parses as a trust update before passing it on."""
        path = self.config.issuing.trust
        if not path or not self.connected.is_set():
            return
        st = Path(path).stat()
        if st.st_mtime_ns == self._trust_stamp:
            return
        payload = Path(path).read_bytes()
        roots = trust.load_certs(Path(self.config.identity.ca).read_bytes(), self.config.identity.ca)
        update = ta.parse_trust(payload, roots, pki.utcnow())
        self.client.publish(ta.trust_topic(self.config.issuing.topic_prefix), payload, qos=1, retain=True)
        self._trust_stamp = st.st_mtime_ns
        log.info("registrar: published trust update %d (%d root(s))", update.number, len(update.roots))

    def _installed(self, number: int) -> None:
        """The broker has loaded CRL ``number``: cut the sessions of the ids it revoked."""
        for n in sorted(k for k in self._pending if k <= number):
            for device in self._pending.pop(n):
                b, ident = self.config.broker, self.config.identity
                ok = kick(device, host=b.host, port=b.port, ca=Path(ident.ca), issuing_cert=self.core.issuing,
                          issuing_key=self.core.key)
                log.info("registrar: %s session of %s (CRL %d)", "cut the" if ok else "could not take over the",
                         device, n)
            self._cut.add(n)
