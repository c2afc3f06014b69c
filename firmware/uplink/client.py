"""The station's MQTT 5 uplink: mutual TLS to the broker, captures out, acks back in.

Two threads, neither of them the workflow's: paho's network loop only *posts* what it
receives onto an internal queue (the one exception is the remote ``wipe``, which runs
the wipe path at once, DESIGN §3.4), and the delivery thread owns the
``DeliveryEngine`` and does all publishing. The station hears about outcomes through
``post``: the workflow's own events (``clinicam.firmware.workflow.events``, the
``UplinkEvent`` part of ``Event``), put straight onto the station's queue. Audit
events stay in an ``EventOutbox`` until the relay acknowledges them
(``protocol.event_acks``) and are re-sent on reconnect, when a relay returns and every
``event_resend_s`` (DESIGN §5 "Audit events are delivered"); with an ``EventStore`` the
outbox is written through to the persistent partition and survives a restart.

Transport is never optional: TLS 1.2 or newer, the site CA as the only trust anchor,
the broker's host name verified, the device certificate always presented, MQTT 5
only (only v5 reports a denied publish, as a PUBACK reason code).

Relay presence (DESIGN §5): the uplink also reads every relay's retained presence.
A short while after connecting (``presence_settle_s``, for the retained messages to
arrive) it knows whether a relay serves this station; with none, it starts no new
capture, shows ``offline`` and says ``"relay": "offline"`` in its status; when one
comes back, every pending capture is re-sent at once instead of after its ack
timeout. A broker whose ACL predates presence refuses the subscription: then the
uplink behaves as before (it assumes a relay) and says once how to fix the ACL.
"""

from __future__ import annotations

import json
import logging
import queue
import random
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import paho.mqtt.client as mqtt
from clinicam.common.clock import Clock, SystemClock
from clinicam.common.errors import ClinicamError
from clinicam.firmware.uplink.certwatch import CertificateWatch
from clinicam.firmware.uplink.delivery import DeliveryEngine, VaultLike
from clinicam.firmware.uplink.eventstore import EventStore
from clinicam.firmware.uplink.outbox import EventOutbox
from clinicam.firmware.uplink.renewal import RenewalAgent
from clinicam.firmware.uplink.trust import trust_status
from clinicam.firmware.workflow.events import (
    CaptureRejected,
    CapturesExpired,
    CaptureStored,
    CommandIgnored,
    CommandReceived,
    FaultReported,
    RelayPresenceChanged,
    UplinkConnected,
    UplinkEvent,
    UplinkLost,
)
from clinicam.protocol.commands import Command, CommandGate, CommandRefused, UpdateOrder
from clinicam.protocol.event_acks import parse_event_ack
from clinicam.protocol.events import AuditEvent
from clinicam.protocol.fields import utc_stamp
from clinicam.protocol.manifest import sign_event
from clinicam.protocol.presence import PresenceBoard, presence_filter, relay_of
from clinicam.protocol.status import WILL, StationStatus
from clinicam.protocol.topics import DEFAULT_PREFIX, Topics
from clinicam.provisioning.identity import DeviceIdentity
from clinicam.provisioning.tlsctx import client_context
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

log = logging.getLogger(__name__)

# what to do about a refusal, by a word of selftest's explanation of the broker's TLS alert
_REMEDIES = {
    "expired": "renew this station's certificate ('clinicam provision renew' on the site, then "
               "'clinicam provision install')",
    "revoked": "the site revoked this station: provision a new identity (device-key, sign, install)",
    "CA": "install the certificate this site signed for this station ('clinicam station selftest')",
    "not authorised": "check the broker's ACL for this station's id",
}


