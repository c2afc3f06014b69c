"""Selftest of the uplink: a real TLS handshake and MQTT 5 CONNECT with the installed identity.

The connection is the station's own (client certificate, site CA pinned, host name
verified, MQTT 5), but short and clean: clean start, no session kept, no will, no
subscription, nothing published, DISCONNECT right after the CONNACK. The broker
forces the client id to the certificate's CN (``use_username_as_clientid``), so on a
station whose daemon is connected this *takes over* the daemon's session for a
moment: the daemon is disconnected, its will (``offline``) is published, and it
reconnects after its back-off and re-sends whatever was in flight — nothing is lost.

From the CONNACK come the two limits paho itself ignores (DESIGN §5):
``MaximumPacketSize``, which every sealed part must fit, and ``ReceiveMaximum``.

paho reports a certificate the broker refuses after a TLS 1.3 handshake only as a
lost connection; when no CONNACK came, a plain TLS probe repeats the handshake and
reads the broker's alert, so the line says *why* (unknown CA, expired, revoked).
"""

from __future__ import annotations

import socket
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as mqtt
from clinicam.common.errors import ProvisioningError
from clinicam.firmware.config import StationConfig
from clinicam.firmware.selftest.identity import IdentityReview
from clinicam.firmware.selftest.result import FAIL, PASS, WARN, CheckResult
from clinicam.firmware.uplink.delivery import publish_packet_size
from clinicam.protocol.sealing import TAG_SIZE
from clinicam.protocol.topics import MAX_PART, Topics
from clinicam.provisioning import identity
from clinicam.provisioning.tlsctx import client_context
from paho.mqtt.enums import CallbackAPIVersion

CONNECT_TIMEOUT_S = 10.0
PROBE_TIMEOUT_S = 3.0
DEFAULT_RECEIVE_MAXIMUM = 65535  # MQTT 5: absent from CONNACK means 65535

# TLS alerts the broker sends when it refuses this station's certificate.
_ALERTS = {
    "TLSV1_ALERT_UNKNOWN_CA": "the broker does not know the CA that issued this station's certificate",
    "SSLV3_ALERT_CERTIFICATE_EXPIRED": "the broker refused this station's certificate: expired",
    "SSLV3_ALERT_CERTIFICATE_REVOKED": "the broker refused this station's certificate: revoked",
    "SSLV3_ALERT_BAD_CERTIFICATE": "the broker refused this station's certificate (bad certificate)",
    "SSLV3_ALERT_CERTIFICATE_UNKNOWN": "the broker refused this station's certificate (certificate unknown)",
    "SSLV3_ALERT_UNSUPPORTED_CERTIFICATE": "the broker refused this station's certificate (unsupported)",
    "TLSV13_ALERT_CERTIFICATE_REQUIRED": "the broker requires a client certificate and got none",
    "TLSV1_ALERT_PROTOCOL_VERSION": "no TLS version in common (clinicam needs TLS 1.2 or later)",
    "SSLV3_ALERT_HANDSHAKE_FAILURE": "TLS handshake failure (no common cipher or certificate refused)",
    "TLSV1_ALERT_DECRYPT_ERROR": "the broker could not verify this station's key (decrypt error)",
}


@dataclass
class Connack:
    """What the broker answered: its CONNACK, or why there was none."""

    reason: Any = None  # paho ReasonCode of the CONNACK
    properties: Any = None
    lost: Any = None  # reason of a disconnect before any CONNACK
    tls_version: str = ""


def skipped(why: str) -> list[CheckResult]:
    return [CheckResult("broker", WARN, f"skipped ({why})"),
            CheckResult("packet-limit", WARN, f"skipped ({why})")]


def part_packet_size(config: StationConfig, device_id: str) -> int:
    """The largest part's PUBLISH size: ``chunk_size`` + tag, the longest part topic, headers."""
    topic = Topics(config.uplink.topic_prefix).part(device_id, "0" * 32, MAX_PART)
    return publish_packet_size(topic, config.sealing.chunk_size + TAG_SIZE)


