"""Floods for the fairness tests and the bench (issue 13 §2, DESIGN §10 flood row).

One station (the *flooder*, a raw MQTT client with a real station certificate) floods
the broker in one of four ways while another station (the *control*, the real uplink)
delivers captures through a ``clinicam relay run`` process with small, configured
bounds. ``FLOODS`` names each flood's message maker; ``Flood`` runs one in a thread.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from clinicam.protocol.topics import Topics
from paho.mqtt.enums import MQTTErrorCode

T = Topics()
MIB = 1024 * 1024

# The relay's bounds in these runs: small, so a flood exceeds them within seconds.
BOUNDS = {"inbox_bytes": 8 * MIB, "inbox_station_bytes": 2 * MIB,
          "max_bytes": 16 * MIB, "max_station_bytes": 4 * MIB}
# What CPython, paho, TLS buffers and the allocator's fragmentation add beyond what the
# budgets count (measured: ~10-20 MiB on this machine class).
SLACK = 32 * MIB
MEMORY_BOUND = BOUNDS["inbox_bytes"] + BOUNDS["max_bytes"] + SLACK

RELAY_EXTRA = (f"inbox_bytes = {BOUNDS['inbox_bytes']}\n"
               f"inbox_station_bytes = {BOUNDS['inbox_station_bytes']}\n")
RELAY_TAIL = f"""
[reassembly]
max_bytes = {BOUNDS['max_bytes']}
max_station_bytes = {BOUNDS['max_station_bytes']}

[audit]
rate_per_s = 20.0
burst = 100
"""

Maker = Callable[[str, int], tuple[str, bytes, bool]]
JUNK = bytes(range(256)) * 400  # 102400 bytes


def _incomplete(device: str, i: int) -> tuple[str, bytes, bool]:
    return T.part(device, f"{i:032x}", 0), JUNK, False


def _zero(device: str, i: int) -> tuple[str, bytes, bool]:
    return T.part(device, f"{i:032x}", i % 7), b"", False


def _rejected(device: str, i: int) -> tuple[str, bytes, bool]:
    """Parts no capture may have (index past ``max_parts``): each one is a rejection."""
    return T.part(device, f"{i:032x}", 100_000 + i % 7), b"", False


def _status(device: str, i: int) -> tuple[str, bytes, bool]:
    body = {"state": "online", "pending": i, "pending_bytes": 0, "uptime_s": i}
    return T.status(device), json.dumps(body).encode(), True


def _event(device: str, i: int) -> tuple[str, bytes, bool]:
    body = {"event": "ping", "at": "2026-01-01T00:00:00.000Z", "count": i}
    return T.event(device), json.dumps(body).encode(), False


# name -> (message maker, messages to send before the control starts)
FLOODS: dict[str, tuple[Maker, int]] = {
    "incomplete": (_incomplete, 250),  # 25 MB of parts without a manifest: > every budget
    "zero-byte": (_zero, 30_000),
    "rejected": (_rejected, 20_000),  # every part answered: the acks and log lines are bounded
    "status": (_status, 20_000),
    "event": (_event, 20_000),
}


class Flood:
    """Publishes ``maker``'s messages at QoS 1 as fast as the broker takes them."""

    def __init__(self, client: mqtt.Client, device: str, maker: Maker) -> None:
        self.client, self.device, self.maker = client, device, maker
        self.sent = 0
        self.started_at = self.stopped_at = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="flood", daemon=True)

    def start(self) -> Flood:
        self.started_at = time.monotonic()
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(60)
        self.stopped_at = time.monotonic()

    def wait_sent(self, n: int, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while self.sent < n:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise AssertionError(f"the flood sent only {self.sent} of {n} messages")
            self._stop.wait(0.05)  # a poll interval, not a delay the test relies on

    def _run(self) -> None:
        info = None
        while not self._stop.is_set():
            topic, payload, retain = self.maker(self.device, self.sent)
            info = self.client.publish(topic, payload, qos=1, retain=retain)
            if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
                return
            self.sent += 1
            if self.sent % 250 == 0:
                info.wait_for_publish(30)  # pace: never more than ~500 in paho's queue


def rss(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak) of a process, in bytes."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0]) * 1024
    return out


def relay_status(state: Path) -> dict[str, Any]:
    try:
        data: dict[str, Any] = json.loads((state / "status.json").read_text())
    except (OSError, ValueError):
        return {}
    return data
