"""The station's MQTT 5 uplink: mutual TLS to the broker, captures out, acks back in.

Two threads, neither of them the workflow's: paho's network loop only *posts* what it
receives onto an internal queue (the one exception is the remote ``wipe``, which runs
the wipe path at once, DESIGN §3.4), and the delivery thread owns the
``DeliveryEngine`` and does all publishing. The station hears about outcomes through
``post``: the workflow's own events (``clinicam.firmware.workflow.events``, the
``UplinkEvent`` part of ``Event``), put straight onto the station's queue.

Transport is never optional: TLS 1.2 or newer, the site CA as the only trust anchor,
the broker's host name verified, the device certificate always presented, MQTT 5
only (only v5 reports a denied publish, as a PUBACK reason code).
"""

from __future__ import annotations

import json
import logging
import queue
import random
import threading
import time
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt
from clinicam.common.clock import Clock, SystemClock
from clinicam.firmware.uplink.delivery import DeliveryEngine, VaultLike
from clinicam.firmware.uplink.renewal import RenewalAgent
from clinicam.firmware.workflow.events import (
    CaptureRejected,
    CapturesExpired,
    CaptureStored,
    CommandIgnored,
    CommandReceived,
    FaultReported,
    UplinkConnected,
    UplinkEvent,
    UplinkLost,
)
from clinicam.protocol.commands import CommandGate, CommandRefused
from clinicam.protocol.manifest import sign_event
from clinicam.protocol.status import event_payload, status_payload, utc_stamp
from clinicam.protocol.topics import DEFAULT_PREFIX, Topics
from clinicam.provisioning.identity import StationIdentity
from clinicam.provisioning.tlsctx import client_context
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

log = logging.getLogger(__name__)

OFFLINE = json.dumps({"state": "offline"}).encode()