def broker_address(config: StationConfig, review: IdentityReview) -> tuple[str, int] | None:
    """``[uplink] host``/``port`` where set, else what ``broker.json`` recorded at install."""
    if review.broker is None and not review.broker_problem:
        review.load_broker()
    recorded = review.broker
    host = config.uplink.host or (recorded[0] if recorded else "")
    port = config.uplink.port or (recorded[1] if recorded else None)
    return (host, port) if host and port else None


def check_broker(config: StationConfig, review: IdentityReview,
                 timeout_s: float = CONNECT_TIMEOUT_S) -> list[CheckResult]:
    """The ``broker`` and ``packet-limit`` lines."""
    address = broker_address(config, review)
    if address is None:
        return [CheckResult("broker", FAIL, "no broker address: [uplink] host/port unset and broker.json unusable",
                            "set [uplink] host and port, or install the station's bundle"),
                skipped("no broker address")[1]]
    missing = [n for n in (identity.KEY, identity.CERT, identity.CA) if not (review.dir / n).exists()]
    if missing:
        return [CheckResult("broker", FAIL, f"cannot connect without {', '.join(missing)}", review.install_remedy),
                skipped("no connection")[1]]
    host, port = address
    try:
        ctx = client_context(review.dir / identity.CA, review.dir / identity.CERT, review.dir / identity.KEY)
    except ProvisioningError as exc:
        return [CheckResult("broker", FAIL, str(exc), review.install_remedy), skipped("no connection")[1]]
    client_id = _client_id(review)
    try:
        answer = connect(host, port, ctx, client_id, timeout_s)
    except ssl.SSLCertVerificationError as exc:
        return [_broker_not_verified(host, exc), skipped("no connection")[1]]
    except ssl.SSLError as exc:
        return [_refused(host, port, exc, review), skipped("no connection")[1]]
    except OSError as exc:
        return [_unreachable(host, port, exc), skipped("no connection")[1]]
    return _judge(config, review, host, port, client_id, answer, ctx)


def _client_id(review: IdentityReview) -> str:
    """The certificate's CN (the broker forces it anyway), even from an expired certificate."""
    return review.device_id or review.any_device_id() or "selftest"


def connect(host: str, port: int, ctx: ssl.SSLContext, client_id: str, timeout_s: float,
            clock: Callable[[], float] = time.monotonic) -> Connack:
    """One clean MQTT 5 connection, in this thread: CONNECT, wait for CONNACK, DISCONNECT."""
    answer = Connack()
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5,
                         reconnect_on_failure=False)
    client.tls_set_context(ctx)
    client.connect_timeout = timeout_s

    def on_connect(c: Any, u: Any, flags: Any, reason: Any, properties: Any) -> None:
        answer.reason, answer.properties = reason, properties

    def on_disconnect(c: Any, u: Any, flags: Any, reason: Any, properties: Any) -> None:
        if answer.reason is None:
            answer.lost = reason if reason is not None else "closed"

    client.on_connect, client.on_disconnect = on_connect, on_disconnect
    try:
        client.connect(host, port, keepalive=30, clean_start=True)
        sock = client.socket()
        answer.tls_version = (sock.version() or "") if isinstance(sock, ssl.SSLSocket) else ""
        deadline = clock() + timeout_s  # an upper bound on waiting, never a delay that must pass
        while answer.reason is None and answer.lost is None and clock() < deadline:
            client.loop(timeout=0.1)
    finally:
        client.disconnect()  # harmless when never or no longer connected
        client.loop(timeout=0.1)
    return answer


