"""One remote command to one station (DESIGN §5 ``P/D/cmd``), and the station's answer.

``clinicam relay cmd`` sends ``identify``, ``wipe`` or ``ping`` with an *operator*
identity (``clinicam provision operator``, CN ``operator-NAME``): the broker's ACL lets it
write ``P/+/cmd`` and read ``P/+/event`` and ``P/+/status``, and nothing else. A relay
certificate would also do, but it may write ``P/+/ack`` (a forged "stored" ack makes a
station drop an undelivered photo) and read every capture: least privilege says
operator. The payload comes from ``clinicam.protocol.commands.Command.payload``,
next to the station's parser, so what we send is exactly what the station accepts.

Order matters: subscribe to ``P/D/event`` (and the retained ``P/D/status``) *before*
publishing, or a fast station's answer could arrive before we listen. The command is
non-retained (a retained ``wipe`` would be replayed at every reconnect; the station
ignores retained commands anyway) and short-lived: after ``expires_at`` the station
ignores it, so a command that did not reach a station in time is harmless.

The broker forces the client id to the certificate's CN (``use_username_as_clientid``).
Sent with the identity of a running ``clinicam relay run`` (the fallback when no
operator certificate is given), the command takes over that relay's session for a
moment: the relay reconnects after its back-off (stations re-send anything
unacknowledged, nothing is lost) and in turn ends this connection. An operator's CN is
its own, so it takes nothing over.
"""

from __future__ import annotations

import json
import secrets
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import paho.mqtt.client as mqtt
from clinicam.common.errors import BrokerUnreachable, ClinicamError, UplinkError
from clinicam.protocol.commands import MAX_LIFETIME_S, Command
from clinicam.protocol.status import utc_stamp
from clinicam.protocol.topics import Topics
from clinicam.provisioning import pki
from clinicam.provisioning.tlsctx import client_context
from clinicam.relay.config import RelayConfig
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode

if TYPE_CHECKING:
    from clinicam.protocol.commands import UpdateOrder

CONNECT_TIMEOUT_S = 10.0
SESSION_TAKEN_OVER = 0x8E


class BrokerRefused(UplinkError):
    """The broker refused the connection, the subscription or the publish (TLS, ACL)."""


class StationSilent(ClinicamError, TimeoutError):
    """The command went out but the station did not answer within the timeout."""

    def __init__(self, sent: Sent, waited_s: float, last_state: str | None) -> None:
        self.sent, self.waited_s, self.last_state = sent, waited_s, last_state
        seen = f"its last status says {last_state!r}" if last_state else "no status of it is known"
        super().__init__(
            f"no answer from station {sent.station} to {sent.cmd} (command {sent.id}) within "
            f"{waited_s:g} s; {seen}. The command expires at {sent.expires} and will be ignored "
            "afterwards; an offline station does not receive it later. Check 'clinicam relay status' "
            "and send the command again when the station is online.")


@dataclass(frozen=True)
class Sent:
    """What was published: the station, the command, its id and its validity window."""

    station: str
    cmd: str
    id: str
    issued_at: float
    expires_at: float

    @property
    def expires(self) -> str:
        return utc_stamp(self.expires_at)


@dataclass(frozen=True)
class Answer:
    """The command as sent and the station's ``P/D/event`` carrying its ``cmd_id``
    (``None`` when not waited for)."""

    sent: Sent
    event: dict[str, Any] | None


@dataclass(frozen=True)
class Remote:
    """Where and as whom to connect: the relay config's broker, and an operator's or the relay's identity."""

    host: str
    port: int
    ca: Path
    cert: Path
    key: Path
    client_id: str
    topics: Topics

    @classmethod
    def from_config(cls, config: RelayConfig, cert: Path | None = None, key: Path | None = None) -> Remote:
        """The broker, CA and topic prefix of ``config``; the identity ``cert``/``key`` (an
        operator's) or, without them, the one ``clinicam relay run`` uses with this config.
        The client id is the certificate's CN, as the broker will force it anyway."""
        if (cert is None) != (key is None):
            raise ValueError("give both the certificate and its key, or neither")
        ident = config.identity
        cert, key = (Path(ident.cert), Path(ident.key)) if cert is None or key is None else (cert, key)
        client_id = pki.common_name(pki.load_cert(cert, "check --cert or [identity] cert").subject, str(cert))
        return cls(config.broker.host, config.broker.port, Path(ident.ca), cert, key, client_id,
                   Topics(config.relay.topic_prefix))


