"""Shared fixtures: a throwaway clinicam site and a real Mosquitto broker (DESIGN §9).

Fixtures
--------
``site`` (session)
    A site provisioned in a temporary directory exactly as an admin would, through
    ``clinicam provision`` itself: ``site-init --tiers 1`` (relays ``relay-1``, ``relay-2``), then
    for ``station-a`` and ``station-b`` ``device-key`` → ``sign`` → ``bundle`` →
    ``install`` into each station's own identity directory. Tests only: an
    ``admin-test`` identity that the *test copy* of the ACL lets read ``#``.
    See :class:`TestSite` for paths and for helpers making extra identities
    (expired, revoked, from another CA).

``broker`` (function)
    A real ``mosquitto`` started from a copy of the site's generated
    ``broker/mosquitto.conf`` (see ``clinicam.tools.brokerproc``), on the
    loopback port fixed in ``site.json`` (picked below the ephemeral range, so no other
    socket takes it between tests) so installed identities (``broker.json``)
    reach it unchanged. A fresh broker per test (~50 ms): no retained message,
    session or CRL leaks between tests. ``broker.stop()`` / ``broker.start()``
    restart it on the same port; ``broker.kill()`` simulates a crash;
    ``broker.reload()`` (SIGHUP) re-reads ACL and CRL for new connections only.
    ``broker.log_path`` is its log; when a test fails, the log of every broker it
    started is attached to the report.

``broker_factory`` (function)
    ``broker_factory(name, **Mosquitto kwargs)`` starts another broker (e.g. a control
    listener with other TLS settings), stopped and logged like ``broker``.

``mqtt_client`` (function)
    ``mqtt_client(identity, client_id=None, *, broker=<the broker fixture>, **kw)``
    returns a connected, looping ``paho.mqtt.client.Client`` (MQTT 5, TLS 1.2+, site CA
    pinned, hostname verified, client certificate presented, no automatic reconnect)
    or raises ``ConnectionError`` if the broker refuses. ``client.probe`` (also its
    ``user_data_get()``) is a :class:`Probe` recording messages, PUBACK/SUBACK reason
    codes and disconnects: ``probe.publish(topic, payload)`` returns the PUBACK's
    reason code (>= 0x80 = refused). Clients are disconnected at teardown.

Nothing here sleeps: waits are on events, bounded by ``TIMEOUT``.
"""

from __future__ import annotations

import contextlib
import io
import itertools
import queue
import random
import socket
import ssl
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from clinicam.protocol.topics import DEFAULT_PREFIX
from clinicam.provisioning import identity, pki
from clinicam.provisioning.site import Site
from clinicam.provisioning.tlsctx import client_context
from clinicam.tools.brokerproc import LOOPBACK, Mosquitto, free_port
from clinicam.tools.cli import main as clinicam_main
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode

PREFIX = DEFAULT_PREFIX
ADMIN_ACL = "user admin-test\ntopic read #\n"
TIMEOUT = 10.0  # upper bound for waiting on the broker; never a delay that must pass
_BROKERS = pytest.StashKey[list[Mosquitto]]()


# -- identities -------------------------------------------------------------------------


@dataclass(frozen=True)
class TlsIdentity:
    """Files a TLS client presents. ``cert``/``key`` None = no client certificate.

    ``dir`` is the installed identity directory for stations (``load_identity(dir)``).
    """

    name: str
    ca: Path
    cert: Path | None
    key: Path | None
    dir: Path | None = None