def _judge(config: StationConfig, review: IdentityReview, host: str, port: int, client_id: str,
           answer: Connack, ctx: ssl.SSLContext) -> list[CheckResult]:
    where = f"{host}:{port}"
    if answer.reason is None:
        why = probe_refusal(host, port, ctx)
        detail = why or (f"no CONNACK from {where} ({answer.lost or 'timed out'})")
        return [CheckResult("broker", FAIL, detail, _tls_remedy(why, review)), skipped("no connection")[1]]
    if answer.reason.is_failure:
        return [CheckResult("broker", FAIL, f"{where} refused the MQTT connection: {answer.reason}",
                            "check the broker's log and ACL for this station's id"),
                skipped("no connection")[1]]
    props = answer.properties
    receive_max = getattr(props, "ReceiveMaximum", DEFAULT_RECEIVE_MAXIMUM)
    max_packet = getattr(props, "MaximumPacketSize", None)
    limit = f"maximum packet {max_packet}" if max_packet else "no maximum packet size"
    tls = f"{answer.tls_version}, " if answer.tls_version else ""
    broker = CheckResult("broker", PASS, f"{where} as {client_id}: {tls}MQTT 5 CONNACK success, "
                         f"receive maximum {receive_max}, {limit}")
    return [broker, check_packet_limit(config, client_id, max_packet, receive_max)]


def check_packet_limit(config: StationConfig, device_id: str, max_packet: int | None,
                       receive_max: int = DEFAULT_RECEIVE_MAXIMUM) -> CheckResult:
    """Parts are cut at sealing time, so one that cannot fit is a configuration error (DESIGN §5)."""
    chunk = config.sealing.chunk_size
    size = part_packet_size(config, device_id)
    window = min(config.uplink.max_inflight, receive_max)
    if max_packet is None:
        return CheckResult("packet-limit", PASS, f"chunk_size {chunk}: {size}-byte parts, broker sets no limit; "
                           f"{window} in flight")
    if size > max_packet:
        fits = chunk - (size - max_packet)
        return CheckResult("packet-limit", FAIL,
                           f"chunk_size {chunk} makes {size}-byte parts, above the broker's maximum "
                           f"packet size {max_packet}",
                           f"set [sealing] chunk_size to at most {fits}, or raise the broker's max_packet_size")
    return CheckResult("packet-limit", PASS, f"chunk_size {chunk}: {size}-byte parts fit the broker's {max_packet}; "
                       f"{window} in flight")


def probe_refusal(host: str, port: int, ctx: ssl.SSLContext, timeout_s: float = PROBE_TIMEOUT_S) -> str:
    """Why the broker dropped us after the handshake: its TLS alert, read by a plain TLS client."""
    try:
        with socket.create_connection((host, port), timeout=timeout_s) as raw, \
                ctx.wrap_socket(raw, server_hostname=host) as tls:
            data = tls.recv(1)  # a refused certificate's alert arrives here with TLS 1.3
    except ssl.SSLError as exc:
        return _alert_text(exc)
    except OSError:
        return ""
    return "" if data else "the broker closed the connection right after the TLS handshake"


def _alert_text(exc: ssl.SSLError) -> str:
    reason = getattr(exc, "reason", None) or ""
    return _ALERTS.get(reason, f"TLS failed: {reason or type(exc).__name__}")


def _tls_remedy(why: str, review: IdentityReview) -> str:
    if "expired" in why:
        return review.renew_remedy
    if "revoked" in why:
        return "the site revoked this station: provision a new identity (device-key, sign, install)"
    if "CA" in why:
        return "install the certificate this site signed for this station (see the certificate line)"
    return "check the broker's log for this station's connection"


def _refused(host: str, port: int, exc: ssl.SSLError, review: IdentityReview) -> CheckResult:
    why = _alert_text(exc)
    return CheckResult("broker", FAIL, f"TLS with {host}:{port} failed: {why}", _tls_remedy(why, review))


def _broker_not_verified(host: str, exc: ssl.SSLCertVerificationError) -> CheckResult:
    return CheckResult("broker", FAIL, f"the broker's certificate did not verify: {exc.verify_message}",
                       f"the broker must present a certificate of the site CA in ca.pem naming {host!r}: "
                       "check [uplink] host / broker.json and the broker's certificate")


def _unreachable(host: str, port: int, exc: OSError) -> CheckResult:
    why = exc.strerror or type(exc).__name__
    if isinstance(exc, socket.gaierror):
        why = f"name not resolved ({exc.strerror})"
    elif isinstance(exc, TimeoutError):
        why = "timed out"
    return CheckResult("broker", FAIL, f"cannot reach {host}:{port} ({why})",
                       "check the network and firewall, that the broker is running, "
                       "and [uplink] host/port (default: broker.json)")