def new_command_id() -> str:
    """A fresh random id: the station refuses a repeated one."""
    return secrets.token_hex(8)


def send_command(remote: Remote, station: str, cmd: str, *, ttl_s: float = 300.0,
                 timeout_s: float = 30.0, wait: bool = True, update: UpdateOrder | None = None,
                 wall: Callable[[], float] = time.time,
                 monotonic: Callable[[], float] = time.monotonic,
                 new_id: Callable[[], str] = new_command_id) -> Answer:
    """Publish ``cmd`` (with ``update``'s order for ``"update"``) to ``station`` and, with
    ``wait``, return its answer; many stations at once: ``clinicam.relay.fanout``.

    Raises ``TopicError`` for a bad station id, ``BrokerUnreachable``/``BrokerRefused``
    when the broker cannot be used, ``StationSilent`` when no answer came in time.
    """
    if not 0 < ttl_s <= MAX_LIFETIME_S:
        raise ValueError(f"ttl must be above 0 and at most {MAX_LIFETIME_S:g} s (stations refuse longer)")
    cmd_topic, event_topic = remote.topics.cmd(station), remote.topics.event(station)
    session = _Session(remote, monotonic)
    try:
        session.connect()
        if wait:
            session.subscribe([event_topic, remote.topics.status(station)])
        now = wall()
        sent = Sent(station, cmd, new_id(), now, now + ttl_s)
        command = Command(cmd, sent.id, sent.issued_at, sent.expires_at, update)
        session.publish(cmd_topic, command.payload(), sent)
        if not wait:
            return Answer(sent, None)
        event = session.answer(event_topic, remote.topics.status(station), sent, timeout_s)
        return Answer(sent, event)
    finally:
        session.close()