class Uplink:
    """Delivers the vault's sealed captures and keeps the station visible to the relay.

    ``identity`` is the station's ``DeviceIdentity``; ``wipe`` is the
    one wipe path (``clinicam.firmware.capture.wipe``), called for a live remote ``wipe``.
    """

    def __init__(self, *, identity: DeviceIdentity, vault: VaultLike, post: Callable[[UplinkEvent], None],
                 wipe: Callable[[], Any] | None = None, host: str | None = None,
                 port: int | None = None, topic_prefix: str = DEFAULT_PREFIX,
                 ack_timeout_s: float = 60.0, max_inflight: int = 8, keepalive_s: int = 30,
                 reconnect_min_s: float = 1.0, reconnect_max_s: float = 60.0,
                 retry_min_s: float = 2.0, retry_max_s: float = 300.0,
                 on_update: Callable[[str, UpdateOrder], str | None] | None = None,
                 boot_id: str = "0" * 32, firmware_version: str = "0",
                 clock_synced: Callable[[], bool] = lambda: True,
                 clock: Clock | None = None,
                 rng: random.Random | None = None, renewal: RenewalAgent | None = None,
                 on_renewed: Callable[[Any], None] | None = None, presence_settle_s: float = 2.0,
                 event_resend_s: float = 30.0,
                 on_recipient: Callable[[bytes], None] | None = None,
                 on_trust: Callable[[bytes], None] | None = None,
                 event_store: EventStore | None = None, max_events: int = 256) -> None:
        self.identity, self.vault, self._post_event, self._wipe = identity, vault, post, wipe
        # A live "update" command: the station hands it to root; None or a refusal reason.
        self._on_update = on_update
        # Recipient-key rotation (issue 17): the site's announcement, retained on P/_site/recipient.
        self._on_recipient, self._recipient_topic = on_recipient, f"{topic_prefix}/_site/recipient"
        # CA rotation (issue 17): the site's trust update, retained on P/_site/trust.
        self._on_trust, self._trust_topic = on_trust, Topics(topic_prefix).site_trust()
        # Certificate renewal over MQTT (issue 17): the agent decides, the uplink connects.
        self.renewal, self._on_renewed = renewal, on_renewed
        self._installing = False  # a reconnect with next.pem/next.key is under way
        self._renew_mid: int | None = None  # the request's PUBACK says whether the ACL allows it
        self.device: str = identity.device_id
        self.host = host or identity.broker_host
        self.port = port or identity.broker_port
        self.topics = Topics(topic_prefix)
        self.prefix = topic_prefix
        self.relays = PresenceBoard()
        self.relay_seen: bool | None = None  # None: not known yet (or the ACL hides presence)
        self.presence_settle_s = presence_settle_s
        self._presence_due: float | None = None
        self._presence_readable = True
        self._connack = False  # a CONNACK arrived on the current connection
        self._explained = ""  # the refusal last explained in the log
        self._probing = threading.Lock()
        self._presence_mid: int | None = None
        self.keepalive_s = keepalive_s
        self.boot_id, self.firmware_version, self._clock_synced = boot_id, firmware_version, clock_synced
        time_source = clock or SystemClock()
        self._clock, self._wall = time_source.monotonic, time_source.wall
        self._started = self._clock()
        self.expire_every_s = 30.0
        self._last_expiry = self._started
        self._jobs: queue.Queue[Callable[[], None] | None] = queue.Queue()
        self._gate = CommandGate()
        self.outbox = EventOutbox(resend_s=event_resend_s, max_events=max_events, clock=self._clock,
                                  rng=rng, store=event_store)
        given_up = self.outbox.reported()
        if given_up:  # an earlier run's outbox overflowed: the audit log hears how much
            self.outbox.keep(self._event("events-dropped", count=given_up).as_dict())
        self.engine = DeliveryEngine(
            vault=vault, device=self.device, publish=self._publish, emit=self._emit,
            topic_prefix=topic_prefix, max_inflight=max_inflight, ack_timeout_s=ack_timeout_s,
            retry_min_s=retry_min_s, retry_max_s=retry_max_s, clock=self._clock, rng=rng)
        self.client = self._make_client(reconnect_min_s, reconnect_max_s)
        self._thread: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------------------
    def _make_client(self, reconnect_min_s: float, reconnect_max_s: float) -> mqtt.Client:
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=self.device,
                             protocol=mqtt.MQTTv5)
        ident = self.identity
        # Kept: a renewal loads the new pair into this context before reconnecting.
        self._ctx = client_context(ident.ca_path, ident.cert_path, ident.key_path)
        self.certificates = CertificateWatch(ident, self._ctx)  # a renewal installed by hand
        client.tls_set_context(self._ctx)
        client.will_set(self.topics.status(self.device), WILL, qos=1, retain=True)
        client.reconnect_delay_set(max(1, round(reconnect_min_s)), max(1, round(reconnect_max_s)))
        client.max_inflight_messages_set(65535)  # our own window governs; see DeliveryEngine
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        client.on_message = self._on_message
        client.on_connect_fail = self._on_connect_fail
        client.on_subscribe = self._on_subscribe
        return client

    def start(self) -> None:
        """Connect in the background; reconnects by itself with back-off."""
        self._thread = threading.Thread(target=self._run, name="uplink", daemon=True)
        self._thread.start()
        self.client.connect_async(self.host, self.port, keepalive=self.keepalive_s)
        self.client.loop_start()

    def stop(self, timeout: float = 5.0) -> None:
        """Say ``offline`` (retained, with what still waits), disconnect and stop both threads."""
        if self._thread is None:
            return
        if self.engine.connected:
            body = replace(self.status(), state="offline").payload()
            info = self.client.publish(self.topics.status(self.device), body, qos=1, retain=True)
            if info.rc == MQTTErrorCode.MQTT_ERR_SUCCESS:
                info.wait_for_publish(timeout)
        self.client.disconnect()
        self.client.loop_stop()
        self._jobs.put(None)
        self._thread.join(timeout)
        self._thread = None
        self.engine.disconnected()  # the delivery thread is gone: settle its state here
        self.outbox.persist()

    @property
    def alive(self) -> bool:
        """True while the delivery thread runs (for the station's watchdog)."""
        return self._thread is not None and self._thread.is_alive()

    def wiped(self, report: Any = None) -> None:
        """A ``Wiper`` listener: drop what is in hand, report the wipe and the new status.

        Safe from any thread (it only posts); the event carries the undelivered capture
        ids and their count (DESIGN §3.4), the trigger as ``reason``.
        """
        body = None
        if report is not None:
            ids = list(report.capture_ids)
            body = self._event("wiped", capture_ids=ids, count=len(ids),
                               reason=getattr(report, "trigger", None) or None)

        def forget() -> None:
            self.engine.reset()
            if body is not None:
                self._publish_event(body)
            self._publish_status()
        self._post(forget)

    def wake(self) -> None:
        """A capture was put into the vault: send it (and the new pending count)."""
        self._post(self._pump_and_status)

    def flush(self, timeout_s: float = 2.0) -> bool:
        """Wait (bounded) until what was posted so far has been handed to the socket.

        Used on the way out: the wipe report and the last status should reach the broker
        before the process exits, but a dead network must not hold the exit.
        """
        deadline = time.monotonic() + timeout_s
        done = threading.Event()
        self._post(done.set)
        if not done.wait(timeout_s):
            return False
        while self.client.want_write():
            if time.monotonic() > deadline:
                return False
            time.sleep(0.02)
        return True

    # -- what the station may call -------------------------------------------------------
    def publish_event(self, event: str, **fields: Any) -> None:
        """Queue an audit event (DESIGN §5 keys only) for ``P/D/event``."""
        body = self._event(event, **fields)
        self._post(lambda: self._publish_event(body))

    def send_void(self, capture_id: str) -> None:
        """Ask the relay to mark a delivered capture entered-in-error (signed event)."""
        body = sign_event(self._event("void", capture_id=capture_id).as_dict(), self.identity.key)
        self._post(lambda: self._publish_event(body))

    def status(self) -> StationStatus:
        """The retained status this station publishes."""
        state = ("misconfigured" if self.engine.misconfigured
                 else "online" if self.engine.connected else "offline")
        relay = None if self.relay_seen is None else ("online" if self.relay_seen else "offline")
        return StationStatus(
            state=state, pending=self.vault.pending_count, pending_bytes=self.vault.pending_bytes,
            boot=self.boot_id, fw=self.firmware_version, uptime_s=int(self._clock() - self._started),
            cert_not_after=utc_stamp(self.identity.not_after.timestamp()),
            clock_synced=bool(self._clock_synced()),
            renewal=self.renewal.status() if self.renewal is not None else None, relay=relay,
            trust=trust_status(self.identity) if self._on_trust is not None else None)

    # -- the delivery thread -------------------------------------------------------------
    def _post(self, job: Callable[[], None]) -> None:
        self._jobs.put(job)

    def _run(self) -> None:
        timeout: float | None = None
        while True:
            try:
                job = self._jobs.get(timeout=timeout)
            except queue.Empty:
                job = self._idle
            if job is None:
                return
            try:
                job()
                self._tick()
                self._presence_settled()
                self._renewal_tick()
                due = self.engine.tick()
                # offline, kept events wait for the reconnect (which sends them all): no spinning
                resend = self.outbox.next_due_in() if self.engine.connected else None
                timeout = min(x for x in (due, resend, self.expire_every_s) if x is not None)
                if self._presence_due is not None:
                    timeout = max(0.0, min(timeout, self._presence_due - self._clock()))
                wake = self.renewal.wake_in_s() if self.renewal is not None else None
                if wake is not None:
                    timeout = min(timeout, wake + 0.05)
            except Exception:  # never let one bad message stop delivery
                log.exception("uplink: delivery step failed")
            self.outbox.persist()  # before the next job: a flush() on the way out waits for it

    def _idle(self) -> None:
        pass  # a deadline passed: the engine's tick below handles it

    def _tick(self) -> None:
        """After every job: re-send events the relay has not logged yet, and let captures
        past the vault's TTL go, and say so (DESIGN §3.6)."""
        if self.engine.connected:
            self._resend_events()
        now = self._clock()
        if now - self._last_expiry < self.expire_every_s:
            return
        self._last_expiry = now
        self._adopt_installed()
        expired = self.vault.expire()
        if expired:
            for cid in expired:
                self.engine.forget(cid)
            self._publish_event(self._event("expired", capture_ids=list(expired), count=len(expired)))
            self._publish_status()
            self._post_event(CapturesExpired(tuple(expired)))

    # -- relay presence (delivery thread) ------------------------------------------------
    def _relay_presence(self, relay_id: str, payload: bytes) -> None:
        self.relays.update(relay_id, payload)
        served = self.relays.serves(self.device)
        if self.relay_seen is not None or served:
            self._set_relay(served)

    def _presence_settled(self) -> None:
        """The retained presences had their time to arrive: decide whether a relay is there."""
        due = self._presence_due
        if due is None or self._clock() < due:
            return
        self._presence_due = None
        if self.relay_seen is None and self._presence_readable and self.engine.connected:
            self._set_relay(self.relays.serves(self.device))

    def _set_relay(self, seen: bool) -> None:
        if seen == self.relay_seen:
            return
        before, self.relay_seen = self.relay_seen, seen
        resent = 0
        if seen:
            self.engine.hold(False)
            if before is False:
                self._resend_events(everything=True)  # what it missed, a last run's included
                self.engine.resend_now()
                resent = self.vault.pending_count
                log.info("uplink: a relay serves this station again; sending its %d pending capture(s) now",
                         resent)
        else:
            log.warning("uplink: connected, but no relay serves this station; captures wait in the vault")
            self.engine.hold(True)
        self._publish_status()
        if before is not None or not seen:
            self._post_event(RelayPresenceChanged(seen, resent))

    # -- certificate renewal (delivery thread) -------------------------------------------
    def _renewal_tick(self) -> None:
        agent = self.renewal
        if agent is None or self._installing or not self.engine.connected:
            return
        if not agent.due(self.identity.not_after):
            return
        payload = agent.request(self.identity)
        props = Properties(PacketTypes.PUBLISH)
        props.ResponseTopic = self.topics.cert(self.device)
        self._renew_mid = self.client.publish(self.topics.renew(self.device), payload, qos=1, properties=props).mid
        self._publish_status()

    def _renewal_puback(self, code: int) -> None:
        """The broker refused the request: no registrar rights here (a single-tier site's ACL)."""
        self._renew_mid = None
        if code >= 0x80 and self.renewal is not None:
            log.warning("uplink: the broker refused the renewal request (reason code %d)", code)
            self.renewal.not_allowed()
            self._publish_status()

    def _renewal_answer(self, payload: bytes) -> None:
        agent = self.renewal
        if agent is None or self._installing:
            return
        if agent.answer(payload, self.identity):
            cert, key = agent.next_files
            self._reconnect_with(cert, key)
        self._publish_status()

    def _reconnect_with(self, cert: Any, key: Any) -> None:
        """Drop the connection and make the next one with ``cert``/``key``."""
        try:
            self._ctx.load_cert_chain(certfile=str(cert), keyfile=str(key))
        except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
            log.warning("uplink: renewed identity unusable (%s); keeping the current one", type(exc).__name__)
            self._renewal_fallback()
            return
        self.client.disconnect()
        self.client.loop_stop()  # our own disconnect's callback has run by now
        self._installing = True
        self.client.connect_async(self.host, self.port, keepalive=self.keepalive_s)
        self.client.loop_start()

    def _renewal_connected(self) -> None:
        assert self.renewal is not None
        self._installing = False
        try:
            self.identity = self.renewal.promote()
        except Exception:  # never let the install stop delivery on a connection that works
            log.exception("uplink: the renewed identity could not be installed")
            self.renewal.install_failed()
            return
        self.certificates.adopted(self.identity)
        if self._on_renewed is not None:
            self._on_renewed(self.identity)
        self._publish_event(self._event("cert-renewed"))

    def adopt_trust(self, identity: DeviceIdentity, roots_pem: bytes) -> None:
        """A trust update was installed (delivery thread): its roots verify the broker from
        the next handshake on (a retired root stays in this context until a restart)."""
        self._ctx.load_verify_locations(cadata=roots_pem.decode("ascii"))
        self.identity = identity
        self.certificates.adopted(identity)
        self._publish_event(self._event("trust-changed"))
        self._publish_status()

    def _adopt_installed(self) -> None:
        """A certificate renewed by hand on disk ('provision install --cert', same key) becomes
        the station's: new captures and the status at once, TLS at the next reconnect."""
        if self._installing:
            return  # a renewal over MQTT is switching identity right now
        try:
            renewed = self.certificates.check()
        except (ClinicamError, OSError) as exc:
            log.warning("uplink: renewed certificate not picked up (%s); restart the station to use it",
                        type(exc).__name__)
            return
        if renewed is None:
            return
        self.identity = renewed  # the status's cert_not_after; the key is the same
        try:
            if self._on_renewed is not None:
                self._on_renewed(renewed)  # captures sealed from now on carry it
        except ClinicamError as exc:
            log.warning("uplink: renewed certificate not used for sealing (%s)", type(exc).__name__)
        self._publish_status()

    def _tls_before_reconnect(self) -> None:
        """In paho's thread, the one that connects: present a hand-installed renewal next time."""
        try:
            self.certificates.update_tls()
        except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
            log.warning("uplink: renewed certificate not loaded for TLS (%s); restart the station to use it",
                        type(exc).__name__)

    def _renewal_fallback(self) -> None:
        """The new pair did not connect: back to the current one (paho keeps reconnecting)."""
        self._installing = False
        ident = self.identity
        self._ctx.load_cert_chain(certfile=str(ident.cert_path), keyfile=str(ident.key_path))
        if self.renewal is not None:
            self.renewal.install_failed()

    def _pump_and_status(self) -> None:
        self.engine.pump()
        self._publish_status()

    def _publish(self, topic: str, payload: bytes | bytearray | memoryview,
                 response: tuple[str, bytes] | None) -> int:
        props = None
        if response is not None:
            props = Properties(PacketTypes.PUBLISH)
            props.ResponseTopic, props.CorrelationData = response
        info = self.client.publish(topic, bytes(payload), qos=1, properties=props)
        if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            raise ConnectionError(f"publish not possible now (paho rc {info.rc})")
        return info.mid

    def _publish_json(self, topic: str, body: dict[str, Any], retain: bool = False) -> None:
        payload = json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
        self.client.publish(topic, payload, qos=1, retain=retain)

    def _event(self, name: str, **fields: Any) -> AuditEvent:
        """An audit event that happens now, with a fresh ``event_id`` (DESIGN §5 keys only)."""
        return AuditEvent(name, utc_stamp(self._wall()), event_id=self.outbox.new_id(), **fields)

    def _publish_event(self, event: AuditEvent | dict[str, Any]) -> None:
        """An audit event (or a signed one), kept in the outbox until the relay logs it (DESIGN §5)."""
        body = event.as_dict() if isinstance(event, AuditEvent) else event
        self._publish_json(self.topics.event(self.device), self.outbox.keep(body))

    def _event_acked(self, event_id: str) -> None:
        """The relay logged an audit event: the outbox forgets it."""
        self.outbox.acked(event_id)

    def _resend_events(self, everything: bool = False) -> None:
        for body in self.outbox.due(everything=everything):
            self._publish_json(self.topics.event(self.device), body)

    def _publish_status(self) -> None:
        if self.engine.connected:
            self.client.publish(self.topics.status(self.device), self.status().payload(), qos=1, retain=True)

    def _emit(self, event: UplinkEvent) -> None:
        """Engine outcomes: tell the relay (audit, status) and the station."""
        if isinstance(event, CaptureRejected):
            self._publish_event(self._event("rejected", capture_id=event.capture_id, reason=event.reason))
        if isinstance(event, FaultReported):
            self._publish_event(self._event("config-error", capture_id=event.capture_id,
                                            reason=event.reason))
        if isinstance(event, CaptureStored | CaptureRejected | FaultReported):
            self._publish_status()
        self._post_event(event)

    # -- paho callbacks (network thread: post, never work) ---------------------------------
    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason_code: Any,
                    properties: Any) -> None:
        self._connack = True
        if reason_code.is_failure:
            self._explain(f"the broker refused the MQTT connection: {reason_code}",
                          "check the broker's ACL and log for this station's id (selftest says more)")
            if self._installing:
                self._post(self._renewal_fallback)
            self._post_event(UplinkLost(str(reason_code)))
            return
        self._explained = ""
        receive_max = getattr(properties, "ReceiveMaximum", 65535)
        max_packet = getattr(properties, "MaximumPacketSize", None)
        topics = self.topics.station_subscriptions(self.device)
        if self.renewal is not None:
            topics.append(self.topics.cert(self.device))
        if self._on_recipient is not None:
            topics.append(self._recipient_topic)
        if self._on_trust is not None:
            topics.append(self._trust_topic)
        client.subscribe([(t, 1) for t in topics])
        self._presence_mid = client.subscribe(presence_filter(self.prefix), qos=1)[1]  # its own SUBACK
        log.info("uplink: connected (receive maximum %d, maximum packet %s)", receive_max, max_packet)

        def connected() -> None:
            if self._installing:
                self._renewal_connected()
            self.relays.relays.clear()  # the retained presences come again
            self.relay_seen, self._presence_due = None, self._clock() + self.presence_settle_s
            self.engine.hold(False)
            self.engine.connected_with(receive_max, max_packet)
            self._publish_status()
            self._resend_events(everything=True)
            self._post_event(UplinkConnected(receive_max, max_packet))
        self._post(connected)

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason_code: Any,
                       properties: Any) -> None:
        log.info("uplink: disconnected (%s)", reason_code)
        if not self._connack:  # dropped before any CONNACK: the broker refused our certificate?
            self._probe_refusal()
        self._connack = False
        if not self._installing:
            self._tls_before_reconnect()

        failed = bool(getattr(reason_code, "is_failure", True))

        def lost() -> None:
            self.relay_seen, self._presence_due = None, None
            # Our own disconnect before reconnecting with the renewed pair is "normal";
            # a failure while installing means the broker did not take the new pair.
            if self._installing and failed:
                self._renewal_fallback()
            self.engine.disconnected()
            self._post_event(UplinkLost(str(reason_code)))
        self._post(lost)

    def _probe_refusal(self) -> None:
        """Ask the broker why, as selftest does (its TLS alert), on a thread of its own."""
        if self._probing.acquire(blocking=False):
            def probe() -> None:
                try:
                    from clinicam.firmware.selftest.broker import probe_refusal

                    ident = self.identity
                    ctx = client_context(ident.ca_path, ident.cert_path, ident.key_path)
                    why = probe_refusal(self.host, self.port, ctx)
                    if why:
                        self._explain(why, _REMEDIES.get(next((k for k in _REMEDIES if k in why), ""),
                                                         "check the broker's log for this station's connection"))
                finally:
                    self._probing.release()
            threading.Thread(target=probe, name="uplink-probe", daemon=True).start()

    def _explain(self, why: str, remedy: str) -> None:
        """Say once (until it changes) why the broker will not have this station."""
        if why != self._explained:
            self._explained = why
            log.error("uplink: %s: %s", why, remedy)

    def _on_connect_fail(self, client: mqtt.Client, userdata: Any) -> None:
        log.warning("uplink: cannot reach the broker %s:%d (TLS or TCP); retrying with back-off",
                    self.host, self.port)
        if self._installing:
            self._post(self._renewal_fallback)
        else:
            self._tls_before_reconnect()
        self._post_event(UplinkLost("unreachable"))

    def _on_subscribe(self, client: mqtt.Client, userdata: Any, mid: int, reason_codes: Any,
                      properties: Any) -> None:
        codes = list(reason_codes)
        if mid == self._presence_mid and codes and codes[0].is_failure:  # the relay presence subscription

            def unreadable() -> None:
                if self._presence_readable:
                    log.warning("uplink: the broker does not let this station read relay presence (%s): "
                                "regenerate the broker's ACL ('clinicam provision acl') and reload it",
                                codes[0])
                self._presence_readable = False
            self._post(unreadable)

    def _on_publish(self, client: mqtt.Client, userdata: Any, mid: int, reason_code: Any,
                    properties: Any) -> None:
        code = int(getattr(reason_code, "value", reason_code))
        if mid == self._renew_mid:
            self._post(lambda: self._renewal_puback(code))
            return
        self._post(lambda: self.engine.puback(mid, code))

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        payload = bytes(msg.payload)
        relay_id = relay_of(self.prefix, msg.topic)
        if relay_id is not None:
            self._post(lambda: self._relay_presence(relay_id, payload))
        elif msg.topic == self.topics.ack(self.device):
            event_id = parse_event_ack(payload)
            if event_id is not None:
                self._post(lambda: self._event_acked(event_id))
            else:
                self._post(lambda: self.engine.ack(payload))
        elif msg.topic == self.topics.cmd(self.device):
            self._command(payload, bool(msg.retain))
        elif msg.topic == self.topics.cert(self.device) and self.renewal is not None:
            self._post(lambda: self._renewal_answer(payload))
        elif msg.topic == self._recipient_topic and self._on_recipient is not None:
            handler = self._on_recipient
            self._post(lambda: handler(payload))
        elif msg.topic == self._trust_topic and self._on_trust is not None:
            trust_handler = self._on_trust
            self._post(lambda: trust_handler(payload))

    def _command(self, payload: bytes, retained: bool) -> None:
        try:
            command = self._gate.admit(payload, retained=retained, now=self._wall())
        except CommandRefused as exc:
            log.warning("uplink: command ignored (%s)", exc.why)
            self._post_event(CommandIgnored(exc.why))
            return
        if command.update is not None:
            self._post(lambda: self._update(command))
            self._post_event(CommandReceived(command.cmd, command.id))
            return
        fields: dict[str, Any] = {"cmd_id": command.id}
        if command.cmd == "wipe" and self._wipe is not None:
            report = self._wipe()  # now, not behind the queue (DESIGN §3.4)
            ids = list(getattr(report, "capture_ids", []) or [])
            fields.update(capture_ids=ids, count=len(ids))
            self.wiped()
        body = self._event(command.cmd, **fields)

        def answer() -> None:
            self._publish_event(body)
            self._publish_status()
        self._post(answer)
        self._post_event(CommandReceived(command.cmd, command.id))

    def _update(self, command: Command) -> None:
        """On the delivery thread (a file write, never the workflow's): hand the order
        over and answer ``update-requested``, or ``update-refused`` with the reason."""
        order = command.update
        assert order is not None
        refusal = "unavailable" if self._on_update is None else self._on_update(command.id, order)
        event = "update-requested" if refusal is None else "update-refused"
        log.info("uplink: update %s to %s (command %s)", event, order.version, command.id)
        self.publish_event(event, cmd_id=command.id, fw=order.version, reason=refusal)
