"""No PHI on the wire or in logs (DESIGN §3.1), with positive controls (DESIGN §9)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
from test_delivery_support import eventually, jpeg_like, make_core, make_station, start_relay

CANARY = "CANARY-PATIENT-7Q4X9"
MARKER = b"IMAGE-MARKER-5e1b0c7a9d"


def leaks(blob: bytes) -> list[str]:
    """Which canaries ``blob`` holds: the one scanner used for absence and presence."""
    found = []
    if CANARY.encode() in blob:
        found.append("patient id")
    if MARKER in blob:
        found.append("image marker")
    return found


def test_no_phi_on_the_wire_or_in_logs(site: Any, broker: Any, mqtt_client: Any,
                                       tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    watcher = mqtt_client(site.admin)
    assert watcher.probe.subscribe("#").value < 0x80  # admin-test reads everything
    relay = start_relay(site, broker.port, make_core(site, tmp_path))
    station = make_station(site, "station-a", broker.port)
    try:
        image = jpeg_like(400_000, seed=11, marker=MARKER)
        cid = station.capture(image, patient=CANARY)
        station.wait_stored([cid])
        station.uplink.publish_event("session-closed", session="1" * 32, count=1)
        station.uplink.send_void(cid)
        eventually(lambda: any(d.get("decision") == "voided" for d in relay.core.audit.lines)
                   and any(d.get("event") == "session-closed" for d in relay.core.audit.lines))
    finally:
        station.uplink.stop()
        relay.stop()
    seen = list(watcher.probe.messages.queue)
    kinds = {m.topic.rsplit("/", 1)[-1] if "/part/" not in m.topic else "part" for m in seen}
    assert {"part", "manifest", "ack", "status", "event"} <= kinds  # the watcher saw it all
    for msg in seen:
        assert leaks(msg.topic.encode()) == [], msg.topic
        assert leaks(bytes(msg.payload)) == [], msg.topic
        props = msg.properties
        for name in ("ResponseTopic", "CorrelationData", "UserProperty", "ContentType"):
            value = getattr(props, name, None) if props is not None else None
            assert value is None or leaks(repr(value).encode()) == []
    assert leaks(caplog.text.encode()) == []
    for path in (tmp_path / "audit.jsonl", tmp_path / "status.json", tmp_path / "ledger.jsonl"):
        assert path.exists() and leaks(path.read_bytes()) == [], path.name
    # positive controls: the same scanner finds both where they must be...
    archive = tmp_path / "archive" / "station-a"
    assert leaks((archive / f"{cid}.json").read_bytes()) == ["patient id"]
    assert leaks((archive / f"{cid}.jpg").read_bytes()) == ["image marker"]
    assert (archive / f"{cid}.void").exists()
    # ...and in a log line that deliberately carries them
    logging.getLogger("test.control").warning("control %s %s", CANARY, MARKER.decode())
    assert leaks(caplog.text.encode()) == ["patient id", "image marker"]
