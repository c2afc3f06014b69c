"""What the relay tells a monitoring system: Prometheus metrics, served by ``prometheus_client``.

Two kinds of numbers. The relay's own counters (captures stored, rejected and retried
by reason code, voids, quarantined, duplicates, sink latency) are kept as they happen.
Everything about stations is read at scrape time from what the relay already knows (the
status board) and, when the relay is given the site register, from the list of stations
that were provisioned: a station that never showed up is as visible as one that went
down. Labels are station ids, sink names and closed-set reason codes, never anything
from a payload (DESIGN §3: no PHI in metric labels).

The endpoint is off unless ``[metrics] listen`` names an address; the example
configuration binds it to loopback.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

log = logging.getLogger(__name__)

SINK_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class BoardLike(Protocol):
    """What the metrics read of the relay's station-state store."""

    def snapshot(self) -> dict[str, Any]: ...


def stamp_seconds(stamp: object) -> float | None:
    """An RFC 3339 stamp as Unix seconds; None when absent or malformed."""
    if not isinstance(stamp, str):
        return None
    try:
        return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def provisioned_stations(register: Path | str) -> list[str]:
    """Device ids the site register lists as issued and not revoked (ids only, no PHI).

    A register that cannot be read yields no inventory and one warning, never a
    failed scrape: monitoring must keep working while an admin edits the site.
    """
    try:
        data = json.loads(Path(register).read_text(encoding="utf-8"))
        records = data["certificates"]
        return sorted({r["id"] for r in records
                       if r.get("kind") == "device" and r.get("revoked_at") is None})
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        log.warning("metrics: the site register %s cannot be read; no inventory", register)
        return []


class StationCollector(Collector):
    """Per-station gauges and the inventory, computed from the board at every scrape."""

    def __init__(self, board: BoardLike, inventory: Callable[[], Iterable[str]] = list) -> None:
        self.board, self.inventory = board, inventory

    def collect(self) -> Iterator[Metric]:
        stations: dict[str, dict[str, Any]] = self.board.snapshot().get("stations", {})
        fams = {name: GaugeMetricFamily(f"clinicam_station_{name}", doc, labels=["station"])
                for name, doc in _STATION_GAUGES.items()}
        info = GaugeMetricFamily("clinicam_station_firmware_info", "firmware version the station reports",
                                 labels=["station", "version"])
        for device, st in sorted(stations.items()):
            for name, value in _station_values(st).items():
                if value is not None:
                    fams[name].add_metric([device], value)
            if isinstance(st.get("fw"), str):
                info.add_metric([device, st["fw"]], 1)
        provisioned = GaugeMetricFamily(
            "clinicam_station_provisioned",
            "1 for every station the site register lists (given [metrics] register); "
            "with no clinicam_station_last_seen_timestamp_seconds it was never seen",
            labels=["station"])
        for device in self.inventory():
            provisioned.add_metric([device], 1)
        yield from fams.values()
        yield info
        yield provisioned


_STATION_GAUGES = {
    "up": "1 while the station's retained status says online, else 0",
    "last_seen_timestamp_seconds": "when the relay last received the station's status",
    "pending_captures": "sealed captures waiting in the station's vault",
    "pending_bytes": "bytes of sealed captures waiting in the station's vault",
    "certificate_expiry_timestamp_seconds": "the station certificate's notAfter",
    "certificate_renewal_failed": "1 while the station's last certificate renewal failed (it retries with "
                                  "back-off), 0 for any other renewal state",
    "clock_synced": "1 when the station's clock is synchronised",
    "relay_seen": "1 when the station sees a relay serving it (relay presence)",
}


def _station_values(st: dict[str, Any]) -> dict[str, float | None]:
    def flag(value: object) -> float | None:
        return float(value) if isinstance(value, bool) else None

    def number(value: object) -> float | None:
        return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None

    relay, renewal = st.get("relay"), st.get("renewal")
    return {
        "up": 1.0 if st.get("state") == "online" else 0.0,
        "last_seen_timestamp_seconds": stamp_seconds(st.get("seen")),
        "pending_captures": number(st.get("pending")),
        "pending_bytes": number(st.get("pending_bytes")),
        "certificate_expiry_timestamp_seconds": stamp_seconds(st.get("cert_not_after")),
        "certificate_renewal_failed": float(renewal.get("state") == "failed") if isinstance(renewal, dict) else None,
        "clock_synced": flag(st.get("clock_synced")),
        "relay_seen": None if relay is None else float(relay == "online"),
    }


