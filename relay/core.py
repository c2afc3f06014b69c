"""The relay's decisions, free of sockets: one message in, acknowledgements out.

``RelayCore.handle(topic, payload)`` classifies a message by its topic (DESIGN §5),
reassembles captures, opens them with the sealing module (DESIGN §4 order), hands
them to every sink and returns the acks to publish. The network side
(``clinicam.relay.service``) only moves bytes.

Decisions, in short: ``stored`` only after every sink returned (refs by sink name);
``retry`` for any sink failure — a record system that is down, refuses a token or
does not know the patient (without a quarantine sink) must never lose a photo;
``rejected`` with a closed-set reason only when the capture can never be opened.
Acks go to the ack topic of the device named in the topic, which the broker's ACL
ties to the publisher's certificate; a ``ResponseTopic`` is never trusted.
Log lines carry device ids, capture ids, reason codes and sizes — never payloads,
and never an exception's text (it could quote a patient's name back from a PACS).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections import Counter, OrderedDict
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any

from clinicam.common.errors import ConfigError, SinkUnknownPatient, TopicError
from clinicam.protocol import certprofile
from clinicam.protocol.acks import Ack
from clinicam.protocol.event_acks import EVENT_ID, EventAck
from clinicam.protocol.manifest import parse_manifest_message, verify_event
from clinicam.protocol.reasons import OpenError, PrePolicyCertificate, SinkError
from clinicam.protocol.recipient import RecipientPrivateKey
from clinicam.protocol.sealing import OpenedCapture, open_capture
from clinicam.protocol.topics import DEFAULT_PREFIX, Topics
from clinicam.relay.audit import AuditLog
from clinicam.relay.ledger import Filed, Ledger
from clinicam.relay.metrics import RelayMetrics
from clinicam.relay.partition import Partition
from clinicam.relay.ratelimit import Buckets
from clinicam.relay.reassembly import CapacityExceeded, Complete, Reassembler
from clinicam.relay.records import StatusBoard
from clinicam.relay.sinks import Sink
from cryptography import x509

log = logging.getLogger(__name__)

# How many refused captures (parts dropped for want of room) are remembered so that
# their manifest, not each part, gets the one ``retry``/``too-large`` answer.
REFUSED_MEMORY = 4096
# How many recent event ids per station are remembered, so that an event arriving twice
# (queued by the broker for the relay's session and re-sent by the station) is logged once.
SEEN_EVENTS = 256


def top_counts(counts: Mapping[str, int], n: int = 3) -> str:
    """``"a (12), b (3)"``: who caused a batch of drops, for one summary log line."""
    top = sorted(counts.items(), key=lambda kv: -kv[1])[:n]
    return ", ".join(f"{d} ({c})" for d, c in top)


class RelayCore:
    """Everything the relay decides, for the stations of its partition."""

    def __init__(self, *, ca_cert: x509.Certificate | Sequence[x509.Certificate],
                 recipients: Sequence[RecipientPrivateKey],
                 sinks: Sequence[Sink], quarantine: Sink | None = None,
                 crl: x509.CertificateRevocationList | None = None,
                 topic_prefix: str = DEFAULT_PREFIX, partition: Partition | None = None,
                 reassembler: Reassembler | None = None, ledger: Ledger | None = None,
                 board: StatusBoard | None = None, audit: AuditLog | None = None,
                 metrics: RelayMetrics | None = None,
                 utc: Callable[[], datetime] | None = None,
                 legacy_until: datetime | None = None,
                 chain: Sequence[x509.Certificate] = (),
                 crls: Sequence[x509.CertificateRevocationList] = ()) -> None:
        if not sinks:
            raise ConfigError("the relay needs at least one sink to file captures into")
        self.ca_cert, self.recipients, self.crl = ca_cert, list(recipients), crl
        # Every root of ``[identity] ca``: two while a CA rotation overlaps (issue 17).
        self.roots = [ca_cert] if isinstance(ca_cert, x509.Certificate) else list(ca_cert)
        # Two-tier sites: the issuing CA(s) and every CRL of crl.pem (root's and issuing CA's).
        # ``crls`` may be a live view (build.WatchedCrls): a CRL replaced on disk applies to
        # the next capture, without a restart.
        self.chain, self.crls = tuple(chain), crls
        self.sinks, self.quarantine = list(sinks), quarantine
        self.topics = Topics(topic_prefix)
        self.partition = partition if partition is not None else Partition()
        self.reassembler = reassembler if reassembler is not None else Reassembler()
        self.ledger = ledger if ledger is not None else Ledger()
        self.board = board if board is not None else StatusBoard(None)
        self.audit = audit if audit is not None else AuditLog(None)
        self.metrics = metrics if metrics is not None else RelayMetrics()
        self._utc = utc
        # Pre-policy station certificates are stations until then (certprofile).
        self.legacy_until = legacy_until
        self._pre_policy_seen: set[str] = set()
        self._refused_seen: set[tuple[str, str]] = set()
        self._pending_voids: set[tuple[str, str]] = set()
        self._said_retained: set[str] = set()
        self._refused: OrderedDict[tuple[str, str], None] = OrderedDict()
        self._log_budget = Buckets(rate=1.0, burst=20.0)  # rejection log lines per station
        self._unlogged: dict[str, int] = {}
        self._seen_events: dict[str, OrderedDict[str, None]] = {}

    # -- dispatch -------------------------------------------------------------------
    def handle(self, topic: str, payload: bytes, retained: bool = False) -> list[Ack | EventAck]:
        """Act on one message; return the acks to publish (possibly none).

        A *retained* capture part, manifest or event is a replay the broker hands every
        new subscriber (DESIGN §5): it is counted and ignored, and said once per kind.
        """
        try:
            parsed = self.topics.parse(topic)
        except TopicError:
            parsed = None
        if parsed is None or parsed.kind not in ("part", "manifest", "status", "event"):
            self.board.count("ignored-topic")
            log.warning("ignored a message on a topic of unknown shape (%d bytes)", len(payload))
            return []
        device, cid = parsed.device, parsed.capture_id
        if not self.partition.owns(device):
            return []
        if retained and parsed.kind != "status":
            self._ignore_retained(parsed.kind)
            return []
        if cid is None:
            return self._station_message(device, parsed.kind, payload)
        if certprofile.is_reserved(device):
            return self._not_a_station(device, cid, parsed.part is None)
        try:
            if parsed.part is not None:
                done = self._part(device, cid, parsed.part, payload)
            else:
                return [*self._manifest(device, cid, payload)]
        except OpenError as exc:
            return [self._reject(device, cid, exc.reason)]
        except CapacityExceeded:
            # No log line and no ack per refused part (a flood would fill the log and the
            # flooder's ack queue): the capture is remembered and its manifest answers
            # ``retry``/``too-large`` once; its station re-sends it later.
            self.board.count("refused-buffer-full")
            if parsed.part is not None:
                self._remember_refused((device, cid))
                return []
            return [self._decide(Ack(device, cid, "retry", "too-large"))]
        return [*self._file(done)] if done is not None else []

    def _not_a_station(self, device: str, cid: str, manifest: bool) -> list[Ack | EventAck]:
        """A capture on a service identity's topic: never reassembled, never filed."""
        if not manifest:
            self.board.count("refused-non-station")
            return []
        return [self._reject(device, cid, "identity")]

    def sweep(self) -> list[Ack | EventAck]:
        """Give up on stale incomplete captures (asking for a re-send) and retry voids."""
        acks: list[Ack | EventAck] = []
        timed_out, evicted = self.reassembler.sweep(), self.reassembler.take_evicted()
        for dropped, reason in [*((d, "incomplete-timeout") for d in timed_out),
                                *((d, "too-large") for d in evicted)]:
            if dropped.had_manifest:
                acks.append(self._decide(
                    Ack(dropped.device, dropped.capture_id, "retry", reason)))
        self.board.count("dropped-incomplete", len(timed_out))
        self.board.count("dropped-evicted", len(evicted))
        if timed_out or evicted:  # one line per sweep, however many (DESIGN §5 fairness)
            log.warning("reassembly: dropped %d incomplete capture(s) (too old, or parts lost "
                        "before their manifest) and evicted %d for other stations; most from %s",
                        len(timed_out), len(evicted),
                        top_counts(Counter(d.device for d in (*timed_out, *evicted))))
        if self._unlogged:
            unlogged, self._unlogged = self._unlogged, {}
            log.warning("%d more rejection(s) not logged one by one; most from %s "
                        "(counted as rejected-<reason>)", sum(unlogged.values()), top_counts(unlogged))
        for device, cid in sorted(self._pending_voids):
            self._void_in_sinks(device, cid)
        self.audit.retry()
        self.board.health("audit", self.audit.health())
        return acks

    def _ignore_retained(self, kind: str) -> None:
        self.board.count(f"ignored-retained-{kind}")
        if kind not in self._said_retained:
            self._said_retained.add(kind)
            log.warning("ignoring retained %s messages: they are broker replays, not new "
                        "(counted as ignored-retained-%s; said once)", kind, kind)

    # -- captures -----------------------------------------------------------------------
    def _part(self, device: str, cid: str, index: int, payload: bytes) -> Complete | None:
        if self.ledger.get(device, cid) is not None:
            return None  # already filed: the manifest that follows gets the same refs
        if (device, cid) in self._refused:
            self.board.count("refused-buffer-full")
            return None  # a part of a capture already refused: its manifest answers
        return self.reassembler.add_part(device, cid, index, payload)

    def _remember_refused(self, key: tuple[str, str]) -> None:
        self._refused[key] = None
        self._refused.move_to_end(key)
        while len(self._refused) > REFUSED_MEMORY:
            self._refused.popitem(last=False)

    def _manifest(self, device: str, cid: str, payload: bytes) -> list[Ack]:
        if self._refused.pop((device, cid), False) is None:
            self.reassembler.discard((device, cid))
            return [self._decide(Ack(device, cid, "retry", "too-large"))]
        digest = hashlib.sha256(payload).hexdigest()
        filed = self.ledger.get(device, cid)
        if filed is not None:
            self.reassembler.discard((device, cid))
            if filed.manifest_sha256 == digest:
                self.board.count("re-acknowledged")
                self.metrics.duplicates.inc()
                return [self._decide(Ack(device, cid, "stored", None, dict(filed.refs)))]
            return [self._reject(device, cid, "duplicate-conflict")]
        m, _ = parse_manifest_message(payload)
        if m["size"] > self.reassembler.max_station_bytes:
            raise OpenError("too-large", "capture larger than a station's reassembly budget")
        done = self.reassembler.add_manifest(device, cid, payload, m["parts"])
        return self._file(done) if done is not None else []

    def _file(self, done: Complete) -> list[Ack]:
        device, cid = done.device, done.capture_id
        try:
            opened = open_capture(done.manifest, done.parts, topic_device=device,
                                  topic_capture_id=cid, ca_cert=self.ca_cert,
                                  recipients=self.recipients, crl=self.crl,
                                  chain=self.chain, crls=self.crls,
                                  now=self._utc() if self._utc else None,
                                  legacy_until=self.legacy_until)
        except PrePolicyCertificate:
            # Probably a real station not yet renewed: never 'rejected' (it would drop
            # the photo), never filed either. The admin renews it or sets the grace period.
            self.reassembler.discard((device, cid))
            self.board.count("refused-pre-policy-certificate")
            if device not in self._pre_policy_seen:  # once per station: it re-sends with back-off
                self._pre_policy_seen.add(device)
                log.error("station %s: its certificate predates the station profile; renew it "
                          "('clinicam provision renew') or set [relay] legacy_station_certs_until — "
                          "its captures are answered retry/identity until then", device)
            return [self._decide(Ack(device, cid, "retry", "identity"))]
        except OpenError as exc:
            return [self._reject(device, cid, exc.reason)]
        except ConfigError:
            log.error("capture %s/%s: relay configuration fault (CRL?); asking for a re-send",
                      device, cid)
            return [self._decide(Ack(device, cid, "retry", None))]
        refs = self._store(opened)
        if isinstance(refs, str):
            return [self._decide(Ack(device, cid, "retry", refs))]
        digest = hashlib.sha256(done.manifest).hexdigest()
        self.ledger.record(Filed(device, cid, digest, refs, str(opened.manifest["cert"])))
        self.board.count("stored")
        return [self._decide(Ack(device, cid, "stored", None, refs), limited=False)]

    def _store(self, opened: OpenedCapture) -> dict[str, str] | str:
        """Every sink's reference, or the reason code of the first failure.

        Sinks that can tell (``check_patient``, e.g. FHIR) are asked first, so an
        unknown patient's photo goes only to quarantine, never into a PACS.
        """
        try:
            for sink in self.sinks:
                check = getattr(sink, "check_patient", None)
                if check is not None:
                    check(opened)
        except SinkUnknownPatient:
            return self._quarantine(opened)
        except SinkError as exc:
            log.warning("capture %s: sink %s cannot check the patient (%s)",
                        opened.capture_id, sink.name, exc.reason)
            return exc.reason
        refs: dict[str, str] = {}
        for sink in self.sinks:
            try:
                refs[sink.name] = sink.store(opened)
            except SinkError as exc:
                log.warning("capture %s: sink %s failed (%s)", opened.capture_id, sink.name,
                            exc.reason)
                return exc.reason
            except SinkUnknownPatient:
                return self._quarantine(opened, refs)
            except Exception as exc:  # a sink bug must not stop the relay or lose the photo
                log.error("capture %s: sink %s raised %s", opened.capture_id, sink.name,
                          type(exc).__name__)
                return "sink-unavailable"
        return refs

    def _quarantine(self, opened: OpenedCapture,
                    stored: dict[str, str] | None = None) -> dict[str, str] | str:
        """File an unknown patient's capture in quarantine: ``stored``, never dropped."""
        if self.quarantine is None:
            log.warning("capture %s: patient unknown to the record and no quarantine sink",
                        opened.capture_id)
            return "sink-refused"
        try:
            qref = self.quarantine.store(opened)
        except SinkError as exc:
            return exc.reason
        self.board.count("quarantined")
        self.metrics.quarantined.inc()
        refs = {s.name: (stored or {}).get(s.name, "quarantined") for s in self.sinks}
        return {**refs, self.quarantine.name: qref}

    def _reject(self, device: str, cid: str, reason: str) -> Ack:
        self.reassembler.discard((device, cid))
        self.board.count(f"rejected-{reason}")
        if self._log_budget.take(device):
            log.warning("capture %s/%s rejected: %s", device, cid, reason)
        else:  # a station sending junk in a loop: summarised by the next sweep
            self._unlogged[device] = self._unlogged.get(device, 0) + 1
        return self._decide(Ack(device, cid, "rejected", reason))

    def _decide(self, ack: Ack, limited: bool = True) -> Ack:
        self.audit.decision(ack.device, ack.capture_id, ack.status, ack.reason, limited=limited)
        self.metrics.decision(ack.status, ack.reason)
        return ack

    # -- status and events -------------------------------------------------------------
    def _station_message(self, device: str, leaf: str, payload: bytes) -> list[Ack | EventAck]:
        if certprofile.is_reserved(device):
            # Status and events are not signed: the broker's ACL ties the topic to the
            # publisher's CN, and a service identity (operator-*, relay-*) is never a
            # station — so it is neither listed nor audited as one (DESIGN §3.5).
            self.board.count("refused-non-station")
            if (device, leaf) not in self._refused_seen:  # once: a flood must not flood the log
                self._refused_seen.add((device, leaf))
                log.warning("refused %s message on a service identity's topic (%s): not a station",
                            leaf, device)
            return []
        try:
            obj = json.loads(payload)
        except (ValueError, UnicodeDecodeError, RecursionError):
            obj = None
        if not isinstance(obj, dict):
            self.board.count("malformed-station-message")
            if self._log_budget.take(device):
                log.warning("station %s: malformed %s message (%d bytes)", device, leaf, len(payload))
            return []
        if leaf == "status":
            self.board.station(device, obj)
            return []
        event_id = obj.get("event_id")
        if not (isinstance(event_id, str) and EVENT_ID.fullmatch(event_id)):
            event_id = None
        elif not self._first_sighting(device, event_id):
            self.board.count("events-repeated")
            return [EventAck(device, event_id)]  # logged already: just confirm again
        self.audit.station_event(device, obj)
        if obj.get("event") == "void":
            self._void(device, obj)
        return [EventAck(device, event_id)] if event_id else []

    def _first_sighting(self, device: str, event_id: str) -> bool:
        seen = self._seen_events.setdefault(device, OrderedDict())
        if event_id in seen:
            return False
        seen[event_id] = None
        if len(seen) > SEEN_EVENTS:
            seen.popitem(last=False)
        return True

    def _void(self, device: str, event: Mapping[str, Any]) -> None:
        cid = event.get("capture_id")
        filed = self.ledger.get(device, cid) if isinstance(cid, str) else None
        if filed is None:
            log.warning("station %s: void for a capture this relay did not file", device)
            return
        try:
            cert = x509.load_pem_x509_certificate(filed.cert_pem.encode("ascii"))
            verify_event(event, cert)
        except (OpenError, ValueError):
            log.warning("station %s: void for capture %s not validly signed", device, filed.capture_id)
            self.audit.decision(device, filed.capture_id, "void-refused", "signature")
            return
        self._pending_voids.add((device, filed.capture_id))
        self._void_in_sinks(device, filed.capture_id)

    def _void_in_sinks(self, device: str, cid: str) -> None:
        filed = self.ledger.get(device, cid)
        names = set(filed.refs) if filed else set()
        sinks = [*self.sinks, *([self.quarantine] if self.quarantine else [])]
        try:
            for sink in sinks:
                if sink.name in names:
                    sink.void(device, cid)
        except SinkError as exc:
            log.warning("capture %s: void failed in a sink (%s); will retry", cid, exc.reason)
            return
        self._pending_voids.discard((device, cid))
        self.audit.decision(device, cid, "voided", None, limited=False)
        self.metrics.decision("voided", None)
