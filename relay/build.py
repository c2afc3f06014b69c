"""From a validated ``RelayConfig`` to a running ``Relay``: the only place that maps keys.

Each sink type is built by the module that implements it: ``directory`` here; the
others by a ``from_config(cfg) -> Sink`` function in their module (``dicomweb_sink``,
``dimse_sink``, ``fhir_sink``), imported only when configured so a directory-only
relay does not need pydicom.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from clinicam.common.errors import ConfigError
from clinicam.protocol.recipient import load_recipient_private
from clinicam.provisioning import pki
from clinicam.relay.audit import AuditLog
from clinicam.relay.config import RelayConfig
from clinicam.relay.core import RelayCore
from clinicam.relay.inbox import FairInbox
from clinicam.relay.ledger import Ledger
from clinicam.relay.partition import Partition
from clinicam.relay.reassembly import Reassembler
from clinicam.relay.records import StatusBoard
from clinicam.relay.service import Relay
from clinicam.relay.sinks import Sink
from clinicam.relay.sinks.directory import DirectorySink
from cryptography import x509

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


def _crl(path: str) -> x509.CertificateRevocationList | None:
    if not path:
        return None
    try:
        return x509.load_pem_x509_crl(Path(path).read_bytes())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"[identity] crl: {path} is not a readable PEM CRL") from exc


def build_core(config: RelayConfig) -> RelayCore:
    """The relay's decisions, wired from configuration."""
    ident, rel, ra, au = config.identity, config.relay, config.reassembly, config.audit
    try:
        recipients = [load_recipient_private(Path(p).read_bytes()) for p in ident.recipient_keys]
    except OSError as exc:
        raise ConfigError("[identity] recipient_keys: a key file cannot be read") from exc
    quarantine = config.quarantine_sink
    state = Path(rel.state_dir)
    return RelayCore(
        ca_cert=pki.load_cert(Path(ident.ca)),
        recipients=recipients,
        crl=_crl(ident.crl),
        sinks=[build_sink(s) for s in config.store_sinks],
        quarantine=build_sink(quarantine) if quarantine is not None else None,
        topic_prefix=rel.topic_prefix,
        # behind a sticky $share broker, the broker does the partitioning
        partition=Partition() if rel.shared_group else Partition(rel.worker, rel.workers,
                                                                  tuple(rel.standby_for)),
        reassembler=Reassembler(max_bytes=ra.max_bytes, max_age_s=ra.max_age_s,
                                max_part_bytes=ra.max_part_bytes, max_parts=ra.max_parts,
                                max_station_bytes=ra.max_station_bytes),
        ledger=Ledger(state / "ledger.jsonl"),
        board=StatusBoard(Path(rel.status_file)),
        audit=AuditLog(Path(rel.audit_log), rate_per_s=au.rate_per_s, burst=au.burst,
                       max_pending=au.max_pending_lines, rotate_bytes=au.rotate_bytes,
                       rotate_age_s=au.rotate_days * 86400, keep=au.keep),
        legacy_until=rel.legacy_until,
    )


def build_relay(config: RelayConfig) -> Relay:
    """A ``Relay`` ready to ``start()``."""
    ident = config.identity
    Path(config.relay.state_dir).mkdir(parents=True, exist_ok=True)
    cert = pki.load_cert(Path(ident.cert))
    client_id = pki.common_name(cert.subject, ident.cert)
    rel, core = config.relay, build_core(config)
    inbox = FairInbox(core.prefix, station_bytes=rel.inbox_station_bytes, total_bytes=rel.inbox_bytes)
    return Relay(core=core, host=config.broker.host, port=config.broker.port,
                 ca=ident.ca, cert=ident.cert, key=ident.key, client_id=client_id,
                 keepalive_s=config.broker.keepalive_s, shared_group=rel.shared_group,
                 session_expiry_s=rel.session_expiry_s, inbox=inbox)
