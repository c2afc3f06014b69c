"""The generated ACL on a real Mosquitto: each device only in its own tree (DESIGN §5).

Every refusal is shown next to the same client succeeding where it should, and the
admin watcher (reads ``#`` in the test ACL only) proves what reached the broker's
subscribers, so a denied publish is "not delivered", not just "not acknowledged".
"""

from __future__ import annotations

import queue

import pytest
from clinicam.protocol.topics import DEFAULT_PREFIX

P = DEFAULT_PREFIX  # ACL probes: topics spelled by hand on purpose (the broker's rules are the subject)
DENIED = 0x80  # MQTT 5: a PUBACK/SUBACK reason code at or above this is a failure


@pytest.fixture
def watcher(site, mqtt_client):
    """The admin-test identity subscribed to the whole clinicam tree."""
    w = mqtt_client(site.admin)
    assert w.probe.subscribe(f"{P}/#").value < DENIED
    return w.probe


def _drain_until(probe, topic: str, payload: bytes) -> list:
    """Messages the watcher got up to and including ``(topic, payload)``."""
    seen = []
    while True:
        msg = probe.next_message()
        seen.append((msg.topic, msg.payload))
        if (msg.topic, msg.payload) == (topic, payload):
            return seen


def test_device_writes_its_own_topics(site, mqtt_client, watcher):
    a = mqtt_client(site.device("station-a")).probe
    for topic in (f"{P}/station-a/capture/00ff/part/1", f"{P}/station-a/status", f"{P}/station-a/event"):
        assert a.publish(topic, b"x").value < DENIED
        msg = watcher.next_message()
        assert (msg.topic, msg.payload) == (topic, b"x")


def test_device_receives_its_ack_and_cmd_from_a_relay(site, mqtt_client):
    a = mqtt_client(site.device("station-a")).probe
    assert a.subscribe(f"{P}/station-a/ack").value < DENIED
    assert a.subscribe(f"{P}/station-a/cmd").value < DENIED
    relay = mqtt_client(site.relay(1)).probe
    for topic in (f"{P}/station-a/ack", f"{P}/station-a/cmd"):
        assert relay.publish(topic, b"{}").value < DENIED
        assert a.next_message().topic == topic


def test_relay_reads_every_device(site, mqtt_client):
    relay = mqtt_client(site.relay(2)).probe
    assert relay.subscribe(f"{P}/+/capture/#").value < DENIED
    b = mqtt_client(site.device("station-b")).probe
    assert b.publish(f"{P}/station-b/capture/01/manifest", b"m").value < DENIED
    assert relay.next_message().topic == f"{P}/station-b/capture/01/manifest"


@pytest.mark.parametrize("client_id", [None, "station-b"], ids=["own-id", "spoofed-id"])
def test_publish_into_another_device_tree_is_denied(site, mqtt_client, watcher, client_id):
    a = mqtt_client(site.device("station-a"), client_id=client_id).probe
    allowed, denied = f"{P}/station-a/event", f"{P}/station-b/event"
    assert a.publish(allowed, b"before").value < DENIED  # positive control
    assert _drain_until(watcher, allowed, b"before") == [(allowed, b"before")]

    rc = a.publish(denied, b"intruder")
    assert rc.value >= DENIED, rc  # 0x87 Not authorized

    # Same client, same connection, in order: whatever the broker delivered of the
    # denied publish would reach the watcher before this marker.
    assert a.publish(allowed, b"after").value < DENIED
    assert _drain_until(watcher, allowed, b"after") == [(allowed, b"after")]


@pytest.mark.parametrize(
    "topic",
    [
        f"{P}/station-b/capture/01/part/1",
        f"{P}/station-b/status",
        f"{P}/station-a/ack",
        f"{P}/station-a/cmd",
        f"{P}/other",
    ],
)
def test_device_cannot_write_outside_its_rights(site, mqtt_client, topic):
    a = mqtt_client(site.device("station-a")).probe
    assert a.publish(f"{P}/station-a/event", b"").value < DENIED  # positive control
    assert a.publish(topic, b"x").value >= DENIED


def test_device_cannot_read_another_device(site, mqtt_client):
    a = mqtt_client(site.device("station-a")).probe
    relay = mqtt_client(site.relay(1)).probe
    a.subscribe(f"{P}/station-b/ack")  # mosquitto may grant it; delivery is what matters
    assert a.subscribe(f"{P}/station-a/ack").value < DENIED
    assert relay.publish(f"{P}/station-b/ack", b"secret").value < DENIED
    assert relay.publish(f"{P}/station-a/ack", b"mine").value < DENIED  # positive control
    msg = a.next_message()
    assert (msg.topic, msg.payload) == (f"{P}/station-a/ack", b"mine")
    with pytest.raises(queue.Empty):
        a.messages.get_nowait()


def test_same_identity_takes_over_its_own_session(site, mqtt_client):
    """Positive control for the next test: a takeover is visible as a disconnect."""
    first = mqtt_client(site.device("station-b")).probe
    mqtt_client(site.device("station-b"))
    assert first.disconnected.wait(10)


def test_other_identity_cannot_take_over_a_session(site, mqtt_client):
    b = mqtt_client(site.device("station-b")).probe
    mqtt_client(site.device("station-a"), client_id="station-b")
    # A takeover is decided when the intruder's CONNECT is processed, before its
    # CONNACK; a round trip by the victim afterwards proves it is still connected.
    assert b.publish(f"{P}/station-b/status", b"{}").value < DENIED
    assert not b.disconnected.is_set()
