"""The relay on the wire: one MQTT 5 connection, one worker thread, RelayCore inside.

paho's network thread only copies each message onto a queue; one worker thread runs
``RelayCore`` (which may wait seconds on a PACS) and publishes its acks, so keepalives
never starve behind a slow record system. Every few seconds the worker also sweeps
stale incomplete captures. Subscriptions cover the whole prefix and ``RelayCore``
keeps only its partition's stations (DESIGN §5); ``shared_group`` switches to
``$share/<group>/…`` and is only correct behind a broker that keeps one publisher on
one worker (EMQX ``hash_clientid``/``sticky``), never with Mosquitto's round-robin.

Retained capture parts and events are replays, not news: the relay subscribes to them
with Retain Handling 2 (the broker sends none at subscribe time) and ``RelayCore``
ignores any that still arrive flagged retained.

The queue between the two threads is a ``FairInbox`` (bounded, round-robin across
stations, status coalesced): one station's flood never starves another (DESIGN §5).
With ``session_expiry_s`` > 0 the session is persistent (``clean_start`` false): while
the relay is away the broker queues what stations publish — up to its own
``max_queued_messages``/``max_queued_bytes`` — so a wipe report sent by a station that
then stops still reaches the audit log when the relay returns. Off by default: Mosquitto
2.0.11 crashes on a reload once a persistent client that was away at an earlier reload
has come back.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from clinicam.common.errors import BrokerUnreachable
from clinicam.provisioning.tlsctx import client_context
from clinicam.relay.core import RelayCore, top_counts
from clinicam.relay.inbox import FairInbox
from clinicam.relay.ratelimit import Buckets
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

log = logging.getLogger(__name__)


class Relay:
    """Connects ``core`` to the broker with the relay's own client certificate."""

    def __init__(self, *, core: RelayCore, host: str, port: int, ca: Path | str,
                 cert: Path | str, key: Path | str, client_id: str = "relay-1",
                 keepalive_s: int = 30, shared_group: str = "", sweep_s: float = 5.0,
                 reconnect_min_s: int = 1, reconnect_max_s: int = 30,
                 session_expiry_s: int = 0, inbox: FairInbox | None = None) -> None:
        self.core, self.host, self.port = core, host, port
        self.keepalive_s, self.sweep_s = keepalive_s, sweep_s
        self.shared_group = shared_group
        self.session_expiry_s = session_expiry_s
        self.inbox = inbox if inbox is not None else FairInbox(core.topics.prefix)
        self._ack_budget = Buckets(rate=100.0, burst=1000.0)  # acks per station
        self.acks_withheld: dict[str, int] = {}
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

    @staticmethod
    def _options(topic_filter: str) -> SubscribeOptions:
        """QoS 1; captures and events without the broker's retained replays (MQTT 5
        Retain Handling 2), statuses with them (the latest status is the point)."""
        replay = topic_filter.endswith("/status")
        return SubscribeOptions(qos=1, retainHandling=0 if replay else 2)

    def start(self, wait_s: float | None = 10.0) -> None:
        """Connect and start working; with ``wait_s``, fail if not connected by then."""
        self._worker = threading.Thread(target=self._work, name="relay-worker", daemon=True)
        self._worker.start()
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = self.session_expiry_s
        self.client.connect_async(self.host, self.port, keepalive=self.keepalive_s,
                                  clean_start=self.session_expiry_s == 0, properties=props)
        self.client.loop_start()
        if wait_s is not None and not self.connected.wait(wait_s):
            self.stop()
            raise BrokerUnreachable(
                f"no connection to the broker {self.host}:{self.port} within {wait_s:.0f} s: "
                "check [broker] host/port, the relay's certificate and the broker's log")

    def stop(self, timeout: float = 10.0) -> None:
        """Finish the message in hand, then disconnect."""
        self._stopping = True
        self.inbox.close()
        if self._worker is not None:
            self._worker.join(timeout)
        self.client.disconnect()
        self.client.loop_stop()
        self.core.board.flush()

    # -- worker thread ---------------------------------------------------------------
    def _work(self) -> None:
        next_sweep = time.monotonic() + self.sweep_s
        while not self._stopping:
            msg = self.inbox.get(timeout=max(0.0, next_sweep - time.monotonic()))
            try:
                acks = self.core.handle(msg.topic, msg.payload, msg.retained) if msg else []
                if time.monotonic() >= next_sweep:
                    next_sweep = time.monotonic() + self.sweep_s
                    self._report_inbox()
                    acks += self.core.sweep()
                for ack in acks:
                    self._publish_ack(ack.device, ack.payload())
                self.core.board.flush_due()
            except Exception as exc:  # one bad message must never stop the relay
                log.error("relay: message handling failed (%s)", type(exc).__name__)

    def _report_inbox(self) -> None:
        """One line per sweep for what the inbox dropped, and the counters."""
        for device, n in self.inbox.take_dropped_events().items():
            self.core.audit.suppressed(device, n)
            self.core.board.count("events-rate-limited", n)
        withheld, self.acks_withheld = self.acks_withheld, {}
        if withheld:
            self.core.board.count("acks-withheld", sum(withheld.values()))
            log.warning("relay: withheld %d ack(s) over the per-station rate; most to %s",
                        sum(withheld.values()), top_counts(withheld))
        dropped = self.inbox.take_dropped()
        total = sum(dropped.values())
        self.core.board.count("inbox-dropped", total)
        self.core.board.health("inbox", {"ok": True, "bytes": self.inbox.nbytes,
                                         "peak_bytes": self.inbox.peak_bytes,
                                         "limit_bytes": self.inbox.total_bytes})
        if total:
            log.warning("relay: inbox full for %d station(s): dropped %d message(s), most from "
                        "%s (they re-send)", len(dropped), total,
                        top_counts(dropped))

    def _publish_ack(self, device: str, payload: bytes) -> None:
        if not self._ack_budget.take(device):
            # paho queues what the broker has not taken in RAM: a station that makes the
            # relay answer junk in a loop must not grow it. Withheld acks are re-earned:
            # the station re-sends on its ack timeout and the ledger answers the same.
            self.acks_withheld[device] = self.acks_withheld.get(device, 0) + 1
            return
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
        client.subscribe([(f, self._options(f)) for f in self.subscriptions()])
        log.info("relay: connected to %s:%d", self.host, self.port)

    def _on_subscribe(self, client: mqtt.Client, userdata: Any, mid: int, reason_codes: Any,
                      properties: Any) -> None:
        refused = [rc for rc in reason_codes if rc.is_failure]
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
        self.inbox.put(msg.topic, bytes(msg.payload), bool(msg.retain))
