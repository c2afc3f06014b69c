"""The relay's MQTT client: paho's, reading everything already received per wake-up.

Why (issue 13 §2, measured): paho 2.x's network loop reads *one* packet per
``select()`` — ``loop_read`` ignores its argument and reads as many packets as there
are QoS 2 messages in flight, i.e. one. Each message then costs a ``select``, the
loop's bookkeeping and, in the relay, a fresh hand-over of the GIL from the worker
thread. Draining 9,000 queued QoS 1 messages over mTLS on this machine class: stock
9,300/s, draining 17,600/s; with a CPU-bound thread beside it (the relay's worker
under a flood) stock 1,700/s, draining 4,400/s. Below the ~8,000 messages/s one Python
flooder publishes, the broker's queue for the relay overflows and it drops the
*other* stations' messages too; each drop costs the control station an ack timeout.

``DrainingClient.loop_read`` reads until the socket (and its TLS buffer) has no whole
packet left, at most ``BATCH`` packets, so keepalives and writes still get their turn.
While it reads, the PUBACKs it queues do not wake its own ``select()`` through paho's
socket pair (a ``send`` system call per message: a fifth of the network thread's time
under a flood, by py-spy): the loop checks ``want_write()`` before every ``select``,
so they go out together right after the batch. Acks the worker publishes meanwhile are
queued the same way and leave with them. It relies on paho internals (``_packet_read``,
``_loop_rc_handle``, ``_sockpairW``, unchanged from 1.6 to 2.2); without them it
falls back to paho's own loop.
"""

from __future__ import annotations

import sys

import paho.mqtt.client as mqtt
from paho.mqtt.enums import MQTTErrorCode

BATCH = 256
# The relay's two busy threads (paho's network loop, the worker) share the GIL; at
# CPython's default 5 ms switch interval the network thread, woken by select(),
# waits up to 5 ms per wake-up behind a busy worker. 1 ms (measured: 1,400 -> 6,300
# messages/s read beside a busy thread) costs a few more switches, nothing else.
SWITCH_INTERVAL_S = 0.001
_INTERNALS = all(hasattr(mqtt.Client, name) for name in ("_packet_read", "_loop_rc_handle", "_packet_queue"))


class DrainingClient(mqtt.Client):
    """``paho.mqtt.client.Client`` whose network loop reads every waiting packet."""

    def loop_read(self, max_packets: int = 1) -> MQTTErrorCode:
        if not _INTERNALS or not hasattr(self, "_sockpairW"):  # a paho without them: its own loop
            return super().loop_read(max_packets)
        wake, self._sockpairW = self._sockpairW, None  # the loop writes after the batch anyway
        try:
            return self._read_batch()
        finally:
            if self._sockpairW is None and wake is not None and wake.fileno() >= 0:
                self._sockpairW = wake  # (unless paho replaced or closed it meanwhile)

    def _read_batch(self) -> MQTTErrorCode:
        for _ in range(BATCH):
            if self._sock is None:
                return MQTTErrorCode.MQTT_ERR_NO_CONN
            rc = self._packet_read()
            if rc > 0:
                return self._loop_rc_handle(rc)
            if rc == MQTTErrorCode.MQTT_ERR_AGAIN:  # nothing whole left to read
                return MQTTErrorCode.MQTT_ERR_SUCCESS
        return MQTTErrorCode.MQTT_ERR_SUCCESS


def favour_network_thread() -> None:
    """Shorten the GIL switch interval (process-wide; the relay process is its own)."""
    if sys.getswitchinterval() > SWITCH_INTERVAL_S:
        sys.setswitchinterval(SWITCH_INTERVAL_S)
