"""From a validated ``RelayConfig`` to a running ``Relay``: the only place that maps keys.

Each sink type is built by the module that implements it: ``directory`` here; the
others by a ``from_config(cfg) -> Sink`` function in their module (``sinks.dicomweb``,
``sinks.dimse``, ``sinks.fhir``), imported only when configured so a directory-only
relay does not need pydicom.
"""

from __future__ import annotations

import importlib
import logging
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, overload

from clinicam.common.errors import ConfigError
from clinicam.protocol import chain as trust
from clinicam.protocol import revocation as rv
from clinicam.protocol.recipient import load_recipient_private
from clinicam.provisioning import pki
from clinicam.relay.audit import AuditLog
from clinicam.relay.certificates import HeldCertificate, relay_certificates
from clinicam.relay.config import LEGACY_STATUS_FILE, RelayConfig, RelaySection
from clinicam.relay.core import RelayCore
from clinicam.relay.inbox import FairInbox
from clinicam.relay.ledger import Ledger
from clinicam.relay.metrics import RelayMetrics, TimedSink, provisioned_stations
from clinicam.relay.partition import Partition
from clinicam.relay.reassembly import Reassembler
from clinicam.relay.records import StatusBoard
from clinicam.relay.service import Relay
from clinicam.relay.sinks import Sink
from clinicam.relay.sinks.directory import DirectorySink
from cryptography import x509

log = logging.getLogger(__name__)

SINK_MODULES = {
    "dicomweb": "clinicam.relay.sinks.dicomweb",
    "dimse": "clinicam.relay.sinks.dimse",
    "fhir": "clinicam.relay.sinks.fhir",
}


def build_sink(cfg: Any) -> Sink:
    """One configured ``[[sinks]]`` entry as a ``Sink``."""
    if cfg.type == "directory":
        return DirectorySink(Path(cfg.path), name=cfg.name)
    module = importlib.import_module(SINK_MODULES[cfg.type])
    factory = getattr(module, "from_config", None)
    if factory is None:
        raise ConfigError(f"sinks: type {cfg.type!r} is not available in this version")
    sink: Sink = factory(cfg)
    return sink


class WatchedCrls(Sequence[x509.CertificateRevocationList]):
    """Every CRL of ``[identity] crl``, re-read whenever the file changes.

    A new ``crl.pem`` put in place (atomically, as ``clinicam provision`` writes it) takes
    effect for the next capture: a revoked station is refused from then on, without a
    relay restart. A file that has become unreadable keeps the last good CRLs and says so.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._stamp: int | None = None
        self._crls: list[x509.CertificateRevocationList] = []
        self._lock = threading.Lock()
        self._refresh()
        if not self._crls:
            raise ConfigError(f"[identity] crl: {path} is not a readable PEM CRL")

    def adopt(self, crls: Sequence[x509.CertificateRevocationList], author: x509.Name | None = None) -> None:
        """Take newer CRLs (a verified bulletin from ``P/_site/crl`` or ``crl-root``): per issuer
        the higher CRL number wins; the author's older CRL, or one that drops an entry, raises
        ``RevocationError``; another issuer's older copy is ignored."""
        with self._lock:
            self._crls = rv.successor(self._crls, crls, author=author)

    def _refresh(self) -> list[x509.CertificateRevocationList]:
        with self._lock:
            try:
                stamp = self.path.stat().st_mtime_ns
                if stamp != self._stamp:
                    self._stamp = stamp
                    self._crls = rv.successor(self._crls, trust.load_crls(self.path.read_bytes(),
                                                                          f"[identity] crl: {self.path}"))
            except rv.RevocationError as exc:
                log.warning("relay: %s not taken (%s)", self.path, exc)
            except (OSError, ConfigError):
                if self._stamp is not None:
                    log.warning("relay: %s unreadable; keeping the CRLs loaded before", self.path)
            return self._crls

    def __len__(self) -> int:
        return len(self._refresh())

    def __iter__(self) -> Iterator[x509.CertificateRevocationList]:
        return iter(self._refresh())

    @overload
    def __getitem__(self, i: int) -> x509.CertificateRevocationList: ...
    @overload
    def __getitem__(self, i: slice) -> Sequence[x509.CertificateRevocationList]: ...
    def __getitem__(self, i: int | slice) -> Any:
        return self._refresh()[i]


class CrlFeed:
    """The relay's reader of ``P/_site/crl`` and ``P/_site/crl-root``: verify, adopt the CRLs."""

    def __init__(self, crls: WatchedCrls, store: trust.TrustStore) -> None:
        self.crls, self.store = crls, store

    def __call__(self, payload: bytes) -> None:
        try:
            bulletin = rv.parse_bulletin(payload, self.store)
            self.crls.adopt(bulletin.crls, bulletin.signer)
        except rv.RevocationError as exc:
            log.warning("relay: CRL bulletin not taken: %s", exc)
            return
        log.info("relay: CRL %d in force (revoked: %s)", bulletin.number, ", ".join(bulletin.revoked) or "none new")


