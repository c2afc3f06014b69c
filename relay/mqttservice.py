"""One MQTT connection and one worker thread: the frame of the site's small services.

The registrar and the broker agent each hold one mutual-TLS connection under their own
identity and act on what arrives. paho's network thread only queues the message; the
service's own thread decides (signing a certificate, reloading Mosquitto), so a slow
decision never stalls the connection's keepalive and decisions never run concurrently.
"""

from __future__ import annotations

import queue
import threading
from pathlib import Path
from typing import Any


class MqttService:
    """``start()``/``stop()`` around a connected client and the thread running ``_run``.

    Subclasses subscribe in ``_on_connect`` and take ``(topic, payload)`` jobs from
    ``self._jobs`` in ``_run`` until they get ``None``; ``_on_message`` queues every
    message unless overridden.
    """

    thread_name = "mqtt-service"

    def __init__(self, *, client_id: str, ca: str, cert: str, key: str,
                 host: str, port: int, keepalive_s: int) -> None:
        import paho.mqtt.client as mqtt  # the relay host's CLI imports paho only here
        from clinicam.provisioning.tlsctx import client_context
        from paho.mqtt.enums import CallbackAPIVersion

        self._jobs: queue.Queue[tuple[str, bytes] | None] = queue.Queue()
        self._address = (host, port, keepalive_s)
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
        self.client.tls_set_context(client_context(Path(ca), Path(cert), Path(key)))
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=self.thread_name, daemon=True)
        self._thread.start()
        host, port, keepalive_s = self._address
        self.client.connect_async(host, port, keepalive=keepalive_s)
        self.client.loop_start()

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
        self._jobs.put(None)
        if self._thread is not None:
            self._thread.join(5)

    def _on_connect(self, client: Any, userdata: Any, flags: Any, rc: Any, props: Any) -> None:
        raise NotImplementedError

    def _on_message(self, client: Any, userdata: Any, msg: Any) -> None:
        self._jobs.put((msg.topic, bytes(msg.payload)))

    def _run(self) -> None:
        raise NotImplementedError
