"""The relay's MQTT client reads every packet already received per wake-up (issue 13 §2).

paho's own loop reads one packet per ``select()``: behind a flood, the broker's queue for
the relay overflowed and dropped other stations' messages. Fed whole PUBLISH packets
on a socket pair, one ``loop_read`` of ``DrainingClient`` delivers all of them; paho's
stock client (the positive control of the count) delivers one.
"""

from __future__ import annotations

import socket
import sys
import threading
from collections.abc import Iterator

import paho.mqtt.client as mqtt
import pytest
from clinicam.relay import netloop
from clinicam.relay.netloop import BATCH, DrainingClient
from paho.mqtt.enums import CallbackAPIVersion


def publish_packet(topic: str, payload: bytes) -> bytes:
    """An MQTT 5 PUBLISH at QoS 0 (no PUBACK to write), as the broker sends it."""
    name = topic.encode()
    body = len(name).to_bytes(2, "big") + name + b"\x00" + payload  # no properties
    assert len(body) < 128
    return bytes([0x30, len(body)]) + body


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    a, b = socket.socketpair()
    a.setblocking(False)
    yield a, b
    a.close()
    b.close()


def received(cls: type[mqtt.Client], pair: tuple[socket.socket, socket.socket], n: int) -> list[str]:
    client = cls(CallbackAPIVersion.VERSION2, client_id="relay-1", protocol=mqtt.MQTTv5)
    got: list[str] = []
    client.on_message = lambda _c, _u, msg: got.append(msg.topic)
    ours, broker = pair
    client._sock = ours  # the connected socket paho would have made
    # numbered topics by hand on purpose: only their order matters here, not §5's shapes
    broker.sendall(b"".join(publish_packet(f"clinicam/v1/s/status/{i}", b"{}") for i in range(n)))
    client.loop_read()
    return got


def test_one_read_delivers_every_waiting_packet(pair: tuple[socket.socket, socket.socket]) -> None:
    assert received(DrainingClient, pair, 50) == [f"clinicam/v1/s/status/{i}" for i in range(50)]


def test_control_paho_reads_one_packet_per_wake_up(pair: tuple[socket.socket, socket.socket]) -> None:
    assert len(received(mqtt.Client, pair, 50)) == 1


def test_a_read_is_bounded_so_writes_and_keepalives_get_their_turn(
        pair: tuple[socket.socket, socket.socket]) -> None:
    assert len(received(DrainingClient, pair, BATCH + 10)) == BATCH


def test_the_switch_interval_is_only_ever_shortened() -> None:
    before = sys.getswitchinterval()
    try:
        sys.setswitchinterval(0.005)
        netloop.favour_network_thread()
        assert sys.getswitchinterval() == pytest.approx(netloop.SWITCH_INTERVAL_S)
        sys.setswitchinterval(0.0002)
        netloop.favour_network_thread()
        assert sys.getswitchinterval() == pytest.approx(0.0002)
    finally:
        sys.setswitchinterval(before)


def test_acks_queued_while_reading_do_not_wake_the_loop_but_wait_for_its_write(
        pair: tuple[socket.socket, socket.socket]) -> None:
    """A PUBACK per message used to cost a wake-up ``send`` on paho's socket pair."""
    client = DrainingClient(CallbackAPIVersion.VERSION2, client_id="relay-1", protocol=mqtt.MQTTv5)
    wake_r, wake_w = socket.socketpair()
    wake_r.setblocking(False)
    client._sockpairR, client._sockpairW = wake_r, wake_w
    client._thread = threading.Thread()  # as under loop_start(): paho then writes from its loop only
    ours, broker = pair
    client._sock = ours
    body = b"\x00\x03a/b" + (7).to_bytes(2, "big") + b"\x00{}"  # QoS 1, packet id 7
    broker.sendall(bytes([0x32, len(body)]) + body)
    client.loop_read()
    assert client.want_write()  # the PUBACK waits for the loop's write ...
    client.loop_write()
    broker.setblocking(False)
    assert broker.recv(100) == bytes([0x40, 2]) + (7).to_bytes(2, "big")  # (the PUBACK)
    with pytest.raises(BlockingIOError):
        wake_r.recv(10)  # ... without a wake-up byte
    assert client._sockpairW is wake_w  # restored for other threads' publishes
    client.publish("x/y", b"", qos=1)  # control: another thread's publish does wake it
    assert wake_r.recv(10)
    wake_r.close()
    wake_w.close()
