"""The registrar's decisions, free of sockets: a renewal request in, an answer out.

What it checks, in order, is docs/interfaces.md's "What the registrar checks": the
first failure answers ``refused`` with its reason and nothing is issued. The broker's
ACL already keeps other identities off ``P/D/renew``; these checks stand behind it, as
the relay's certificate-profile check stands behind the ACL for captures.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from clinicam.common.errors import ConfigError, TopicError
from clinicam.protocol import certprofile
from clinicam.protocol import chain as trust
from clinicam.protocol import renewal as rn
from clinicam.protocol.manifest import canonical, check_device_cert, verify
from clinicam.protocol.reasons import OpenError, PrePolicyCertificate
from clinicam.protocol.topics import DEFAULT_PREFIX, Topics
from clinicam.provisioning import pki
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Policy:
    """How generous the registrar is: validity of what it issues, and rate limits."""

    days: int = pki.DEFAULT_DAYS
    min_interval: timedelta = timedelta(days=1)  # per station, between two issuances
    max_per_day: int = 50  # site-wide, in any 24 hours


@dataclass
class Entry:
    """One decision in the journal (no PHI: ids, serials, times, codes, public certificates)."""

    at: str
    device: str
    req_id: str
    key_sha256: str
    outcome: str  # issued | refused | retry
    reason: str | None = None
    serial: str | None = None
    cert: str | None = None  # the issued chain, to answer a repeated request identically

    @property
    def when(self) -> datetime:
        return datetime.fromisoformat(self.at)


class Journal:
    """Append-only JSON lines; read back at start for rate limits and repeated requests."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.entries: list[Entry] = []
        if path is not None and path.exists():
            try:
                self.entries = [Entry(**json.loads(line)) for line in path.read_text().splitlines() if line]
            except (ValueError, TypeError) as exc:
                raise ConfigError(f"registrar journal {path} is damaged: move it aside and restart") from exc

    def add(self, entry: Entry) -> None:
        self.entries.append(entry)
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a") as f:
                f.write(json.dumps(asdict(entry), sort_keys=True) + "\n")

    def issued(self) -> list[Entry]:
        return [e for e in self.entries if e.outcome == "issued"]