class Uplink:
    """Delivers the vault's sealed captures and keeps the station visible to the relay.

    ``identity`` is ``clinicam.provisioning.identity.DeviceIdentity``; ``wipe`` is the
    one wipe path (``clinicam.firmware.capture.wipe``), called for a live remote ``wipe``.
    """

    def __init__(self, *, identity: StationIdentity, vault: VaultLike, post: Callable[[UplinkEvent], None],
                 wipe: Callable[[], Any] | None = None, host: str | None = None,
                 port: int | None = None, topic_prefix: str = DEFAULT_PREFIX,
                 ack_timeout_s: float = 60.0, max_inflight: int = 8, keepalive_s: int = 30,
                 reconnect_min_s: float = 1.0, reconnect_max_s: float = 60.0,
                 retry_min_s: float = 2.0, retry_max_s: float = 300.0,
                 boot_id: str = "0" * 32, firmware_version: str = "0",
                 clock_synced: Callable[[], bool] = lambda: True,
                 clock: Clock | None = None,
                 rng: random.Random | None = None, renewal: RenewalAgent | None = None,
                 on_renewed: Callable[[Any], None] | None = None,
                 on_recipient: Callable[[bytes], None] | None = None) -> None:
        self.identity, self.vault, self._post_event, self._wipe = identity, vault, post, wipe
        # Recipient-key rotation (issue 17): the site's announcement, retained on P/_site/recipient.
        self._on_recipient, self._recipient_topic = on_recipient, f"{topic_prefix}/_site/recipient"
        # Certificate renewal over MQTT (issue 17): the agent decides, the uplink connects.
        self.renewal, self._on_renewed = renewal, on_renewed
        self._installing = False  # a reconnect with next.pem/next.key is under way
        self._renew_mid: int | None = None  # the request's PUBACK says whether the ACL allows it
        self.device: str = identity.device_id
        self.host = host or identity.broker_host
        self.port = port or identity.broker_port
        self.topics = Topics(topic_prefix)
        self.keepalive_s = keepalive_s
        self.boot_id, self.firmware_version, self._clock_synced = boot_id, firmware_version, clock_synced
        time_source = clock or SystemClock()
        self._clock, self._wall = time_source.monotonic, time_source.wall
        self._started = self._clock()
        self.expire_every_s = 30.0
        self._last_expiry = self._started
        self._jobs: queue.Queue[Callable[[], None] | None] = queue.Queue()
        self._gate = CommandGate()
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
        client.tls_set_context(self._ctx)
        client.will_set(self.topics.status(self.device), OFFLINE, qos=1, retain=True)
        client.reconnect_delay_set(max(1, round(reconnect_min_s)), max(1, round(reconnect_max_s)))
        client.max_inflight_messages_set(65535)  # our own window governs; see DeliveryEngine
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        client.on_message = self._on_message
        client.on_connect_fail = self._on_connect_fail
        return client

    def start(self) -> None:
        """Connect in the background; reconnects by itself with back-off."""
        self._thread = threading.Thread(target=self._run, name="uplink", daemon=True)
        self._thread.start()
        self.client.connect_async(self.host, self.port, keepalive=self.keepalive_s)
        self.client.loop_start()

    def stop(self, timeout: float = 5.0) -> None:
        """Say ``offline`` (retained), disconnect and stop both threads."""
        if self._thread is None:
            return
        if self.engine.connected:
            info = self.client.publish(self.topics.status(self.device), OFFLINE, qos=1, retain=True)
            if info.rc == MQTTErrorCode.MQTT_ERR_SUCCESS:
                info.wait_for_publish(timeout)
        self.client.disconnect()
        self.client.loop_stop()
        self._jobs.put(None)
        self._thread.join(timeout)
        self._thread = None
        self.engine.disconnected()  # the delivery thread is gone: settle its state here

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
            body = event_payload("wiped", self._wall(), capture_ids=ids, count=len(ids),
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
        body = event_payload(event, self._wall(), **fields)
        self._post(lambda: self._publish_event(body))

    def send_void(self, capture_id: str) -> None:
        """Ask the relay to mark a delivered capture entered-in-error (signed event)."""
        body = sign_event({"event": "void", "at": utc_stamp(self._wall()),
                           "capture_id": capture_id}, self.identity.key)
        self._post(lambda: self._publish_event(body))

    def status(self) -> dict[str, Any]:
        """The retained status this station publishes."""
        state = ("misconfigured" if self.engine.misconfigured
                 else "online" if self.engine.connected else "offline")
        not_after = self.identity.not_after
        return status_payload(
            state=state, pending=self.vault.pending_count, pending_bytes=self.vault.pending_bytes,
            boot=self.boot_id, fw=self.firmware_version, uptime_s=self._clock() - self._started,
            cert_not_after=utc_stamp(not_after.timestamp()) if not_after else None,
            clock_synced=bool(self._clock_synced()),
            renewal=self.renewal.status() if self.renewal is not None else None)

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
                self._renewal_tick()
                due = self.engine.tick()
                timeout = self.expire_every_s if due is None else min(due, self.expire_every_s)
                wake = self.renewal.wake_in_s() if self.renewal is not None else None
                if wake is not None:
                    timeout = min(timeout, wake + 0.05)
            except Exception:  # never let one bad message stop delivery
                log.exception("uplink: delivery step failed")

    def _idle(self) -> None:
        pass  # a deadline passed: the engine's tick below handles it

    def _tick(self) -> None:
        """After every job: let captures past the vault's TTL go, and say so (DESIGN §3.6)."""
        now = self._clock()
        if now - self._last_expiry < self.expire_every_s:
            return
        self._last_expiry = now
        expired = self.vault.expire()
        if expired:
            for cid in expired:
                self.engine.forget(cid)
            self._publish_event(event_payload(
                "expired", self._wall(), capture_ids=list(expired), count=len(expired)))
            self._publish_status()
            self._post_event(CapturesExpired(tuple(expired)))

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
        if self._on_renewed is not None:
            self._on_renewed(self.identity)
        self._publish_event(event_payload("cert-renewed", self._wall()))

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

    def _publish_event(self, body: dict[str, Any]) -> None:
        self._publish_json(self.topics.event(self.device), body)

    def _publish_status(self) -> None:
        if self.engine.connected:
            self._publish_json(self.topics.status(self.device), self.status(), retain=True)

    def _emit(self, event: UplinkEvent) -> None:
        """Engine outcomes: tell the relay (audit, status) and the station."""
        if isinstance(event, CaptureRejected):
            self._publish_event(event_payload(
                "rejected", self._wall(), capture_id=event.capture_id, reason=event.reason))
        if isinstance(event, FaultReported):
            self._publish_event(event_payload(
                "config-error", self._wall(), capture_id=event.capture_id, reason=event.reason))
        if isinstance(event, CaptureStored | CaptureRejected | FaultReported):
            self._publish_status()
        self._post_event(event)

    # -- paho callbacks (network thread: post, never work) ---------------------------------
    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason_code: Any,
                    properties: Any) -> None:
        if reason_code.is_failure:
            log.warning("uplink: broker refused the connection (%s)", reason_code)
            if self._installing:
                self._post(self._renewal_fallback)
            self._post_event(UplinkLost(str(reason_code)))
            return
        receive_max = getattr(properties, "ReceiveMaximum", 65535)
        max_packet = getattr(properties, "MaximumPacketSize", None)
        topics = self.topics.station_subscriptions(self.device)
        if self.renewal is not None:
            topics.append(self.topics.cert(self.device))
        if self._on_recipient is not None:
            topics.append(self._recipient_topic)
        client.subscribe([(t, 1) for t in topics])
        log.info("uplink: connected (receive maximum %d, maximum packet %s)", receive_max, max_packet)

        def connected() -> None:
            if self._installing:
                self._renewal_connected()
            self.engine.connected_with(receive_max, max_packet)
            self._publish_status()
            self._post_event(UplinkConnected(receive_max, max_packet))
        self._post(connected)

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason_code: Any,
                       properties: Any) -> None:
        log.info("uplink: disconnected (%s)", reason_code)

        failed = bool(getattr(reason_code, "is_failure", True))

        def lost() -> None:
            # Our own disconnect before reconnecting with the renewed pair is "normal";
            # a failure while installing means the broker did not take the new pair.
            if self._installing and failed:
                self._renewal_fallback()
            self.engine.disconnected()
            self._post_event(UplinkLost(str(reason_code)))
        self._post(lost)

    def _on_connect_fail(self, client: mqtt.Client, userdata: Any) -> None:
        log.warning("uplink: cannot reach the broker %s:%d (TLS or TCP); retrying with back-off",
                    self.host, self.port)
        if self._installing:
            self._post(self._renewal_fallback)
        self._post_event(UplinkLost("unreachable"))

    def _on_publish(self, client: mqtt.Client, userdata: Any, mid: int, reason_code: Any,
                    properties: Any) -> None:
        code = int(getattr(reason_code, "value", reason_code))
        if mid == self._renew_mid:
            self._post(lambda: self._renewal_puback(code))
            return
        self._post(lambda: self.engine.puback(mid, code))

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        payload = bytes(msg.payload)
        if msg.topic == self.topics.ack(self.device):
            self._post(lambda: self.engine.ack(payload))
        elif msg.topic == self.topics.cmd(self.device):
            self._command(payload, bool(msg.retain))
        elif msg.topic == self.topics.cert(self.device) and self.renewal is not None:
            self._post(lambda: self._renewal_answer(payload))
        elif msg.topic == self._recipient_topic and self._on_recipient is not None:
            handler = self._on_recipient
            self._post(lambda: handler(payload))

    def _command(self, payload: bytes, retained: bool) -> None:
        try:
            command = self._gate.admit(payload, retained=retained, now=self._wall())
        except CommandRefused as exc:
            log.warning("uplink: command ignored (%s)", exc.why)
            self._post_event(CommandIgnored(exc.why))
            return
        fields: dict[str, Any] = {"cmd_id": command.id}
        if command.cmd == "wipe" and self._wipe is not None:
            report = self._wipe()  # now, not behind the queue (DESIGN §3.4)
            ids = list(getattr(report, "capture_ids", []) or [])
            fields.update(capture_ids=ids, count=len(ids))
            self.wiped()
        body = event_payload(command.cmd, self._wall(), **fields)

        def answer() -> None:
            self._publish_event(body)
            self._publish_status()
        self._post(answer)
        self._post_event(CommandReceived(command.cmd, command.id))