class TestSite:
    """The session's throwaway site; ``site.site`` is the ``clinicam.provisioning`` object."""

    __test__ = False  # not a test class

    def __init__(self, root: Path) -> None:
        self.root = root
        self.dir = root / "site"
        self.site = Site(self.dir)
        self.ca_pem = self.dir / "ca.pem"
        self.recipient_key_path = self.dir / "relay" / "recipient.key"
        self.recipient_pub_path = self.dir / "relay" / "recipient.pub"
        self._counter = itertools.count(1)

    @property
    def port(self) -> int:
        return self.site.port

    def device(self, name: str) -> TlsIdentity:
        """An installed station (``station-a``, ``station-b`` or one made by a helper)."""
        d = self.root / "stations" / name
        return TlsIdentity(name, d / identity.CA, d / identity.CERT, d / identity.KEY, d)

    def relay(self, n: int) -> TlsIdentity:
        cert, key = self.site.relay_files(n)
        return TlsIdentity(f"relay-{n}", self.ca_pem, cert, key)

    @property
    def admin(self) -> TlsIdentity:
        d = self.root / "test"
        return TlsIdentity("admin-test", self.ca_pem, d / "admin-test.pem", d / "admin-test.key")

    def anonymous(self) -> TlsIdentity:
        """A client that trusts the site CA but presents no certificate."""
        return TlsIdentity("anonymous", self.ca_pem, None, None)

    def unique(self, stem: str) -> str:
        return f"{stem}-{next(self._counter)}"

    # -- helpers for extra identities ---------------------------------------------------

    def make_device(self, name: str | None = None) -> TlsIdentity:
        """Provision and install another station through the library (key, sign, install)."""
        name = name or self.unique("station-x")
        d = self.root / "stations" / name
        csr = identity.create_device_key(d, name)
        self.site.sign(csr.read_bytes())
        bundle = self.site.bundle(name, self.root / "bundles" / name)
        identity.install(identity.InstallFiles.from_bundle(bundle), d)
        return self.device(name)

    def make_expired(self, name: str | None = None) -> TlsIdentity:
        """A station whose certificate (valid one day, 400 days ago) has expired."""
        name = name or self.unique("station-expired")
        d = self.root / "extra" / name
        csr = identity.create_device_key(d, name)
        then = pki.utcnow() - timedelta(days=400)
        cert = self.site.sign(csr.read_bytes(), now=then, days=1)
        pki.write_public(d / identity.CERT, pki.cert_pem(cert))
        return TlsIdentity(name, self.ca_pem, d / identity.CERT, d / identity.KEY)

    def make_revoked(self, name: str | None = None) -> TlsIdentity:
        """An installed station, then revoked. Restart a running broker to load the CRL."""
        ident = self.make_device(name or self.unique("station-revoked"))
        self.site.revoke(ident.name)
        return ident

    def make_foreign(self, name: str = "station-a") -> TlsIdentity:
        """A well-formed certificate for ``name`` from another CA (an impostor's)."""
        d = self.root / "foreign" / self.unique(name)
        ca_key, key = pki.new_key(), pki.new_key()
        now = pki.utcnow()
        ca = pki.make_ca(ca_key, "Other Site", now=now)
        cert = pki.issue(ca_key, ca, key.public_key(), name, now=now)
        pki.write_private(d / "device.key", pki.key_pem(key))
        pki.write_public(d / "device.pem", pki.cert_pem(cert))
        return TlsIdentity(name, self.ca_pem, d / "device.pem", d / "device.key")


