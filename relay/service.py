"""The relay on the wire: one MQTT 5 connection, one worker thread, RelayCore inside.

paho's network thread only copies each message onto a queue; one worker thread runs
``RelayCore`` (which may wait seconds on a PACS) and publishes its acks, so keepalives
never starve behind a slow record system. Every few seconds the worker also sweeps
stale incomplete captures. Subscriptions cover the whole prefix and ``RelayCore``
keeps only its partition's stations (DESIGN §5); ``shared_group`` switches to
``$share/<group>/…`` and is only correct behind a broker that keeps one publisher on
one worker (EMQX ``hash_clientid``/``sticky``), never with Mosquitto's round-robin.

Presence (DESIGN §5): the relay publishes a retained ``P/relay/<id>/status`` with a
will saying ``offline``, and reads everyone's. After connecting it first learns who
else is online (its own ``standby`` message coming back marks the end of the retained
ones), then serves its share only if no older claim exists (``relay.standby``);
otherwise it stands by, subscribed to presence only, and takes over when that claim
goes offline.

Two processes with the *same* identity knock each other off the broker (one client id,
one session), and the broker publishes the will (``lost``) of the one pushed off, so
a newcomer cannot tell a live twin from a dead predecessor. The pushed-off process
can: when it reconnects and finds its own presence topic saying ``lost`` for another
instance, a twin was connected with its identity until a moment ago. It says so in
one line, marks the topic ``yielded``, disconnects and waits 10 s, then 20 s, ... up
to 10 minutes between attempts while the twin serves, instead of both flapping every
second. (A twin that crashed meanwhile costs one extra wait.)

Retained capture parts and events are replays, not news: the relay subscribes to them
with Retain Handling 2 (the broker sends none at subscribe time) and ``RelayCore``
ignores any that still arrive flagged retained.

The queue between the two threads is a ``FairInbox`` (bounded, round-robin across
stations, status coalesced): one station's flood never starves another (DESIGN §5).
The network thread must also read as fast as a flooder publishes, or the broker's queue
for the relay overflows and drops everyone's messages: its client reads every waiting
packet per wake-up (``relay.netloop``) and statuses (and, without a persistent
session, events) come at QoS 0 (``_options``).
With ``session_expiry_s`` > 0 the session is persistent (``clean_start`` false): while
the relay is away the broker queues what stations publish — up to its own
``max_queued_messages``/``max_queued_bytes`` — so a wipe report sent by a station that
then stops still reaches the audit log when the relay returns. Off by default: Mosquitto
2.0.11 crashes on a reload once a persistent client that was away at an earlier reload
has come back.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from clinicam.common.errors import BrokerUnreachable
from clinicam.protocol.fields import utc_stamp
from clinicam.protocol.presence import presence_filter, presence_topic, relay_of
from clinicam.provisioning.tlsctx import client_context
from clinicam.relay.core import RelayCore, top_counts
from clinicam.relay.inbox import FairInbox
from clinicam.relay.netloop import DrainingClient, favour_network_thread
from clinicam.relay.ratelimit import Buckets
from clinicam.relay.standby import Arbiter
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

log = logging.getLogger(__name__)

SESSION_TAKEN_OVER = 0x8E  # sent by newer brokers to the client that was pushed off


class Relay:
    """Connects ``core`` to the broker with the relay's own client certificate."""

    def __init__(self, *, core: RelayCore, host: str, port: int, ca: Path | str,
                 cert: Path | str, key: Path | str, client_id: str = "relay-1",
                 keepalive_s: int = 30, shared_group: str = "", sweep_s: float = 5.0,
                 reconnect_min_s: int = 1, reconnect_max_s: int = 30, metrics_listen: str = "",
                 inventory: Callable[[], Iterable[str]] = list, duplicate_backoff_s: float = 10.0,
                 duplicate_backoff_max_s: float = 600.0, wall: Callable[[], float] = time.time,
                 instance: str | None = None, session_expiry_s: int = 0,
                 inbox: FairInbox | None = None, crl_feed: Callable[[bytes], None] | None = None) -> None:
        self.core, self.host, self.port = core, host, port
        # the CRL bulletins (P/_site/crl, P/_site/crl-root) go to crl_feed (issue 17)
        self.crl_feed, self._crl_topics = crl_feed, core.topics.site_crls()
        self._crl_mid: int | None = None
        self.keepalive_s, self.sweep_s = keepalive_s, sweep_s
        self.shared_group = shared_group
        self.relay_id = client_id
        self.session_expiry_s = session_expiry_s
        self.inbox = inbox if inbox is not None else FairInbox(core.topics.prefix)
        self._ack_budget = Buckets(rate=100.0, burst=1000.0)  # acks per station
        self.acks_withheld: dict[str, int] = {}
        self.connected = threading.Event()  # connected and settled: serving, or standing by
        self.active = False  # serving its share (subscribed to the stations' topics)
        self.duplicates = 0  # times in a row this process found its identity in use elsewhere
        self._reconnect = (reconnect_min_s, reconnect_max_s)
        self._duplicate_backoff = (duplicate_backoff_s, duplicate_backoff_max_s)
        self._duplicate_seen = False  # while settling: another instance wrote our presence topic
        self._yield_until: float | None = None  # yielding to a duplicate until then
        self._sessions = 0  # connections made by this process
        self._started = utc_stamp(wall())
        self._wall = wall
        self._settled = False
        self._subs: dict[int, str] = {}  # subscribe mid -> "presence" | "stations"
        self._stopping = False
        self._worker: threading.Thread | None = None
        self.arbiter = Arbiter(client_id, instance or os.urandom(16).hex(), core.partition,
                               exclusive=not shared_group)
        self.presence_topic = presence_topic(core.topics.prefix, client_id)
        self.client = DrainingClient(CallbackAPIVersion.VERSION2, client_id=client_id,
                                     protocol=mqtt.MQTTv5)
        self.client.tls_set_context(client_context(Path(ca), Path(cert), Path(key)))
        self.client.reconnect_delay_set(reconnect_min_s, reconnect_max_s)
        self.client.will_set(self.presence_topic, self.arbiter.presence("lost").payload(), qos=1, retain=True)
        self.client.on_unsubscribe = self._on_unsubscribe
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message
        self.client.on_subscribe = self._on_subscribe
        self.metrics_listen = metrics_listen
        self.metrics_address: tuple[str, int] | None = None
        self._watch(inventory)

    def _watch(self, inventory: Callable[[], Iterable[str]]) -> None:
        """Expose what this relay knows to the metrics registry (read at scrape time)."""
        m, core = self.core.metrics, self.core
        m.stations(core.board, inventory)
        m.gauges(relay_reassembly_bytes=lambda: core.reassembler.buffered_bytes,
                 relay_inbox_depth=lambda: len(self.inbox),
                 relay_audit_log_healthy=lambda: float(bool(getattr(core.audit, "healthy", True))),
                 relay_broker_connected=lambda: float(self.connected.is_set()),
                 relay_active=lambda: float(self.active))

    def subscriptions(self) -> list[str]:
        """The topic filters: the whole tree, or ``$share`` when explicitly configured."""
        return self.core.topics.relay_subscriptions(self.shared_group or None)

    def _options(self, topic_filter: str) -> SubscribeOptions:
        """How the relay subscribes to each kind of station message.

        Captures: QoS 1 (a part is never lost between broker and relay), without the
        broker's retained replays (MQTT 5 Retain Handling 2). Statuses: with them (the
        latest status is the point), at QoS 0 — only the latest counts, so a lost one
        is replaced by the next or replayed at the next subscription. Events: QoS 0
        without a persistent session — the station keeps each event until the relay
        acknowledges its ``event_id`` and re-sends it, so at-least-once between broker
        and relay adds nothing but a PUBACK per message — and QoS 1 with one
        (``session_expiry_s`` > 0: the broker queues only QoS 1 for an absent relay).
        At QoS 0 the broker neither holds those messages in the relay's in-flight
        window nor waits for their PUBACKs, so a status or event flood does not queue
        up ahead of another station's capture parts.
        """
        if topic_filter.endswith("/status"):
            return SubscribeOptions(qos=0, retainHandling=0)
        if topic_filter.endswith("/event") and not self.session_expiry_s:
            return SubscribeOptions(qos=0, retainHandling=2)
        return SubscribeOptions(qos=1, retainHandling=2)

    def start(self, wait_s: float | None = 10.0) -> None:
        """Connect and start working; with ``wait_s``, fail if not connected by then."""
        if self.metrics_listen:
            self.metrics_address = self.core.metrics.serve(self.metrics_listen)
        favour_network_thread()
        self._worker = threading.Thread(target=self._work, name="relay-worker", daemon=True)
        self._worker.start()
        self._connect()
        self.client.loop_start()
        if wait_s is not None and not self.connected.wait(wait_s):
            self.stop()
            raise BrokerUnreachable(
                f"no connection to the broker {self.host}:{self.port} within {wait_s:.0f} s: "
                "check [broker] host/port, the relay's certificate and the broker's log")

    def _connect(self) -> None:
        """Connect (asynchronously); a persistent session only with ``session_expiry_s``."""
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = self.session_expiry_s
        self.client.connect_async(self.host, self.port, keepalive=self.keepalive_s,
                                  clean_start=self.session_expiry_s == 0, properties=props)

    def stop(self, timeout: float = 10.0) -> None:
        """Finish the message in hand, say ``offline``, then disconnect."""
        self._stopping = True
        self.inbox.close()
        if self._worker is not None:
            self._worker.join(timeout)
        if self.client.is_connected():
            info = self._publish_presence("offline")
            if info is not None:
                info.wait_for_publish(min(timeout, 2.0))
        self.client.disconnect()
        self.client.loop_stop()
        self.core.metrics.close()
        self._heartbeat(sync=True)

    # -- worker thread ---------------------------------------------------------------
    def _work(self) -> None:
        next_sweep = time.monotonic() + self.sweep_s
        self._heartbeat()
        while not self._stopping:
            wake = min(next_sweep, self._yield_until or next_sweep)
            msg = self.inbox.get(timeout=max(0.0, wake - time.monotonic()))
            try:
                self._reconnect_after_yield()
                if msg is not None and msg.topic in self._crl_topics and self.crl_feed is not None:
                    self.crl_feed(msg.payload)
                    continue
                rid = relay_of(self.core.topics.prefix, msg.topic) if msg else None
                if msg is not None and rid is not None:
                    self._presence(rid, msg.payload)
                    continue
                acks = self.core.handle(msg.topic, msg.payload, msg.retained) if msg else []
                if time.monotonic() >= next_sweep:
                    next_sweep = time.monotonic() + self.sweep_s
                    self._report_inbox()
                    acks += self.core.sweep()
                    self._heartbeat()
                for ack in acks:
                    self._publish_ack(ack.device, ack.payload())
                self.core.board.flush_due()
            except Exception as exc:  # one bad message must never stop the relay
                log.error("relay: message handling failed (%s)", type(exc).__name__)

    def _heartbeat(self, sync: bool = False) -> None:
        """Rewrite the status file: its age tells ``clinicam relay status`` we are alive."""
        self.core.board.writer = self._writer
        self.core.board.flush(sync=sync)

    def _writer(self) -> dict[str, Any]:
        return {"id": self.relay_id, "pid": os.getpid(), "instance": self.arbiter.instance,
                "running": not self._stopping, "connected": self.connected.is_set(), "active": self.active,
                "heartbeat_s": self.sweep_s, "started": self._started}

    # -- presence (worker thread) -----------------------------------------------------
    def _presence(self, rid: str, payload: bytes) -> None:
        arb = self.arbiter
        arb.board.update(rid, payload)
        mine = arb.board.relays.get(rid)
        if not self._settled:
            if (rid == self.relay_id and mine is not None and mine.instance != arb.instance
                    and mine.state == "lost" and self._sessions > 1):
                self._duplicate_seen = True  # (on a first connection: a predecessor's will)
            if rid != self.relay_id or mine is None or mine.instance != arb.instance:
                return  # a retained message; ours, coming back, says they are all in
            self._settled = True
            if self._duplicate_seen:
                self._yield_to_duplicate()
                return
        if self._yield_until is None:
            self._arbitrate()

    def _yield_to_duplicate(self) -> None:
        """Another process uses our identity: leave it the session and come back later."""
        base, ceiling = self._duplicate_backoff
        self.duplicates += 1
        wait = min(ceiling, base * 2 ** (self.duplicates - 1))
        self._yield_until = time.monotonic() + wait
        log.error("relay: identity %s is in use by another relay process (it wrote this relay's presence while "
                  "this one was away); disconnecting, next attempt in %.0f s; give every relay process its own "
                  "certificate (README 'Relay host')", self.relay_id, wait)
        info = self._publish_presence("yielded")  # not "lost": the twin must not yield in turn
        with contextlib.suppress(RuntimeError, ValueError):
            if info is not None:
                info.wait_for_publish(2.0)  # else paho re-sends it on our next connection
        self.client.disconnect()
        self.connected.set()

    def _reconnect_after_yield(self) -> None:
        """The wait is over: connect again (the loop ended with our own disconnect)."""
        if self._yield_until is None or time.monotonic() < self._yield_until or self._stopping:
            return
        self._yield_until = None
        self.client.loop_stop()
        self._connect()
        self.client.loop_start()

    def _arbitrate(self) -> None:
        arb = self.arbiter
        serve = arb.should_serve(utc_stamp(self._wall()))
        if serve and not self.active:
            arb.since = utc_stamp(self._wall())
            self.active, self.duplicates = True, 0
            self._subscribe("stations", [(f, self._options(f)) for f in self.subscriptions()])
            self._publish_presence("online")
            p = arb.partition
            log.info("relay: %s serves worker %d of %d (shares %s)", self.relay_id, p.worker,
                     p.workers, sorted(p.shares))
        elif not serve and (self.active or not self.connected.is_set()):
            rivals = ", ".join(sorted(arb.rivals()))
            if self.active:
                self.active, arb.since = False, None
                self.client.unsubscribe(self.subscriptions())
            self._publish_presence("standby")
            log.warning("relay: worker %d is served by %s; %s stands by and takes over when it goes offline",
                        arb.partition.worker, rivals, self.relay_id)
            self.connected.set()

    def _subscribe(self, what: str, filters: list[tuple[str, int]] | list[tuple[str, SubscribeOptions]]) -> None:
        mid = self.client.subscribe(filters)[1]
        if mid is not None:
            self._subs[mid] = what

    def _publish_presence(self, state: str) -> mqtt.MQTTMessageInfo | None:
        info = self.client.publish(self.presence_topic, self.arbiter.presence(state).payload(),
                                   qos=1, retain=True)
        return info if info.rc == MQTTErrorCode.MQTT_ERR_SUCCESS else None

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
        self._settled, self.active, self.arbiter.since = False, False, None
        self._duplicate_seen, self._yield_until = False, None
        self._sessions += 1
        self.arbiter.board.relays.clear()
        self._subscribe("presence", [(presence_filter(self.core.topics.prefix), 1)])
        if self.crl_feed is not None:  # active or standing by: every relay follows the CRL
            self._crl_mid = client.subscribe([(t, 1) for t in self._crl_topics])[1]
        log.info("relay: connected to %s:%d as %s", self.host, self.port, self.relay_id)

    def _on_subscribe(self, client: mqtt.Client, userdata: Any, mid: int, reason_codes: Any,
                      properties: Any) -> None:
        what = self._subs.pop(mid, "stations")
        refused = [rc for rc in reason_codes if rc.is_failure]
        if mid == self._crl_mid:
            if refused:
                log.warning("relay: the broker refused %s (%s): regenerate the ACL", " or ".join(self._crl_topics),
                            refused[0])
            return
        if refused:
            log.error("relay: broker refused a subscription to %s topics (%s): regenerate the broker's "
                      "ACL ('clinicam provision acl') and reload it", what, refused[0])
            if what == "presence":  # an ACL from before presence: serve, as before
                self._settled = True
                self.inbox.put(self.presence_topic, b"")
            return
        if what == "presence":
            # ours comes back after every retained presence: the end of the list
            self._publish_presence("standby")
            return
        self.client.reconnect_delay_set(*self._reconnect)
        self.connected.set()  # subscribed: from now on nothing addressed to us is missed

    def _on_unsubscribe(self, client: mqtt.Client, userdata: Any, mid: int, reason_codes: Any,
                        properties: Any) -> None:
        pass

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason_code: Any,
                       properties: Any) -> None:
        self.connected.clear()
        self.active = False
        if self._stopping or self._yield_until is not None:
            log.info("relay: disconnected")
        elif getattr(reason_code, "value", None) == SESSION_TAKEN_OVER:
            log.warning("relay: another process connected with this relay's identity %s; reconnecting",
                        self.relay_id)
        else:
            log.warning("relay: disconnected (%s); reconnecting", reason_code)

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        self.inbox.put(msg.topic, bytes(msg.payload), bool(msg.retain))
