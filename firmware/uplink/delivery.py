"""The uplink's delivery state machine, free of sockets and threads.

It decides what to publish and when; ``clinicam.firmware.uplink.client`` feeds it broker events and
does the publishing. Everything time- or chance-dependent (the ack deadline, the
back-off with jitter) uses the injected ``clock`` and ``rng``, so tests drive it
exactly.

Per capture: parts 1..n and part 0 go out with at most ``window`` QoS 1 messages in
flight (the smaller of ``max_inflight`` and the broker's ``ReceiveMaximum``); the
manifest goes last, only after every part's PUBACK succeeded. Then the capture waits
for the relay's ack on ``P/D/ack``: ``stored`` removes it from the vault, ``rejected``
removes it with an audit event, ``retry`` or silence past ``ack_timeout_s`` puts it
back after an exponential back-off with jitter. A PUBACK reason code >= 0x80 is a
refusal, not a delivery (paho's ``is_published()`` says True either way). A part that
cannot fit the broker's ``MaximumPacketSize`` is a configuration error: the capture
stays in the vault, untouched, until a connection with a larger limit.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from clinicam.firmware.workflow.events import (
    CaptureRejected,
    CaptureRetryScheduled,
    CaptureSent,
    CaptureStored,
    FaultReported,
    UplinkEvent,
)
from clinicam.protocol.acks import Ack, AckStatus
from clinicam.protocol.reasons import Reason
from clinicam.protocol.topics import DEFAULT_PREFIX, Topics

log = logging.getLogger(__name__)

PUBACK_FAILURE = 0x80


Payload = bytes | bytearray | memoryview  # a part: sealed parts are views of one buffer


class CaptureLike(Protocol):
    @property
    def capture_id(self) -> str: ...
    @property
    def manifest(self) -> bytes: ...
    @property
    def parts(self) -> Sequence[Payload]: ...


class VaultLike(Protocol):
    """The vault operations delivery needs (``clinicam.firmware.capture.vault.Vault``)."""

    @property
    def pending_count(self) -> int: ...
    @property
    def pending_bytes(self) -> int: ...

    def take_next(self) -> Any: ...
    def next_due(self) -> float | None: ...
    def retry(self, capture_id: str, not_before: float) -> bool: ...
    def requeue_in_flight(self) -> list[str]: ...
    def ack(self, capture_id: str) -> bool: ...
    def remove(self, capture_id: str) -> bool: ...
    def ids(self) -> list[str]: ...
    def expire(self) -> list[str]: ...


# publish(topic, payload, response) -> message id; ``response`` is the manifest's
# (ResponseTopic, CorrelationData). Raises ``ConnectionError`` when not connected.
Publish = Callable[[str, Payload, tuple[str, bytes] | None], int]


def _varint_len(n: int) -> int:
    return 1 if n < 128 else 2 if n < 16384 else 3 if n < 2097152 else 4


def publish_packet_size(topic: str, payload_len: int, properties_len: int = 0) -> int:
    """Bytes of an MQTT 5 QoS 1 PUBLISH packet, as the broker's limit counts them."""
    remaining = 2 + len(topic.encode()) + 2 + _varint_len(properties_len) + properties_len
    remaining += payload_len
    return 1 + _varint_len(remaining) + remaining


def response_properties_len(response_topic: str) -> int:
    """Size of the manifest's ResponseTopic + 16-byte CorrelationData properties."""
    return (1 + 2 + len(response_topic.encode())) + (1 + 2 + 16)


@dataclass
class _Sending:
    capture: Any
    queue: list[tuple[str, Payload]]  # (topic, payload) not yet published
    inflight: set[int] = field(default_factory=set)
    manifest_mid: int | None = None