class _Session:
    """One short, clean MQTT 5 connection, driven from the caller's thread."""

    def __init__(self, remote: Remote, monotonic: Callable[[], float]) -> None:
        self.remote, self.monotonic = remote, monotonic
        self.connack: Any = None
        self.lost: Any = None
        self.acks: dict[int, list[Any]] = {}
        self.messages: list[mqtt.MQTTMessage] = []
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=remote.client_id, protocol=mqtt.MQTTv5)
        c.tls_set_context(client_context(remote.ca, remote.cert, remote.key))
        c.on_connect = lambda _c, _u, _f, rc, _p: setattr(self, "connack", rc)
        c.on_disconnect = lambda _c, _u, _f, rc, _p: setattr(self, "lost", rc)
        c.on_subscribe = lambda _c, _u, mid, rcs, _p: self.acks.__setitem__(mid, list(rcs))
        c.on_publish = lambda _c, _u, mid, rc, _p: self.acks.__setitem__(mid, [rc])
        c.on_message = lambda _c, _u, msg: self.messages.append(msg)
        self.client = c

    @property
    def where(self) -> str:
        return f"{self.remote.host}:{self.remote.port}"

    def connect(self) -> None:
        try:
            self.client.connect(self.remote.host, self.remote.port, keepalive=30, clean_start=True)
        except (OSError, ssl.SSLError) as exc:  # refused, unreachable, TLS handshake failed
            raise BrokerUnreachable(
                f"cannot reach the broker {self.where} ({type(exc).__name__}): check [broker] host/port "
                "in the relay config, that the broker runs, and that its certificate is from the site CA"
            ) from exc
        if not self._until(lambda: self.connack is not None, CONNECT_TIMEOUT_S, sent=None):
            raise BrokerUnreachable(f"no answer (CONNACK) from the broker {self.where} within "
                                    f"{CONNECT_TIMEOUT_S:g} s: check the broker's log")
        if self.connack.is_failure:
            raise BrokerRefused(f"the broker {self.where} refused {self.remote.client_id} ({self.connack}): "
                                "check the certificate (--cert, or the relay config's) and the broker's log")

    def subscribe(self, topics: list[str]) -> None:
        rc, mid = self.client.subscribe([(t, 1) for t in topics])
        if rc != MQTTErrorCode.MQTT_ERR_SUCCESS or mid is None:
            raise BrokerRefused(f"the subscription could not be sent to {self.where} (paho rc {rc})")
        codes = self._ack(mid, None)
        if any(code.is_failure for code in codes):
            raise BrokerRefused(f"the broker refused {self.remote.client_id} a subscription to {topics[0]} "
                                f"({codes[0]}): the ACL must let it read P/+/event and P/+/status (an operator "
                                "identity from 'clinicam provision operator', in the broker's reloaded acl)")

    def publish(self, topic: str, payload: bytes, sent: Sent) -> None:
        info = self.client.publish(topic, payload, qos=1, retain=False)
        if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            raise BrokerRefused(f"the command could not be sent to {self.where} (paho rc {info.rc})")
        (code,) = self._ack(info.mid, sent)
        if code.is_failure:
            raise BrokerRefused(f"the broker refused {self.remote.client_id} the command on {topic} ({code}): "
                                "the ACL must let it write P/+/cmd (an operator identity, in the broker's "
                                "reloaded acl)")

    def answer(self, event_topic: str, status_topic: str, sent: Sent, timeout_s: float) -> dict[str, Any]:
        found: list[dict[str, Any]] = []

        def answered() -> bool:
            found.extend(self._events(event_topic, sent.id))
            return bool(found)

        if not self._until(answered, timeout_s, sent):
            raise StationSilent(sent, timeout_s, self._last_state(status_topic))
        return found[0]

    def close(self) -> None:
        self.client.disconnect()  # harmless when never or no longer connected
        self.client.loop(timeout=0.1)

    def _ack(self, mid: int, sent: Sent | None) -> list[Any]:
        if not self._until(lambda: mid in self.acks, CONNECT_TIMEOUT_S, sent):
            raise BrokerUnreachable(f"the broker {self.where} did not acknowledge within {CONNECT_TIMEOUT_S:g} s")
        return self.acks[mid]

    def _until(self, done: Callable[[], bool], timeout_s: float, sent: Sent | None) -> bool:
        """Run the network loop here until ``done()``; False after ``timeout_s`` (an upper bound)."""
        deadline = self.monotonic() + timeout_s
        while not done():
            if self.lost is not None:
                raise self._lost_error(sent)
            if self.monotonic() >= deadline:
                return False
            self.client.loop(timeout=0.1)
        return True

    def _lost_error(self, sent: Sent | None) -> BrokerRefused:
        if self.connack is None:
            why = ("before accepting it: check that the certificate is from this site's CA and "
                   "neither expired nor revoked (see the broker's log)")
        else:  # Mosquitto reports a session takeover as 0x8E or, to MQTT 5 clients, unspecified
            taken = "" if int(getattr(self.lost, "value", 0) or 0) == SESSION_TAKEN_OVER else "probably "
            why = (f"({self.lost}): {taken}another client connected as {self.remote.client_id}, such as a "
                   "running 'clinicam relay run' with this identity; send commands with an operator identity "
                   "('clinicam provision operator', then --cert and --key)")
        after = (f" Command {sent.id} may have reached the station; it expires at {sent.expires} and is "
                 "ignored afterwards." if sent is not None else "")
        return BrokerRefused(f"the broker {self.where} closed the connection {why}.{after}")

    def _events(self, topic: str, cmd_id: str) -> list[dict[str, Any]]:
        out = []
        for msg in self.messages:
            if msg.topic == topic:
                event = _json(msg.payload)
                if event is not None and event.get("cmd_id") == cmd_id:
                    out.append(event)
        return out

    def _last_state(self, status_topic: str) -> str | None:
        """The station's retained (or latest) status ``state``, to say why it may be silent."""
        states = [(_json(m.payload) or {}).get("state") for m in self.messages if m.topic == status_topic]
        return str(states[-1]) if states and states[-1] is not None else None


def _json(payload: bytes | bytearray) -> dict[str, Any] | None:
    try:
        obj = json.loads(payload)
    except (ValueError, UnicodeDecodeError):
        return None
    return obj if isinstance(obj, dict) else None