def _crls(path: str) -> Sequence[x509.CertificateRevocationList]:
    """Every CRL of ``[identity] crl`` (a two-tier site's holds the root's and the issuing CA's)."""
    return WatchedCrls(Path(path)) if path else []


def _roots(path: str) -> list[x509.Certificate]:
    """``[identity] ca``: the site's root(s) — two while a CA rotation overlaps (issue 17)."""
    try:
        return trust.load_certs(Path(path).read_bytes(), f"[identity] ca: {path}")
    except OSError as exc:
        raise ConfigError(f"[identity] ca: {path} cannot be read: copy the site's ca.pem") from exc


def _chain(path: str) -> list[x509.Certificate]:
    """``[identity] chain``: the issuing CA certificate(s) of a two-tier site (``chain.pem``)."""
    if not path:
        return []
    try:
        return trust.load_certs(Path(path).read_bytes(), f"[identity] chain: {path}")
    except OSError as exc:
        raise ConfigError(f"[identity] chain: {path} cannot be read: copy the site's chain.pem") from exc


def build_core(config: RelayConfig) -> RelayCore:
    """The relay's decisions, wired from configuration."""
    ident, rel, ra, au = config.identity, config.relay, config.reassembly, config.audit
    try:
        recipients = [load_recipient_private(Path(p).read_bytes()) for p in ident.recipient_keys]
    except OSError as exc:
        raise ConfigError("[identity] recipient_keys: a key file cannot be read") from exc
    quarantine = config.quarantine_sink
    state = Path(rel.state_dir)
    metrics = RelayMetrics()
    board = StatusBoard(Path(rel.status_file))
    # every station seen before a restart or reboot stays listed; after an upgrade, once,
    # from where the file was before (a relay.toml that sets its own path is left alone)
    moved = rel.status_file_moved or rel.status_file == RelaySection().status_file
    board.load(fallback=LEGACY_STATUS_FILE if moved else None)
    return RelayCore(
        ca_cert=_roots(ident.ca),
        recipients=recipients,
        crls=_crls(ident.crl),
        chain=_chain(ident.chain),
        sinks=[TimedSink(build_sink(s), metrics) for s in config.store_sinks],
        quarantine=TimedSink(build_sink(quarantine), metrics) if quarantine is not None else None,
        topic_prefix=rel.topic_prefix,
        # behind a sticky $share broker, the broker does the partitioning
        partition=Partition() if rel.shared_group else Partition(rel.worker, rel.workers,
                                                                  tuple(rel.standby_for)),
        reassembler=Reassembler(max_bytes=ra.max_bytes, max_age_s=ra.max_age_s,
                                max_part_bytes=ra.max_part_bytes, max_parts=ra.max_parts,
                                max_station_bytes=ra.max_station_bytes),
        ledger=Ledger(state / "ledger.jsonl"),
        board=board,
        audit=AuditLog(Path(rel.audit_log), rate_per_s=au.rate_per_s, burst=au.burst,
                       max_pending=au.max_pending_lines, rotate_bytes=au.rotate_bytes,
                       rotate_age_s=au.rotate_days * 86400, keep=au.keep),
        metrics=metrics,
        legacy_until=rel.legacy_until,
    )


def build_relay(config: RelayConfig) -> Relay:
    """A ``Relay`` ready to ``start()``."""
    ident = config.identity
    Path(config.relay.state_dir).mkdir(parents=True, exist_ok=True)
    if config.relay.status_file_moved:
        log.warning("relay: [relay] status_file names %s, the old place (lost at reboot): using %s; "
                    "remove the line from relay.toml", LEGACY_STATUS_FILE, config.relay.status_file)
    cert = pki.load_cert(Path(ident.cert))
    client_id = pki.common_name(cert.subject, ident.cert)
    rel, core = config.relay, build_core(config)
    # The registrar (issuing CA) and the admin machine (root) publish CRL bulletins; adopt them live (issue 17).
    feed = (CrlFeed(core.crls, trust.TrustStore(core.roots, core.chain))
            if isinstance(core.crls, WatchedCrls) else None)
    held = [c for c in relay_certificates(ident) if isinstance(c, HeldCertificate)]
    core.metrics.certificates((c.role, c.name, c.not_after) for c in held)
    register = config.metrics.register
    inbox = FairInbox(core.topics.prefix, station_bytes=rel.inbox_station_bytes, total_bytes=rel.inbox_bytes)
    return Relay(core=core, host=config.broker.host, port=config.broker.port,
                 ca=ident.ca, cert=ident.cert, key=ident.key, client_id=client_id,
                 keepalive_s=config.broker.keepalive_s, shared_group=rel.shared_group,
                 metrics_listen=config.metrics.listen,
                 inventory=(lambda: provisioned_stations(register)) if register else list,
                 session_expiry_s=rel.session_expiry_s, inbox=inbox, crl_feed=feed)