class RelayMetrics:
    """The relay's counters and histograms in their own registry (one per relay object)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.stored = Counter("clinicam_relay_captures_stored", "captures stored in every sink", registry=r)
        self.rejected = Counter("clinicam_relay_captures_rejected", "captures rejected, by reason code",
                                ["reason"], registry=r)
        self.retried = Counter("clinicam_relay_captures_retried", "retry acks sent, by reason code",
                               ["reason"], registry=r)
        self.voids = Counter("clinicam_relay_voids", "captures marked entered-in-error in the sinks",
                             registry=r)
        self.quarantined = Counter("clinicam_relay_captures_quarantined",
                                   "captures filed in quarantine (patient unknown to the record)", registry=r)
        self.duplicates = Counter("clinicam_relay_duplicates",
                                  "repeats of already stored captures, re-acknowledged", registry=r)
        self.sink_seconds = Histogram("clinicam_relay_sink_seconds", "time a sink took to store a capture",
                                      ["sink", "outcome"], buckets=SINK_BUCKETS, registry=r)
        self._server: Any = None

    # -- what the core reports ----------------------------------------------------------
    def decision(self, status: str, reason: str | None) -> None:
        """One acknowledgement decided (``stored``, ``rejected``, ``retry``) or a void done."""
        label = reason or "none"
        if status == "stored":
            self.stored.inc()
        elif status == "rejected":
            self.rejected.labels(label).inc()
        elif status == "retry":
            self.retried.labels(label).inc()
        elif status == "voided":
            self.voids.inc()

    def gauges(self, **read: Callable[[], float]) -> None:
        """Gauges read at scrape time, e.g. ``relay_inbox_depth=lambda: q.qsize()``."""
        self.registry.register(_Gauges({f"clinicam_{k}": f for k, f in read.items()}))

    def stations(self, board: BoardLike, inventory: Callable[[], Iterable[str]] = list) -> None:
        self.registry.register(StationCollector(board, inventory))

    def certificates(self, held: Iterable[tuple[str, str, float]]) -> None:
        """``clinicam_relay_certificate_expiry_timestamp_seconds{certificate, subject}``: the
        notAfter of each (role, CN, notAfter) this relay holds (its client certificate, its
        CAs), as loaded at start — the ones it presents and trusts until restarted."""
        fam = GaugeMetricFamily("clinicam_relay_certificate_expiry_timestamp_seconds",
                                "notAfter of a certificate this relay holds (certificate: relay, site-ca, "
                                "issuing-ca; subject: its CN)", labels=["certificate", "subject"])
        ends: dict[tuple[str, str], float] = {}
        for role, name, not_after in held:  # the same role and name twice (a CA rotation): the first to end
            ends[(role, name)] = min(not_after, ends.get((role, name), not_after))
        for (role, name), not_after in sorted(ends.items()):
            fam.add_metric([role, name], not_after)
        self.registry.register(_Fixed([fam]))

    # -- the endpoint ---------------------------------------------------------------------
    def serve(self, listen: str) -> tuple[str, int]:
        """Serve ``/metrics`` on ``host:port``; returns the bound address (port 0 = any free)."""
        host, _, port = listen.rpartition(":")
        host = host.strip("[]") or "127.0.0.1"
        server, _thread = start_http_server(int(port), addr=host, registry=self.registry)
        self._server = server
        bound = server.server_address
        log.info("relay: metrics on http://%s:%d/metrics", bound[0], bound[1])
        return str(bound[0]), int(bound[1])

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


class _Fixed(Collector):
    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> Iterator[Metric]:
        yield from self.families


class _Gauges(Collector):
    def __init__(self, read: dict[str, Callable[[], float]]) -> None:
        self.read = read

    def collect(self) -> Iterator[Metric]:
        for name, fn in self.read.items():
            yield GaugeMetricFamily(name, _GAUGE_DOCS.get(name, name), value=float(fn()))


_GAUGE_DOCS = {
    "clinicam_relay_reassembly_bytes": "bytes of incomplete captures held in memory",
    "clinicam_relay_inbox_depth": "messages received and not yet handled",
    "clinicam_relay_audit_log_healthy": "1 while the audit log can be written",
    "clinicam_relay_broker_connected": "1 while connected and subscribed to the broker",
    "clinicam_relay_active": "1 while this worker serves its share (0: standing by)",
}


class TimedSink:
    """A sink that reports how long each ``store`` took; everything else passes through."""

    def __init__(self, sink: Any, metrics: RelayMetrics, clock: Callable[[], float] = time.monotonic) -> None:
        self._sink, self._metrics, self._clock = sink, metrics, clock
        self.name: str = sink.name

    @property
    def inner(self) -> Any:
        """The sink being timed."""
        return self._sink

    def store(self, capture: Any) -> str:
        start, outcome = self._clock(), "error"
        try:
            ref: str = self._sink.store(capture)
            outcome = "stored"
            return ref
        finally:
            self._metrics.sink_seconds.labels(self.name, outcome).observe(self._clock() - start)

    def void(self, device: str, capture_id: str) -> None:
        self._sink.void(device, capture_id)

    def __getattr__(self, name: str) -> Any:  # check_patient and sink-specific extras
        return getattr(self._sink, name)
