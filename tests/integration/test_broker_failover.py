"""Broker HA as the README documents it: a warm standby Mosquitto with the same
certificate and configuration takes over the broker's address; stations and the relay
reconnect by themselves and re-send what was not acknowledged.

On one machine the "address" is the loopback port: the primary is killed (no clean
shutdown, no state handed over) and the standby, started from the site's generated
configuration in its own directory, binds the same port — what DNS or a floating IP
does between two hosts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from clinicam.protocol.presence import presence_topic
from clinicam.protocol.topics import Topics
from test_delivery_support import RelayProcess, jpeg_like, make_station, next_json, relay_toml

PREFIX = "clinicam/v1"


def test_warm_standby_broker_takes_over_and_nothing_is_lost(
        site: Any, broker: Any, broker_factory: Any, mqtt_client: Any, tmp_path: Path) -> None:
    archive = tmp_path / "archive"
    relay = RelayProcess(relay_toml(site, broker.port, tmp_path / "relay", archive, n=1, worker=0, workers=1))
    station = make_station(site, "station-a", broker.port, ack_timeout_s=3.0, presence_settle_s=0.5)
    try:
        first = station.capture(jpeg_like(30_000, seed=1))
        station.wait_stored([first])
        broker.kill()  # the primary dies: no will, no retained message, no session survives
        during = [station.capture(jpeg_like(30_000, seed=2 + i)) for i in range(3)]
        standby = broker_factory("standby", port=site.port)  # same certificate, same ACL, same address
        station.wait_stored(during)
        watcher = mqtt_client(site.admin, broker=standby)
        watcher.subscribe(presence_topic(PREFIX, "relay-1"), qos=1)
        assert next_json(watcher, presence_topic(PREFIX, "relay-1"))["state"] == "online"  # presence re-published
        watcher.subscribe(Topics(PREFIX).status("station-a"), qos=1)
        assert next_json(watcher, Topics(PREFIX).status("station-a"))["state"] == "online"
    finally:
        station.uplink.stop()
        assert relay.stop() == 0
    assert sorted(p.stem for p in (archive / "station-a").glob("*.jpg")) == sorted([first, *during])
    assert b"Traceback" not in relay.log
