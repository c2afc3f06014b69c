"""The station: config → drivers → workflow → capture → seal → vault → uplink.

One thread (the caller of :meth:`Station.run`, the main thread in the daemon) owns the
workflow state and reads one queue. Drivers, the camera thread, the uplink's threads,
timers and signal handlers only post events onto it. The wipe path is the exception
(DESIGN §3.4): battery-critical, tamper, a live remote ``wipe`` and the signals call
``Wiper.wipe`` directly, from whatever thread they are on, and post the event after.

Everything the station reports about itself — the log, the optional JSON event stream
on stdout (``observer``), the status and audit topics — names captures by id and
reasons by code. Patient and operator ids live only in the workflow state, the capture
metadata being sealed, and the sealed parts.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

from clinicam.common.clock import Clock, SystemClock
from clinicam.common.errors import CameraUnavailable, SealError, VaultFull
from clinicam.common.zeroize import zero
from clinicam.drivers.patterns import PatternName
from clinicam.firmware.capture.camera_worker import CameraWorker, post_classified
from clinicam.firmware.capture.vault import Vault, WipeReport
from clinicam.firmware.capture.wipe import Wiper
from clinicam.firmware.codes.classify import CodeRules
from clinicam.firmware.config import StationConfig
from clinicam.firmware.hardware import HardwareBuilder
from clinicam.firmware.journal import CERT_CHECK_EVERY_S, Journal, certificate_notice
from clinicam.firmware.sdnotify import Notifier, watchdog_interval_s
from clinicam.firmware.update_handoff import UpdateHandoff, UpdateUnavailable
from clinicam.firmware.uplink.client import Uplink
from clinicam.firmware.uplink.eventstore import EventStore
from clinicam.firmware.uplink.recipient import RecipientFollower
from clinicam.firmware.uplink.renewal import RenewalAgent, RenewalPolicy
from clinicam.firmware.uplink.trust import TrustFollower
from clinicam.firmware.workflow import events as ev
from clinicam.firmware.workflow.machine import step
from clinicam.firmware.workflow.metadata import CameraFacts, DeviceInfo, SessionFacts, build_metadata
from clinicam.firmware.workflow.session import WorkflowPolicy, initial_state
from clinicam.protocol.commands import UpdateOrder
from clinicam.protocol.sealing import Sealer
from clinicam.provisioning.identity import DeviceIdentity, load_identity

log = logging.getLogger(__name__)

Observer = Callable[[dict[str, Any]], None]

TICK_S = 0.5  # how often the workflow hears the time (idle sessions close on a Tick)
HOUSEKEEPING_S = 2.0  # clock-sync check and watchdog (the uplink expires the vault)


def firmware_version() -> str:
    """The image's version on an appliance (the root is the firmware), else the package's."""
    from importlib.metadata import PackageNotFoundError, version

    from clinicam.firmware.update_report import image_version

    image = image_version()
    if image is not None:
        return image
    try:
        return version("clinicam")
    except PackageNotFoundError:
        return "0+unknown"


class Station:
    """Wires the parts together and runs the workflow loop."""

    def __init__(
        self,
        config: StationConfig,
        identity: DeviceIdentity,
        build_hardware: HardwareBuilder,
        *,
        observer: Observer | None = None,
        notifier: Notifier | None = None,
        rng: Callable[[int], bytes] = os.urandom,
        clock: Clock | None = None,
    ) -> None:
        self.config, self.identity = config, identity
        self._journal = Journal(observer)  # lifecycle lines for journalctl, then the observer
        self._observe = self._journal
        self.notifier = notifier or Notifier()
        self.time = clock or SystemClock()
        self._clock = self.time.monotonic
        # The queue first: the drivers built below post onto it from their own threads.
        self.events: queue.Queue[ev.Event] = queue.Queue()
        self.version = firmware_version()
        boot = rng(16).hex()
        self.device = DeviceInfo(identity.device_id, config.device.site, config.device.location, self.version)
        self.vault = Vault(config.vault.max_captures, config.vault.max_bytes, config.vault.ttl_s, self._clock)
        self.wiper = Wiper(self.vault)
        self.sealer = Sealer(
            identity.device_id,
            identity.key,
            identity.cert_pem,
            identity.recipient,
            aead=config.sealing.aead,
            chunk_size=config.sealing.chunk_size,
            rng=rng,
            utc=self.time.utc,
            boot_id=boot,
            buffers=self.vault,
        )
        self.counts = {"sealed": 0, "stored": 0, "rejected": 0, "refused": 0, "voided": 0}
        self._recipients: RecipientFollower | None = None
        self._broker_up = False  # the MQTT session (the status line's online|offline)
        self._trust: TrustFollower | None = None
        self.rules = CodeRules.from_config(config.codes)
        self.updates = UpdateHandoff.from_environment(os.environ, started_at=self.time.wall())
        self.hw = hardware = build_hardware(
            on_press=self.on_press, on_long_press=self.on_long_press, on_power=self.on_power,
            on_code=self.on_scanned,
        )
        self.uplink = self._make_uplink(boot)
        self.worker = CameraWorker(
            hardware.camera,
            hardware.reader,
            self.rules,
            self.post,
            clear_after_s=config.reader.presentation_clear_s,
            clock=self._clock,
        )
        self.wiper.add_listener(self._wiped)
        self.wiper.add_listener(self.uplink.wiped)
        policy = WorkflowPolicy.from_section(config.workflow)
        self.state = initial_state(policy, rng(32), clock_synced=hardware.clock_sync.synchronised())
        self._wiped_directly: set[str] = set()
        self._update_reported: Any = None
        self._stop = threading.Event()
        self._cert_checked = self._clock()

    def _make_uplink(self, boot: str) -> Uplink:
        u, events = self.config.uplink, self.config.events
        return Uplink(
            identity=self.identity,
            vault=self.vault,
            post=self.post,
            wipe=lambda: self.wipe_now("remote"),
            on_update=self._update_requested,
            host=u.host or None,
            port=u.port,
            topic_prefix=u.topic_prefix,
            ack_timeout_s=u.ack_timeout_s,
            max_inflight=u.max_inflight,
            keepalive_s=u.keepalive_s,
            reconnect_min_s=u.reconnect_min_s,
            reconnect_max_s=u.reconnect_max_s,
            retry_min_s=u.retry_min_s,
            retry_max_s=u.retry_max_s,
            boot_id=boot,
            firmware_version=self.version,
            clock_synced=self.hw.clock_sync.synchronised,
            clock=self.time,
            renewal=self._renewal_agent(),
            on_renewed=self._renewed,
            on_recipient=self._recipient_announced,
            on_trust=self._trust_update,
            event_store=EventStore.open(events.dir),
            max_events=events.max_events,
            event_resend_s=events.resend_s,
        )

    def _renewal_agent(self) -> RenewalAgent | None:
        r = self.config.renewal
        if not r.enabled:
            return None
        policy = RenewalPolicy(True, r.margin_days, r.retry_min_s, r.retry_max_s, r.answer_timeout_s)
        return RenewalAgent(self.identity.dir, self.identity.device_id, policy, utc=self.time.utc)

    def _recipient_announced(self, payload: bytes) -> None:
        """The site announced a recipient key (issue 17): seal new captures to it."""
        if self._recipients is None:
            self._recipients = RecipientFollower(self.identity.dir, self.identity.anchors, self.identity.recipient,
                                                 self.time.utc)
        new = self._recipients.handle(payload)
        if new is not None:
            self.sealer.use_recipient(new)
            self.uplink.publish_event("recipient-changed")

    def _trust_update(self, payload: bytes) -> None:
        """The site's trust update (issue 17, CA rotation; delivery thread): new roots, and
        a renewal now when this station's certificate is not from the current issuing CA."""
        if self._trust is None:
            self._trust = TrustFollower(self.identity.dir, self.time.utc)
        outcome = self._trust.handle(payload, self.identity)
        if outcome is None:
            return
        if outcome.installed:
            new = load_identity(self.identity.dir)
            self.identity = new
            if self._recipients is not None:
                self._recipients.root = new.anchors
            self.uplink.adopt_trust(new, outcome.update.roots_pem)
        if self.uplink.renewal is not None:
            self.uplink.renewal.force(outcome.renew)

    def _renewed(self, new: Any) -> None:
        """The uplink installed a renewed certificate: sign captures with it from now on."""
        self.identity = new
        self.sealer.use_identity(new.key, new.cert_pem)

    # --- what other threads may call -----------------------------------------------------

    def post(self, event: ev.Event) -> None:
        """Queue an event for the workflow thread (any thread, never blocks)."""
        self.events.put(event)

    def wipe_now(self, trigger: str) -> WipeReport:
        """The direct wipe path (any thread): zero now, tell the workflow afterwards."""
        self._wiped_directly.add(trigger)
        return self.wiper.wipe(trigger)

    def on_scanned(self, code: Any) -> None:
        """A handheld scanner's code (its own thread): classified, then posted."""
        post_classified(code, self.rules, self.post, self._clock())

    def on_press(self) -> None:
        self.post(ev.ShutterPressed(self._clock()))

    def on_long_press(self) -> None:
        self.post(ev.LongPressed(self._clock()))

    def on_power(self, name: str) -> None:
        """Power and tamper inputs: the two wipe triggers do not wait in the queue."""
        if name == "battery_critical":
            self.wipe_now("battery")
            self.post(ev.BatteryCritical())
        elif name == "tamper":
            self.wipe_now("tamper")
            self.post(ev.TamperDetected())
        elif name == "mains_lost":
            self.post(ev.MainsLost())
        elif name == "mains_restored":
            self.post(ev.MainsRestored())

    def drain(self, poll_s: float = 0.1) -> None:
        """SIGTERM's drain hook: refuse new captures, return once the vault is empty."""
        self.post(ev.DrainStarted())
        self._observe({"kind": "drain", "pending": self.vault.pending_count})
        while self.vault.pending_count:
            time.sleep(poll_s)

    def stop(self) -> None:
        self.post(ev.StopRequested())

    # --- the workflow thread -----------------------------------------------------------

    def run(self) -> int:
        """Start the threads, then run the workflow loop until stopped."""
        self.worker.start()
        self.uplink.start()
        self._process(ev.Tick(self._clock()))
        self._observe({"kind": "ready", "device": self.device.id, "backend": self.hw.backend})
        # The status line says what update-install's idle check reads: phase and vault.
        self.notifier.ready(self.status_line(self.state.phase.value))
        log.info("station %s ready (backend %s, firmware %s)", self.device.id, self.hw.backend, self.version)
        self._report_update()
        self._check_certificate()
        last_tick = last_chores = self._clock()
        watchdog = watchdog_interval_s()
        while not self._stop.is_set():
            try:
                event = self.events.get(timeout=TICK_S)
            except queue.Empty:
                event = None
            now = self._clock()
            if event is not None:
                self._process(event)
            if now - last_tick >= TICK_S:
                last_tick = now
                self._process(ev.Tick(now))
            if now - last_chores >= min(HOUSEKEEPING_S, watchdog or HOUSEKEEPING_S):
                last_chores = now
                self._chores()
        return 0

    def close(self) -> None:
        """Stop the threads and release the hardware (after ``run`` returned)."""
        self.worker.stop()
        self.uplink.stop()
        self.hw.close()

    def _process(self, event: ev.Event) -> None:
        workflow_event = self._report(event)
        if workflow_event is None:
            return
        self.state, actions = step(self.state, workflow_event)
        for action in actions:
            self._do(action)

    def _report(self, event: ev.Event) -> ev.Event | None:
        """Count and report what the uplink posted; the event for ``step``, or None.

        Stop, fault and identify are the station's own business (the panel, the loop),
        and the uplink's progress reports only reach the observer.
        """
        if isinstance(event, ev.StopRequested):
            self._stop.set()
        elif isinstance(event, ev.FaultReported):
            log.error("uplink misconfigured: %s", event.reason)
            self._signal(PatternName.FAULT)
        elif isinstance(event, ev.CommandReceived):
            self._observe({"kind": "command", "cmd": event.cmd, "id": event.id})
            if event.cmd == "wipe":
                return ev.WipeRequested("remote")
            if event.cmd == "identify":
                self._signal(PatternName.READY)
        elif isinstance(event, ev.RelayPresenceChanged):  # no relay serving us: the panel shows offline
            self._observe({"kind": "relay", "status": "online" if event.online else "offline",
                           "resent": event.resent})
            return ev.UplinkConnected() if event.online else ev.UplinkLost("no-relay")
        elif isinstance(event, ev.UplinkConnected | ev.UplinkLost):
            status = "connected" if isinstance(event, ev.UplinkConnected) else "lost"
            self._observe({"kind": "uplink", "status": status})
            # The broker connection itself (the workflow's "online" also needs a relay).
            self._broker_up = isinstance(event, ev.UplinkConnected)
            self.notifier.status(self.status_line(self.state.phase.value))
            return event
        elif isinstance(event, ev.CaptureStored):
            self.counts["stored"] += 1
            self._observe({"kind": "capture", "status": "stored", "capture_id": event.capture_id,
                           "ref": event.ref, "pending": event.pending})
            return event
        elif isinstance(event, ev.CaptureRejected):
            self.counts["rejected"] += 1
            self._observe({"kind": "capture", "status": "rejected", "capture_id": event.capture_id,
                           "reason": event.reason})
            return event
        elif isinstance(event, ev.CaptureRetryScheduled):
            self._observe({"kind": "capture", "status": "retry", "capture_id": event.capture_id,
                           "why": event.why, "attempt": event.attempt})
        elif isinstance(event, ev.CapturesExpired):  # the uplink expires the vault and reports it
            log.warning("expired %d undelivered captures: %s", len(event.capture_ids), ",".join(event.capture_ids))
            self._observe({"kind": "expired", "capture_ids": list(event.capture_ids)})
        elif not isinstance(event, ev.CaptureSent | ev.CommandIgnored):
            return event
        return None

    def _do(self, action: ev.Action) -> None:
        if isinstance(action, ev.Signal):
            self._signal(action.pattern)
        elif isinstance(action, ev.TakeCapture):
            self._process(self._capture(action.context))
        elif isinstance(action, ev.VoidCapture):
            self._void(action.capture_id)
        elif isinstance(action, ev.Wipe):
            if action.trigger in self._wiped_directly:
                self._wiped_directly.discard(action.trigger)
            else:
                self.wiper.wipe(action.trigger)
            self._process(ev.WipeCompleted())
        elif isinstance(action, ev.Audit):
            self._journal.audit(action.as_dict())
            self.uplink.publish_event(action.event, **dict(action.fields))
        elif isinstance(action, ev.SetStatus):
            self._observe(
                {
                    "kind": "state",
                    "state": action.state,
                    "session_open": action.session_open,
                    "draining": action.draining,
                    "online": action.online,
                }
            )
            self.notifier.status(self.status_line(action.state))

    def status_line(self, phase: str) -> str:
        """The systemd status line (sd_notify STATUS=): ``"<phase>; <n> pending; online|offline"``.

        Root tools read it with ``systemctl show -P StatusText``: ``idle; 0 pending``
        (no session, empty vault) is when update-install may stop the station, and
        ``online`` (the MQTT session with the broker is up, whether or not a relay
        serves us) is part of what update-confirm needs before it commits a trial slot.
        """
        return f"{phase}; {self.vault.pending_count} pending; {'online' if self._broker_up else 'offline'}"

    def _signal(self, pattern: PatternName) -> None:
        self.hw.panel.signal(pattern)
        self._observe({"kind": "signal", "pattern": pattern})

    # --- capture ---------------------------------------------------------------------------

    def _capture(self, session: SessionFacts) -> Any:
        """Take, seal and vault one still; the result is the event to feed back."""
        buf = bytearray()
        with self.wiper.guard(buf) as guard:
            try:
                still = self.worker.capture(buf)
                captured_at = self.time.utc()
                camera = CameraFacts(
                    still.width, still.height, still.model, still.exposure_us, still.analogue_gain, still.lens_position
                )
                metadata = build_metadata(
                    session, camera, self.device, captured_at=captured_at,
                    clock_synced=self.hw.clock_sync.synchronised(),
                )
                sealed = self.sealer.seal(buf, metadata)
            except (CameraUnavailable, SealError) as exc:
                zero(buf)
                log.error("capture failed: %s", type(exc).__name__)
                return self._refused("fault")
            if guard.wiped:  # a wipe ran while we sealed: the result is garbage, drop it
                self.vault.discard(sealed)
                return self._refused("fault")
        try:
            self.vault.put(sealed)
        except VaultFull:
            self.vault.discard(sealed)
            return self._refused("vault-full")
        self.uplink.wake()
        self.counts["sealed"] += 1
        self._observe(
            {
                "kind": "capture",
                "status": "sealed",
                "capture_id": sealed.capture_id,
                "bytes": sealed.nbytes,
                "pending": self.vault.pending_count,
            }
        )
        return ev.CaptureSealed(sealed.capture_id)

    def _refused(self, reason: str) -> ev.CaptureFailed:
        self.counts["refused"] += 1
        self._observe({"kind": "capture", "status": "refused", "reason": reason})
        return ev.CaptureFailed(reason)

    def _void(self, capture_id: str) -> None:
        self.counts["voided"] += 1
        if self.vault.remove(capture_id):
            self._observe({"kind": "capture", "status": "voided", "capture_id": capture_id, "was": "pending"})
            self.uplink.publish_event("voided", capture_id=capture_id, reason="pending-wiped")
        else:
            self._observe({"kind": "capture", "status": "voided", "capture_id": capture_id, "was": "delivered"})
            self.uplink.send_void(capture_id)

    def _report_update(self) -> None:
        """Tell the relay how the last update ended, once per result.

        update-confirm writes its result after the station is up (it waits for this
        station to be healthy before committing a slot), so this runs at start and then
        with the housekeeping chores; a result already reported is not sent again.
        """
        from clinicam.firmware.update_report import update_result

        result = update_result()
        if result is None or result == self._update_reported:
            return
        self._update_reported = result
        log.info("update: %s %s", result.event, result.version)
        self.uplink.publish_event(result.event, fw=result.version)

    def _update_requested(self, cmd_id: str, order: UpdateOrder) -> str | None:
        """A live ``update`` command (the uplink's thread): hand it to root, or say why not."""
        try:
            self.updates.request(cmd_id, order)
        except UpdateUnavailable as exc:
            log.warning("update %s not handed over: %s", order.version, exc)
            self._observe({"kind": "update", "status": "refused", "id": cmd_id, "reason": "unavailable"})
            return "unavailable"
        self._observe({"kind": "update", "status": "requested", "id": cmd_id, "version": order.version})
        return None

    def _report_update_request(self) -> None:
        """How the root side's ``update-request`` ended, once per result (refused, busy, failed)."""
        outcome = self.updates.outcome()
        if outcome is None:
            return
        log.warning("update %s: %s %s (exit %d)", outcome.version, outcome.event, outcome.reason, outcome.exit)
        self._observe({"kind": "update", "status": outcome.event, "id": outcome.cmd_id, "reason": outcome.reason})
        self.uplink.publish_event(outcome.event, cmd_id=outcome.cmd_id, fw=outcome.version, reason=outcome.reason)

    # --- housekeeping ------------------------------------------------------------------------

    def _check_certificate(self) -> None:
        """At start and daily: warn from 30 days before this station's certificate expires."""
        self._cert_checked = self._clock()
        notice = certificate_notice(getattr(self.identity, "not_after", None), self.time.utc())
        if notice is not None:
            log.log(*notice)

    def _chores(self) -> None:
        if self._clock() - self._cert_checked >= CERT_CHECK_EVERY_S:
            self._check_certificate()
        synced = self.hw.clock_sync.synchronised()
        if synced != self.state.clock_synced:
            self._process(ev.ClockSyncChanged(synced))
        if self._healthy():
            self.notifier.watchdog()
        self._report_update()
        self._report_update_request()

    def _healthy(self) -> bool:
        """The watchdog's question: are the camera and uplink threads alive? (Online or not.)"""
        return self.worker.alive(max_silence_s=10.0) and self.uplink.alive

    # --- from other threads --------------------------------------------------------------

    def _wiped(self, report: WipeReport) -> None:
        self.worker.forget_codes()
        self._observe(
            {
                "kind": "wipe",
                "trigger": report.trigger,
                "count": report.count,
                "capture_ids": list(report.capture_ids),
                "in_progress": report.in_progress,
            }
        )
