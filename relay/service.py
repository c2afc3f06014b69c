"""The relay on the wire: one MQTT 5 connection, one worker thread, RelayCore inside.

paho's network thread only copies each message onto a queue; one worker thread runs
``RelayCore`` (which may wait seconds on a PACS) and publishes its acks, so keepalives
never starve behind a slow record system. Every few seconds the worker also sweeps
stale incomplete captures. Subscriptions cover the whole prefix and ``RelayCore``
keeps only its partition's stations (DESIGN §5); ``shared_group`` switches to
``$share/<group>/…`` and is only correct behind a broker that keeps one publisher on
one worker (EMQX ``hash_clientid``/``sticky``), never with Mosquitto's round-robin.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from clinicam.common.errors import BrokerUnreachable
from clinicam.provisioning.tlsctx import client_context
from clinicam.relay.core import RelayCore
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode

log = logging.getLogger(__name__)


class Relay:
    """Connects ``core`` to the broker with the relay's own client certificate."""

    def __init__(self, *, core: RelayCore, host: str, port: int, ca: Path | str,
                 cert: Path | str, key: Path | str, client_id: str = "relay-1",
                 keepalive_s: int = 30, shared_group: str = "", sweep_s: float = 5.0,
                 reconnect_min_s: int = 1, reconnect_max_s: int = 30,
                 crl_feed: Callable[[bytes], None] | None = None) -> None:
        self.core, self.host, self.port = core, host, port
        # two-tier sites: the CRL bulletin (P/_site/crl) goes to crl_feed (issue 17)
        self.crl_feed, self._crl_topic = crl_feed, core.topics.site_crl()
        self._crl_mid: int | None = None
        self.keepalive_s, self.sweep_s = keepalive_s, sweep_s
        self.shared_group = shared_group
        self._inbox: queue.Queue[tuple[str, bytes] | None] = queue.Queue()
        self.connected = threading.Event()
        self._stopping = False
        self._worker: threading.Thread | None = None
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id,
                                  protocol=mqtt.MQTTv5)
        self.client.tls_set_context(client_context(Path(ca), Path(cert), Path(key)))
        self.client.reconnect_delay_set(reconnect_min_s, reconnect_max_s)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message
        self.client.on_subscribe = self._on_subscribe

    def subscriptions(self) -> list[str]:
        """The topic filters: the whole tree, or ``$share`` when explicitly configured."""
        return self.core.topics.relay_subscriptions(self.shared_group or None)

    def start(self, wait_s: float | None = 10.0) -> None:
        """Connect and start working; with ``wait_s``, fail if not connected by then."""
        self._worker = threading.Thread(target=self._work, name="relay-worker", daemon=True)
        self._worker.start()
        self.client.connect_async(self.host, self.port, keepalive=self.keepalive_s)
        self.client.loop_start()
        if wait_s is not None and not self.connected.wait(wait_s):
            self.stop()
            raise BrokerUnreachable(
                f"no connection to the broker {self.host}:{self.port} within {wait_s:.0f} s: "
                "check [broker] host/port, the relay's certificate and the broker's log")

    def stop(self, timeout: float = 10.0) -> None:
        """Finish the message in hand, then disconnect."""
        self._stopping = True
        self._inbox.put(None)
        if self._worker is not None:
            self._worker.join(timeout)
        self.client.disconnect()
        self.client.loop_stop()
        self.core.board.flush()

    # -- worker thread ---------------------------------------------------------------
    def _work(self) -> None:
        next_sweep = time.monotonic() + self.sweep_s
        while True:
            try:
                item = self._inbox.get(timeout=max(0.0, next_sweep - time.monotonic()))
            except queue.Empty:
                item = ("", b"")
            if item is None:
                return
            try:
                if item[0] == self._crl_topic and self.crl_feed is not None:
                    self.crl_feed(item[1])
                    continue
                acks = self.core.handle(*item) if item[0] else []
                if time.monotonic() >= next_sweep:
                    next_sweep = time.monotonic() + self.sweep_s
                    acks += self.core.sweep()
                for ack in acks:
                    self._publish_ack(ack.device, ack.payload())
            except Exception as exc:  # one bad message must never stop the relay
                log.error("relay: message handling failed (%s)", type(exc).__name__)

    def _publish_ack(self, device: str, payload: bytes) -> None:
        info = self.client.publish(self.core.topics.ack(device), payload, qos=1)
        if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            # the station re-sends on its ack timeout; the ledger re-acks it then
            log.warning("relay: ack to %s not sent now (paho rc %s)", device, info.rc)

    # -- paho callbacks (network thread) -------------------------------------------------
    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason_code: Any,
                    properties: Any) -> None:
        if reason_code.is_failure:
            log.error("relay: broker refused the connection (%s)", reason_code)
            return
        client.subscribe([(f, 1) for f in self.subscriptions()])
        if self.crl_feed is not None:
            self._crl_mid = client.subscribe(self._crl_topic, qos=1)[1]
        log.info("relay: connected to %s:%d", self.host, self.port)

    def _on_subscribe(self, client: mqtt.Client, userdata: Any, mid: int, reason_codes: Any,
                      properties: Any) -> None:
        refused = [rc for rc in reason_codes if rc.is_failure]
        if mid == self._crl_mid:
            if refused:
                log.warning("relay: the broker refused %s (%s): regenerate the ACL", self._crl_topic, refused[0])
            return
        if refused:
            log.error("relay: broker refused a subscription (%s): check the ACL", refused[0])
            return
        self.connected.set()  # subscribed: from now on nothing addressed to us is missed

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason_code: Any,
                       properties: Any) -> None:
        self.connected.clear()
        if self._stopping:
            log.info("relay: disconnected")
        else:
            log.warning("relay: disconnected (%s); reconnecting", reason_code)

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        self._inbox.put((msg.topic, bytes(msg.payload)))