def _cli(*args: str) -> None:
    """Run ``clinicam provision …`` as an admin would; any failure fails the session."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        rc = clinicam_main(["provision", *args])
    assert rc == 0, f"clinicam provision {args[0]} exited {rc}:\n{out.getvalue()}"


def _session_port() -> int:
    """A free port below Linux's ephemeral range (32768+), where no client socket and no
    ``free_port()`` of another test session lands while this session's broker is down
    between tests."""
    rng = random.SystemRandom()
    for _ in range(200):
        port = rng.randrange(20000, 32768)
        with socket.socket() as s:
            try:
                s.bind((LOOPBACK, port))
            except OSError:
                continue
            return port
    return free_port()


def _provision(root: Path) -> TestSite:
    site_dir = root / "site"
    _cli(
        "site-init",
        str(site_dir),
        "--site",
        "Test Clinic",
        "--broker-host",
        LOOPBACK,
        "--broker-host",
        "localhost",
        "--broker-port",
        str(_session_port()),
        "--relays",
        "2",
        # One tier (a small site): these tests build their relay configs without the issuing
        # CA's chain; two-tier sites (the default) run in the DemoSetup-based tests.
        "--tiers",
        "1",
    )
    for name in ("station-a", "station-b"):
        station = root / "stations" / name
        _cli("device-key", str(station), "--device", name)
        cert = root / "signed" / f"{name}.pem"
        _cli("sign", str(site_dir), str(station / "device.csr"), "--out", str(cert))
        bundle = root / "bundles" / name
        _cli("bundle", str(site_dir), "--device", name, "--out", str(bundle))
        _cli("install", "--bundle", str(bundle), "--identity-dir", str(station))
    ts = TestSite(root)
    key = pki.new_key()
    cert = ts.site.issue(key.public_key(), "admin-test", kind="test")
    pki.write_private(ts.admin.key, pki.key_pem(key))  # type: ignore[arg-type]
    pki.write_public(ts.admin.cert, pki.cert_pem(cert))  # type: ignore[arg-type]
    return ts


@pytest.fixture(scope="session")
def site(tmp_path_factory: pytest.TempPathFactory) -> TestSite:
    """The session's site with station-a, station-b, relay-1, relay-2 and admin-test."""
    return _provision(tmp_path_factory.mktemp("clinicam-site"))


# -- brokers ----------------------------------------------------------------------------