class DeliveryEngine:
    """Sends the vault's captures and reacts to PUBACKs, acks and time."""

    def __init__(self, *, vault: VaultLike, device: str, publish: Publish,
                 emit: Callable[[UplinkEvent], None], topic_prefix: str = DEFAULT_PREFIX,
                 max_inflight: int = 8, ack_timeout_s: float = 60.0,
                 retry_min_s: float = 2.0, retry_max_s: float = 300.0,
                 clock: Callable[[], float] = time.monotonic,
                 rng: random.Random | None = None) -> None:
        if not 1 <= max_inflight <= 65535:
            raise ValueError(f"max_inflight must be 1..65535, got {max_inflight}")
        self.vault, self.device, self._publish, self._emit = vault, device, publish, emit
        self.topics = Topics(topic_prefix)
        self.max_inflight, self.ack_timeout_s = max_inflight, ack_timeout_s
        self.retry_min_s, self.retry_max_s = retry_min_s, retry_max_s
        self._clock, self._rng = clock, rng or random.Random()
        self.connected = False
        self.window = max_inflight
        self.max_packet: int | None = None
        self._sending: _Sending | None = None
        self._mids: dict[int, str] = {}
        self._awaiting: dict[str, float] = {}  # capture id -> ack deadline
        self._waiting: set[str] = set()  # backing off in the vault (its not_before)
        self._attempts: dict[str, int] = {}
        self._blocked: set[str] = set()  # cannot fit the broker's packet limit
        self.misconfigured = False
        self.held = False  # no relay serves us: start nothing new (DESIGN §5 relay presence)

    @property
    def ack_topic(self) -> str:
        return self.topics.ack(self.device)

    @property
    def inflight(self) -> frozenset[int]:
        """Message ids published and not yet acknowledged by the broker (PUBACK)."""
        return frozenset(self._mids)

    # -- connection ---------------------------------------------------------------
    def connected_with(self, receive_maximum: int, max_packet: int | None) -> None:
        """A CONNACK arrived: adopt its limits and start (again) from a clean slate."""
        self.connected = True
        self.window = max(1, min(self.max_inflight, receive_maximum))
        self.max_packet = max_packet
        self.misconfigured = False
        self.pump()

    def disconnected(self) -> None:
        """Everything half-sent, unacknowledged or blocked goes back to be sent whole again.

        Blocked captures are retried on the next connection because its broker may
        advertise a larger packet limit; with the same limit they are blocked (and
        reported) once more, once per connection — never a resend loop.
        """
        self.connected = False
        self.reset()
        self.vault.requeue_in_flight()

    def reset(self) -> None:
        """Forget every capture in hand (after a wipe, or with the connection)."""
        self._sending = None
        self._awaiting.clear()
        self._mids.clear()
        self._blocked.clear()

    # -- the pipeline ---------------------------------------------------------------
    def hold(self, held: bool) -> None:
        """Start no new capture while no relay is there (the one being sent finishes)."""
        self.held = held
        self.pump()

    def resend_now(self) -> list[str]:
        """A relay came back: every capture awaiting an ack or backing off is due now.

        Without this they would wait for their ack timeout or back-off (tens of
        seconds) although the relay that could answer is there again.
        """
        now, due = self._clock(), []
        for cid in [*self._awaiting, *sorted(self._waiting)]:
            if self.vault.retry(cid, now):
                due.append(cid)
        self._waiting.update(self._awaiting)  # still ours: a late ack for one is taken
        self._awaiting.clear()
        self.pump()
        return due

    def pump(self) -> None:
        """Start the next capture if idle, and fill the in-flight window."""
        while self.connected:
            if self._sending is None and self.held:
                return
            if self._sending is None and not self._start_next():
                return
            sending = self._sending
            if sending is None:
                continue  # that capture was blocked; look at the next one
            if not sending.queue or len(sending.inflight) >= self.window:
                return
            topic, payload = sending.queue.pop(0)
            if self._send(sending, topic, payload, None) is None:
                return

    def _start_next(self) -> bool:
        capture = self.vault.take_next()
        if capture is None:
            return False
        cid = capture.capture_id
        self._waiting.discard(cid)
        parts = [(self.topics.part(self.device, cid, i), p) for i, p in enumerate(capture.parts)]
        if not self._fits(cid, parts, capture.manifest):
            return True  # blocked; try the next capture
        self._sending = _Sending(capture, parts)
        return True

    def _fits(self, cid: str, parts: list[tuple[str, Payload]], manifest: bytes) -> bool:
        if self.max_packet is None:
            return True
        props = response_properties_len(self.ack_topic)
        sizes = [publish_packet_size(t, len(p)) for t, p in parts]
        sizes.append(publish_packet_size(self.topics.manifest(self.device, cid), len(manifest), props))
        if max(sizes) <= self.max_packet:
            return True
        log.error("capture %s: a part of %d bytes exceeds the broker's maximum packet size %d; "
                  "lower [sealing] chunk_size or raise the broker's max_packet_size",
                  cid, max(sizes), self.max_packet)
        self._blocked.add(cid)
        self.misconfigured = True
        self._emit(FaultReported("too-large", cid))
        return False

    def _send(self, sending: _Sending, topic: str, payload: Payload,
              response: tuple[str, bytes] | None) -> int | None:
        try:
            mid = self._publish(topic, payload, response)
        except ConnectionError:
            self.disconnected()
            return None
        sending.inflight.add(mid)
        self._mids[mid] = sending.capture.capture_id
        return mid

    def puback(self, mid: int, reason_code: int) -> None:
        """A PUBACK (or a PUBLISH that paho gave up on) for message ``mid``."""
        cid = self._mids.pop(mid, None)
        sending = self._sending
        if cid is None or sending is None or sending.capture.capture_id != cid:
            return  # from an attempt already abandoned
        sending.inflight.discard(mid)
        if reason_code >= PUBACK_FAILURE:
            log.warning("capture %s: broker refused a publish (reason code %d)", cid, reason_code)
            self._sending = None
            self._schedule(cid, "publish-refused")
        elif mid == sending.manifest_mid:
            self._sending = None
            self._awaiting[cid] = self._clock() + self.ack_timeout_s
            self._emit(CaptureSent(cid))
        elif not sending.queue and not sending.inflight:
            if cid not in self.vault.ids():  # wiped meanwhile: its parts are zeros now
                self._sending = None
                self.pump()
                return
            manifest_topic = self.topics.manifest(self.device, cid)
            response = (self.ack_topic, bytes.fromhex(cid))
            sending.manifest_mid = self._send(
                sending, manifest_topic, sending.capture.manifest, response)
        self.pump()

    # -- acknowledgements -------------------------------------------------------------
    def ack(self, payload: bytes) -> None:
        """A message on our own ack topic; anything not matching is ignored."""
        parsed = Ack.parse(payload, self.device)
        if parsed is None:
            log.warning("ignored a malformed ack")
            return
        cid, status, reason, ref = parsed.capture_id, parsed.status, parsed.reason, parsed.ref
        if not self._known(cid):
            log.info("ignored an ack for capture %s, which is not outstanding", cid)
            return
        if status == AckStatus.RETRY:
            if cid in self._awaiting:
                del self._awaiting[cid]
                self._schedule(cid, "retry")
            return
        self._forget(cid)
        if status == AckStatus.STORED:
            self.vault.ack(cid)
            self._emit(CaptureStored(cid, ref or {}, self.vault.pending_count))
        else:
            self.vault.remove(cid)
            self._emit(CaptureRejected(cid, reason or Reason.MALFORMED))
        self.pump()

    def _known(self, cid: str) -> bool:
        sending = self._sending is not None and self._sending.capture.capture_id == cid
        return sending or cid in self._awaiting or cid in self._waiting

    def forget(self, cid: str) -> None:
        """Drop a capture that left the vault some other way (expiry)."""
        self._forget(cid)
        self.pump()

    def _forget(self, cid: str) -> None:
        self._awaiting.pop(cid, None)
        self._waiting.discard(cid)
        self._attempts.pop(cid, None)
        if self._sending is not None and self._sending.capture.capture_id == cid:
            self._sending = None
            self._mids = {m: c for m, c in self._mids.items() if c != cid}

    # -- time -----------------------------------------------------------------------
    def tick(self) -> float | None:
        """Handle ack timeouts and due re-sends; return seconds until the next deadline."""
        now = self._clock()
        for cid, deadline in list(self._awaiting.items()):
            if deadline <= now:
                del self._awaiting[cid]
                self._schedule(cid, "ack-timeout")
        self.pump()
        deadlines = list(self._awaiting.values())
        idle = self.connected and not self.held and self._sending is None
        due = self.vault.next_due() if idle else None
        if due is not None:
            deadlines.append(due)  # a capture backing off in the vault becomes due then
        return max(0.0, min(deadlines) - now) if deadlines else None

    def _schedule(self, cid: str, why: str) -> None:
        attempt = self._attempts.get(cid, 0) + 1
        self._attempts[cid] = attempt
        ceiling = min(self.retry_max_s, self.retry_min_s * 2 ** min(attempt - 1, 30))
        delay = ceiling * (0.5 + 0.5 * self._rng.random())  # jitter: stations desynchronise
        if self.vault.retry(cid, self._clock() + delay):
            self._waiting.add(cid)
            self._emit(CaptureRetryScheduled(cid, attempt, delay, why))