class RegistrarCore:
    """``handle(topic, payload) -> (answer_topic, answer) | None``; counters in ``counts``."""

    def __init__(self, *, issuing_key: ec.EllipticCurvePrivateKey, issuing_cert: x509.Certificate,
                 trust_store: Callable[[], trust.TrustStore], journal: Journal, policy: Policy = Policy(),
                 topic_prefix: str = DEFAULT_PREFIX, utc: Callable[[], datetime] | None = None) -> None:
        self.key, self.issuing = issuing_key, issuing_cert
        self.trust_store, self.journal, self.policy = trust_store, journal, policy
        self.topics = Topics(topic_prefix)
        self._utc = utc or (lambda: datetime.now(UTC))
        self.counts: dict[str, int] = {}

    def handle(self, topic: str, payload: bytes) -> tuple[str, bytes] | None:
        try:
            parsed = self.topics.parse(topic)
        except TopicError:
            return None
        if parsed.kind != rn.REQUEST_LEAF:
            return None
        req_id = _loose_req_id(payload)
        try:
            answer = self._decide(parsed.device, payload)
        except rn.RenewalRefused as exc:
            self._count(f"refused-{exc.reason}")
            log.warning("registrar: %s renewal refused (%s)", parsed.device, exc.reason)
            if req_id is None:
                return None  # nothing to correlate an answer with
            self._journal(parsed.device, req_id, "", "refused", exc.reason)
            return self.topics.cert(parsed.device), rn.build_answer(req_id, "refused", reason=exc.reason)
        return self.topics.cert(parsed.device), answer

    # -- the checks ------------------------------------------------------------------------

    def _decide(self, device: str, payload: bytes) -> bytes:
        now = self._utc()
        req = rn.parse_request(payload)
        csr = _csr(req.csr_pem)
        # The new key names the request: a CSR re-made after a reboot has other signature bytes.
        csr_hash = _key_hash(csr)
        if req.device != device or _cn(csr.subject) != device:
            raise rn.RenewalRefused("identity", "topic, request and CSR name different devices")
        current = self._current(req, device, now)
        try:
            verify(canonical(req.body), req.sig, current.public_key())
        except OpenError:
            raise rn.RenewalRefused("signature", "the request is not signed by the current key") from None
        _check_csr(csr, current)
        repeat = next((e for e in self.journal.issued() if e.device == device and e.req_id == req.req_id
                       and e.key_sha256 == csr_hash), None)
        if repeat is not None:  # the station missed our answer: the same certificate again
            self._count("repeated")
            return rn.build_answer(req.req_id, "issued", cert_pem=repeat.cert)
        wait = self._rate_wait(device, now)
        if wait is not None:
            self._count("refused-rate-limited")
            self._journal(device, req.req_id, csr_hash, "retry", "rate-limited")
            return rn.build_answer(req.req_id, "retry", reason="rate-limited", retry_after_s=wait)
        return self._issue(req, csr, csr_hash, now)

    def _current(self, req: rn.RenewalRequest, device: str, now: datetime) -> x509.Certificate:
        try:
            named = _cn(x509.load_pem_x509_certificate(req.cert_pem.encode("ascii")).subject)
        except ValueError:
            raise rn.RenewalRefused("malformed", "cert is not a PEM certificate") from None
        if named != device:
            raise rn.RenewalRefused("identity", "the current certificate names another device")
        store = self.trust_store()
        try:
            cert = check_device_cert(req.cert_pem, device, list(store.roots), now=now,
                                     chain_certs=tuple(store.intermediates), crls=tuple(store.crls),
                                     legacy_until=now + timedelta(seconds=1))
        except PrePolicyCertificate:  # pragma: no cover - legacy_until admits them
            raise rn.RenewalRefused("identity", "pre-policy certificate") from None
        except OpenError as exc:
            if "revoked" in str(exc):
                raise rn.RenewalRefused("revoked", "the current certificate is revoked") from None
            reason = "identity" if exc.reason == "identity" else "certificate"
            raise rn.RenewalRefused(reason, str(exc)) from None
        # Renewal is how a pre-policy station gets the profile; a service never does.
        if certprofile.profile(cert) == "other":
            raise rn.RenewalRefused("identity", "not a station certificate")
        return cert

    def _rate_wait(self, device: str, now: datetime) -> int | None:
        issued = self.journal.issued()
        mine = [e.when for e in issued if e.device == device]
        if mine and now - max(mine) < self.policy.min_interval:
            return int((max(mine) + self.policy.min_interval - now).total_seconds()) + 1
        day = [e.when for e in issued if now - e.when < timedelta(days=1)]
        if len(day) >= self.policy.max_per_day:
            return int((min(day) + timedelta(days=1) - now).total_seconds()) + 1
        return None

    def _issue(self, req: rn.RenewalRequest, csr: x509.CertificateSigningRequest, csr_hash: str,
               now: datetime) -> bytes:
        left = (self.issuing.not_valid_after_utc - now).days
        days = min(self.policy.days, left)
        if days < 1:
            raise rn.RenewalRefused("unavailable", "the issuing CA is at its end: rotate it")
        key = csr.public_key()
        assert isinstance(key, ec.EllipticCurvePublicKey)  # _check_csr made sure
        cert = pki.issue(self.key, self.issuing, key, req.device, now=now, days=days, station=True)
        # Leaf, issuing CA, root: a station of a migrated site still holds the root as it
        # was before (same key and name, path length 0) and takes the re-issued one from here.
        root = next((r for r in self.trust_store().roots if r.subject == self.issuing.issuer), None)
        tail = pki.cert_pem(root) if root is not None else b""
        chain = (pki.cert_pem(cert) + pki.cert_pem(self.issuing) + tail).decode()
        self._journal(req.device, req.req_id, csr_hash, "issued", None, pki.serial_hex(cert.serial_number), chain)
        self._count("issued")
        log.info("registrar: %s renewed, serial %s, until %s", req.device, pki.serial_hex(cert.serial_number),
                 f"{cert.not_valid_after_utc:%Y-%m-%d}")
        return rn.build_answer(req.req_id, "issued", cert_pem=chain)

    def _journal(self, device: str, req_id: str, csr_hash: str, outcome: str, reason: str | None,
                 serial: str | None = None, cert: str | None = None) -> None:
        self.journal.add(Entry(self._utc().isoformat(), device, req_id, csr_hash, outcome, reason, serial, cert))

    def _count(self, name: str) -> None:
        self.counts[name] = self.counts.get(name, 0) + 1


def _key_hash(csr: x509.CertificateSigningRequest) -> str:
    der = csr.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(der).hexdigest()


def _loose_req_id(payload: bytes) -> str | None:
    try:
        obj = json.loads(payload)
    except ValueError:
        return None
    rid = obj.get("req_id") if isinstance(obj, dict) else None
    return rid if isinstance(rid, str) and len(rid) == 32 and all(c in "0123456789abcdef" for c in rid) else None


def _csr(pem: str) -> x509.CertificateSigningRequest:
    try:
        return x509.load_pem_x509_csr(pem.encode("ascii"))
    except ValueError:
        raise rn.RenewalRefused("malformed", "csr is not a PEM certificate request") from None


def _cn(name: x509.Name) -> str | None:
    cns = name.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    return cns[0].value if len(cns) == 1 and isinstance(cns[0].value, str) else None


def _check_csr(csr: x509.CertificateSigningRequest, current: x509.Certificate) -> None:
    if not csr.is_signature_valid:
        raise rn.RenewalRefused("signature", "the CSR's self-signature does not verify")
    key = csr.public_key()
    if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp256r1":
        raise rn.RenewalRefused("malformed", "the new key must be EC P-256")
    if key == current.public_key():
        raise rn.RenewalRefused("malformed", "the new key must differ from the current one")