@pytest.fixture
def broker_factory(
    site: TestSite, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[Callable[..., Mosquitto]]:
    """Start extra brokers from the site's config; all are stopped after the test."""
    started = request.node.stash.setdefault(_BROKERS, [])

    def start(name: str = "broker", **kw: Any) -> Mosquitto:
        kw.setdefault("acl_extra", ADMIN_ACL)
        kw.setdefault("probe_cert", (site.admin.cert, site.admin.key))
        b = Mosquitto(site.site.broker_dir, tmp_path / name, **kw)
        started.append(b)
        return b.start()

    yield start
    for b in started:
        b.stop()


@pytest.fixture
def broker(site: TestSite, broker_factory: Callable[..., Mosquitto]) -> Mosquitto:
    """A fresh Mosquitto on the site's port with the test ACL (admin-test reads ``#``)."""
    return broker_factory("broker", port=site.port)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """Attach the log of every broker a failing test started."""
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    if report.failed:
        for b in item.stash.get(_BROKERS, []):
            report.sections.append((f"mosquitto log :{b.port}", b.log_text()[-20000:]))


# -- MQTT clients -----------------------------------------------------------------------


class Probe:
    """A client's recorder: messages, PUBACK/SUBACK reason codes, disconnects."""

    def __init__(self) -> None:
        self.client: mqtt.Client | None = None
        self.messages: queue.Queue[mqtt.MQTTMessage] = queue.Queue()
        self.connected = threading.Event()
        self.disconnected = threading.Event()
        self.settled = threading.Event()  # CONNACK or disconnect, whichever came first
        self.connect_rc: ReasonCode | None = None
        self.disconnect_rc: ReasonCode | None = None
        self._acks: dict[int, Any] = {}
        self._cond = threading.Condition()

    # paho callbacks (network thread)
    def on_connect(self, c: Any, u: Any, flags: Any, rc: ReasonCode, props: Any) -> None:
        self.connect_rc = rc
        self.connected.set()
        self.settled.set()

    def on_disconnect(self, c: Any, u: Any, flags: Any, rc: ReasonCode, props: Any) -> None:
        self.disconnect_rc = rc
        self.disconnected.set()
        self.settled.set()

    def on_message(self, c: Any, u: Any, msg: mqtt.MQTTMessage) -> None:
        self.messages.put(msg)

    def _ack(self, mid: int, value: Any) -> None:
        with self._cond:
            self._acks[mid] = value
            self._cond.notify_all()

    def on_publish(self, c: Any, u: Any, mid: int, rc: ReasonCode, props: Any) -> None:
        self._ack(mid, rc)

    def on_subscribe(self, c: Any, u: Any, mid: int, rcs: list[ReasonCode], props: Any) -> None:
        self._ack(mid, rcs)

    def _wait_ack(self, mid: int) -> Any:
        with self._cond:
            if not self._cond.wait_for(lambda: mid in self._acks, TIMEOUT):
                raise TimeoutError(f"no acknowledgement for message id {mid}")
            return self._acks.pop(mid)

    # test helpers (test thread)
    def publish(self, topic: str, payload: bytes = b"", qos: int = 1, **kw: Any) -> ReasonCode:
        """Publish with QoS 1 and return the PUBACK's reason code (≥ 0x80 = refused)."""
        assert self.client is not None
        info = self.client.publish(topic, payload, qos=qos, **kw)
        return self._wait_ack(info.mid)  # type: ignore[no-any-return]

    def subscribe(self, topic: str, qos: int = 1) -> ReasonCode:
        """Subscribe and return the SUBACK's reason code for ``topic``."""
        assert self.client is not None
        _, mid = self.client.subscribe(topic, qos=qos)
        assert mid is not None
        return self._wait_ack(mid)[0]  # type: ignore[no-any-return]

    def next_message(self, timeout: float = TIMEOUT) -> mqtt.MQTTMessage:
        return self.messages.get(timeout=timeout)


def _context(ident: TlsIdentity) -> ssl.SSLContext:
    if ident.cert is not None and ident.key is not None:
        return client_context(ident.ca, ident.cert, ident.key)
    ctx = ssl.create_default_context(cafile=str(ident.ca))  # deliberately no client cert
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return ctx


def connect(ident: TlsIdentity, host: str, port: int, client_id: str | None = None, **kw: Any) -> mqtt.Client:
    """Connect, start the network loop, return once CONNACK says success.

    No automatic reconnect: a test sees each disconnect, and two clients never
    ping-pong one session.
    """
    probe = Probe()
    c = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=client_id or ident.name,
        protocol=mqtt.MQTTv5,
        userdata=probe,
        reconnect_on_failure=False,
        **kw,
    )
    probe.client = c
    c.probe = probe  # type: ignore[attr-defined]  # the tests' handle on what it saw
    c.on_connect, c.on_disconnect, c.on_message = probe.on_connect, probe.on_disconnect, probe.on_message
    c.on_publish, c.on_subscribe = probe.on_publish, probe.on_subscribe
    c.tls_set_context(_context(ident))
    try:
        c.connect(host, port, keepalive=30)
    except (OSError, ssl.SSLError) as exc:
        raise ConnectionError(f"{ident.name}: TLS/TCP refused: {exc}") from exc
    c.loop_start()
    refused = _wait_connected(probe)
    if refused:
        c.disconnect()
        c.loop_stop()
        raise ConnectionError(f"{ident.name}: {refused}")
    return c


def _wait_connected(probe: Probe) -> str | None:
    """None once connected; otherwise why not (disconnect, failed CONNACK, timeout)."""
    if not probe.settled.wait(TIMEOUT):
        return "no CONNACK in time"
    rc = probe.connect_rc
    if rc is None:
        return f"disconnected before CONNACK ({probe.disconnect_rc})"
    return f"CONNACK {rc}" if rc.is_failure else None


@pytest.fixture
def mqtt_client(broker: Mosquitto) -> Iterator[Callable[..., mqtt.Client]]:
    """Factory of connected clients to ``broker`` (or ``broker=`` another); closed at teardown."""
    clients: list[mqtt.Client] = []

    def make(ident: TlsIdentity, client_id: str | None = None, *, broker: Mosquitto = broker, **kw: Any) -> mqtt.Client:
        c = connect(ident, LOOPBACK, broker.port, client_id, **kw)
        clients.append(c)
        return c

    yield make
    for c in clients:
        c.disconnect()
        c.loop_stop()
