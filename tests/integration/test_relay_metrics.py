"""The relay's Prometheus metrics, scraped by a real Prometheus (Debian's package).

``clinicam relay run`` (a child process, from its relay.toml with ``[metrics]``) serves
``/metrics``; a Prometheus started here scrapes it every second, and the test asks
Prometheus's HTTP API what a dashboard or an alert would see: a station going down
and coming back, a rejected capture under its reason code, a sink outage as retries,
a provisioned station that was never seen, and certificate end dates (the station's
from its status, the relay's own and its CA's) as the files say.
"""

from __future__ import annotations

import json
import time
import urllib.request
from pathlib import Path
from typing import Any

from clinicam.provisioning import pki
from clinicam.tools.brokerproc import LOOPBACK, free_port
from prometheus_server import Prometheus
from test_delivery_support import (
    RelayProcess,
    jpeg_like,
    make_station,
    next_json,
    relay_toml,
)

PREFIX = "clinicam/v1"
CANARY = "SYNTH-4815162342"


def metrics_relay(site: Any, port: int, state: Path, archive: Path, listen: str) -> RelayProcess:
    config = relay_toml(site, port, state, archive, n=1, worker=0, workers=1)
    with config.open("a") as f:
        f.write(f'\n[metrics]\nlisten = "{listen}"\nregister = "{site.site.register_path}"\n')
    return RelayProcess(config)


def test_prometheus_sees_stations_rejections_and_sink_outage(
        site: Any, broker: Any, mqtt_client: Any, tmp_path: Path) -> None:
    archive = tmp_path / "archive"
    archive.mkdir()  # the relay checks at start that its sink's folder exists
    (archive / "station-a").write_bytes(b"")  # a file where station-a's folder should be: the sink is down
    listen = f"{LOOPBACK}:{free_port()}"
    relay = metrics_relay(site, broker.port, tmp_path / "relay", archive, listen)
    prom = Prometheus(tmp_path / "prometheus", [listen])
    station = make_station(site, "station-a", broker.port, ack_timeout_s=5.0)
    try:
        up = 'clinicam_station_up{station="station-a"}'
        prom.wait_value(up, lambda v: v == 1.0, "station-a up")

        # certificate end dates, exactly the certificates' notAfter; days left as an alert computes it
        station_end = pki.load_cert(site.device("station-a").cert).not_valid_after_utc.timestamp()
        relay_end = pki.load_cert(site.relay(1).cert).not_valid_after_utc.timestamp()
        ca_end = pki.load_cert(site.ca_pem).not_valid_after_utc.timestamp()
        expiry = 'clinicam_station_certificate_expiry_timestamp_seconds{station="station-a"}'
        assert prom.value(expiry) == station_end
        own = "clinicam_relay_certificate_expiry_timestamp_seconds"
        assert {(r["metric"]["certificate"], r["metric"]["subject"]): float(r["value"][1])
                for r in prom.query(own)} == {("relay", "relay-1"): relay_end,
                                              ("site-ca", pki.common_name(pki.load_cert(site.ca_pem).subject,
                                                                          "ca")): ca_end}
        left = prom.value(f'({own}{{certificate="relay"}} - time()) / 86400')
        assert left is not None and abs(left - (relay_end - time.time()) / 86400) < 0.01

        # a sink outage shows as retries with the sink's reason code, and in the histogram
        cid = station.capture(jpeg_like(50_000, seed=1), patient=CANARY)
        retried = 'clinicam_relay_captures_retried_total{reason="sink-unavailable"}'
        prom.wait_value(retried, lambda v: v is not None and v >= 1, "retry counted")
        assert prom.value('clinicam_relay_sink_seconds_count{sink="archive",outcome="error"}') >= 1
        assert prom.value("clinicam_relay_captures_stored_total") == 0
        (archive / "station-a").unlink()  # the sink comes back; the station's re-send is stored
        station.wait_stored([cid])
        prom.wait_value("clinicam_relay_captures_stored_total", lambda v: v == 1.0, "stored counted")
        assert prom.value('clinicam_relay_sink_seconds_count{sink="archive",outcome="stored"}') == 1
        assert prom.value('clinicam_station_pending_captures{station="station-a"}') is not None

        # a rejected capture increments exactly its reason's label
        b = mqtt_client(site.device("station-b"))
        assert b.subscribe(f"{PREFIX}/station-b/ack", qos=1)[0] == 0
        bad = "ab" * 16
        b.probe.publish(f"{PREFIX}/station-b/capture/{bad}/manifest", b"not a manifest")
        ack = next_json(b, f"{PREFIX}/station-b/ack")
        assert (ack["status"], ack["reason"]) == ("rejected", "malformed")
        prom.wait_value('clinicam_relay_captures_rejected_total{reason="malformed"}', lambda v: v == 1.0)
        reasons = {r["metric"]["reason"] for r in prom.query("clinicam_relay_captures_rejected_total")}
        assert reasons == {"malformed"}

        # the station goes down and comes back
        station.uplink.stop()
        prom.wait_value(up, lambda v: v == 0.0, "station-a down")
        station = make_station(site, "station-a", broker.port)
        prom.wait_value(up, lambda v: v == 1.0, "station-a back")

        # inventory: station-b is provisioned but has never sent a status
        never = "clinicam_station_provisioned unless on(station) clinicam_station_last_seen_timestamp_seconds"
        unseen = {r["metric"]["station"] for r in prom.query(never)}
        assert "station-b" in unseen and "station-a" not in unseen
        assert prom.value("clinicam_relay_broker_connected") == 1.0

        with urllib.request.urlopen(f"http://{listen}/metrics", timeout=5) as r:
            exposition = r.read().decode()
    finally:
        station.uplink.stop()
        prom.stop()
        assert relay.stop() == 0
    # no PHI in any metric: the canary is in the archive (positive control), not in /metrics
    assert CANARY in json.dumps(json.loads((archive / "station-a" / f"{cid}.json").read_text()))
    assert CANARY not in exposition and "clinicam_station_up" in exposition
    assert b"Traceback" not in relay.log
