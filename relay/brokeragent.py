"""``clinicam broker agent``: installs the site's CRL bulletins on the broker host (issue 17).

Runs next to Mosquitto with its own identity (CN ``broker-agent``, ``SITE/broker/agent.*``;
ACL: read ``P/_site/crl`` and ``P/_site/crl-root``, write ``P/_site/crl-installed``,
nothing else). For each bulletin the registrar (issuing CA) or the admin machine (root;
the only author on a single-tier site) publishes it:

1. verifies it (signed by its author, a site CA; every CRL by a site CA; ``protocol.revocation``),
2. refuses an older CRL number or one that drops an entry (anti-rollback, merge never loses),
3. writes Mosquitto's ``crlfile`` atomically and drops the revoked ids' ``user`` blocks
   from the ``acl_file``,
4. sends SIGHUP to Mosquitto (it re-reads the CRL for new connections and the ACL for
   every client), and
5. publishes the receipt (retained) naming the CRL number, after which the registrar
   cuts the revoked stations' open sessions.

It also installs the site's trust update (``P/_site/trust``, CA rotation): signed by a
root the broker trusts, it rewrites Mosquitto's ``cafile`` (and merges the new CAs'
CRLs) and reloads it — Mosquitto 2.0 re-reads its cafile on SIGHUP.

No file is copied by hand. The agent holds no signing key: a stolen agent can install
only what the site signed.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from clinicam.common.errors import ConfigError
from clinicam.common.tomlconf import absolute_path, between, checked, load_file, nonempty
from clinicam.protocol import chain as trust
from clinicam.protocol import revocation as rv
from clinicam.protocol import trustann as ta
from clinicam.protocol.topics import check_prefix
from clinicam.provisioning import pki
from clinicam.relay.mqttservice import MqttService
from cryptography import x509

log = logging.getLogger(__name__)

DEFAULT_PATH = Path("/etc/clinicam/broker-agent.toml")
PATH = checked(nonempty, absolute_path)
AGENT = "broker-agent"
EXAMPLE = Path(__file__).with_name("broker-agent.example.toml")


@dataclass(frozen=True)
class BrokerSection:
    host: str = field(default="localhost", metadata=checked(nonempty))
    port: int = field(default=8883, metadata=checked(between(1, 65535)))
    keepalive_s: int = field(default=30, metadata=checked(between(5, 600)))
    topic_prefix: str = "clinicam/v1"


@dataclass(frozen=True)
class IdentitySection:
    cert: str = field(default="/etc/mosquitto/clinicam/agent.pem", metadata=PATH)
    key: str = field(default="/etc/mosquitto/clinicam/agent.key", metadata=PATH)
    # the broker's ca.pem: the root and the issuing CA(s) — both the TLS anchor and what
    # a bulletin must be signed by
    ca: str = field(default="/etc/mosquitto/clinicam/ca.pem", metadata=PATH)


@dataclass(frozen=True)
class MosquittoSection:
    crlfile: str = field(default="/etc/mosquitto/clinicam/crl.pem", metadata=PATH)
    acl_file: str = field(default="/etc/mosquitto/clinicam/acl", metadata=PATH)
    pid_file: str = field(default="/run/mosquitto/mosquitto.pid", metadata=PATH)
    # Mosquitto's cafile: the agent rewrites it from the site's trust update (CA rotation)
    cafile: str = field(default="/etc/mosquitto/clinicam/ca.pem", metadata=PATH)


@dataclass(frozen=True)
class AgentConfig:
    broker: BrokerSection = BrokerSection()
    identity: IdentitySection = IdentitySection()
    mosquitto: MosquittoSection = MosquittoSection()


def load_agent_config(path: Path | str = DEFAULT_PATH) -> AgentConfig:
    config = load_file(path, AgentConfig, example=str(EXAMPLE), kind="broker agent")
    check_prefix(config.broker.topic_prefix)
    return config


def strip_users(acl: str, devices: Sequence[str]) -> str:
    """``acl`` without the ``user D`` blocks (up to the next blank line) of ``devices``."""
    gone = {f"user {d}" for d in devices}
    out: list[str] = []
    skipping = False
    for line in acl.splitlines():
        if line.strip() in gone:
            skipping = True
            continue
        if skipping and (not line.strip() or line.startswith("user ")):
            skipping = False
            if not line.strip():
                continue
        if not skipping:
            out.append(line)
    return "\n".join(out) + ("\n" if acl.endswith("\n") else "")


def site_trust(ca: Path) -> trust.TrustStore:
    """Roots (self-issued) and issuing CAs of a bundle like the broker's ``ca.pem``."""
    try:
        certs = trust.load_certs(ca.read_bytes(), f"[identity] ca: {ca}")
    except OSError as exc:
        raise ConfigError(f"[identity] ca: {ca} cannot be read: copy the site's broker/ca.pem") from exc
    roots = [c for c in certs if c.issuer == c.subject]
    return trust.TrustStore(roots, [c for c in certs if c.issuer != c.subject])


class AgentCore:
    """``install(payload) -> CRL number now installed``, or ``RevocationError``; no sockets."""

    def __init__(self, config: AgentConfig, reload: Callable[[], None]) -> None:
        self.config, self.reload = config, reload
        self.store = site_trust(Path(config.identity.ca))
        if not self.store.roots:
            raise ConfigError(f"[identity] ca: {config.identity.ca} holds no root certificate: copy the site's "
                              "broker/ca.pem")

    def _held(self) -> list[x509.CertificateRevocationList]:
        path = Path(self.config.mosquitto.crlfile)
        try:
            return trust.load_crls(path.read_bytes(), f"[mosquitto] crlfile: {path}")
        except (OSError, ConfigError):
            return []

    def _number_of(self, cas: Sequence[x509.Certificate]) -> int:
        return max((rv.crl_number(c) for c in self._held() if any(c.issuer == s.subject for s in cas)), default=0)

    def installed_number(self) -> int:
        """The CRL number of the current issuing CA (the first in the cafile: after a CA
        rotation, the new one — its numbers start again at 1); 0 on a single-tier site."""
        return self._number_of(self.store.intermediates[:1])

    def installed_root(self) -> int:
        """The root's CRL number loaded (the highest, while a CA rotation holds two roots)."""
        return self._number_of(self.store.roots)

    def install_trust(self, payload: bytes, now: datetime | None = None) -> int:
        """Install a trust update (CA rotation) into Mosquitto's cafile; the number now held.

        Verified against the roots the cafile holds now; an update not above the held
        number (``trust.json`` beside the cafile) changes nothing. The cafile becomes the
        update's roots, its issuing CA and the issuing CAs held that one of those roots
        issued; the update's CRLs are merged into the crlfile (Mosquitto checks a
        certificate against its issuer's CRL, so the new issuing CA's must be there);
        then one SIGHUP: Mosquitto re-reads both.
        """
        m = self.config.mosquitto
        cafile = Path(m.cafile)
        try:
            held = trust.load_certs(cafile.read_bytes(), f"[mosquitto] cafile: {cafile}")
        except OSError as exc:
            raise ConfigError(f"[mosquitto] cafile: {cafile} cannot be read") from exc
        update = ta.parse_trust(payload, [c for c in held if c.issuer == c.subject], now or datetime.now(UTC))
        state = cafile.with_name("trust.json")
        number = _held_trust(state)
        if update.number <= number:
            return number
        keep = [c for c in held if c.issuer != c.subject and not ta.same_cert(c, update.issuing)
                and any(c.issuer == r.subject for r in update.roots)]
        if update.crls:
            pki.write_public(Path(m.crlfile), rv.crls_pem(rv.successor(self._held(), update.crls)))
        pki.write_public(cafile, update.roots_pem + b"".join(ta.pem(c) for c in [update.issuing, *keep]))
        pki.write_public(state, json.dumps({"number": update.number}).encode())
        self.reload()
        self.store = site_trust(cafile)
        log.info("broker agent: installed trust update %d (%d root(s))", update.number, len(update.roots))
        return update.number

    def install(self, payload: bytes) -> int:
        bulletin = rv.parse_bulletin(payload, self.store)
        held = self._held()
        mine = [c for c in held if c.issuer == bulletin.signer]
        if mine and rv.crl_number(mine[0]) > bulletin.number:
            raise rv.RevocationError(f"CRL number {bulletin.number} is older than the installed "
                                     f"{rv.crl_number(mine[0])}: refused (replay or stale copy)")
        merged = rv.successor(held, bulletin.crls, author=bulletin.signer)
        before = self.installed_number()
        if rv.crls_pem(merged) == rv.crls_pem(held):
            return before  # already installed: acknowledge again, no reload
        m = self.config.mosquitto
        pki.write_public(Path(m.crlfile), rv.crls_pem(merged))
        if bulletin.revoked:
            acl = Path(m.acl_file)
            try:
                text = acl.read_text()
            except OSError as exc:
                raise ConfigError(f"[mosquitto] acl_file: {acl} cannot be read") from exc
            pki.write_public(acl, strip_users(text, bulletin.revoked).encode())
        self.reload()
        log.info("broker agent: installed CRL %d (revoked: %s)", bulletin.number,
                 ", ".join(bulletin.revoked) or "none new")
        return self.installed_number()


def _held_trust(state: Path) -> int:
    try:
        return int(json.loads(state.read_text())["number"])
    except (OSError, ValueError, KeyError, TypeError):
        return 0


def sighup_from(pid_file: Path) -> Callable[[], None]:
    """Reload Mosquitto: SIGHUP to the pid in its ``pid_file``."""
    def reload() -> None:
        try:
            pid = int(pid_file.read_text().strip())
            os.kill(pid, signal.SIGHUP)
        except (OSError, ValueError) as exc:
            raise ConfigError(f"[mosquitto] pid_file: cannot signal Mosquitto via {pid_file} ({exc}): "
                              "set pid_file in mosquitto.conf and run the agent as the broker's user") from exc
    return reload


class Agent(MqttService):
    """The MQTT side: one connection, one worker thread around ``AgentCore``."""

    thread_name = "broker-agent"

    def __init__(self, config: AgentConfig, core: AgentCore) -> None:
        ident, b = config.identity, config.broker
        super().__init__(client_id=AGENT, ca=ident.ca, cert=ident.cert, key=ident.key,
                         host=b.host, port=b.port, keepalive_s=b.keepalive_s)
        self.config, self.core = config, core

    def _on_connect(self, client: Any, userdata: Any, flags: Any, rc: Any, props: Any) -> None:
        if rc.is_failure:
            log.warning("broker agent: broker refused the connection (%s)", rc)
            return
        prefix = self.config.broker.topic_prefix
        client.subscribe([(rv.crl_topic(prefix), 1), (rv.root_crl_topic(prefix), 1), (ta.trust_topic(prefix), 1)])
        log.info("broker agent: connected")

    def _run(self) -> None:
        trust_topic = ta.trust_topic(self.config.broker.topic_prefix)
        while (job := self._jobs.get()) is not None:
            topic, payload = job
            if topic == trust_topic:
                try:
                    self.core.install_trust(payload)
                except (ta.TrustUpdateError, rv.RevocationError, ConfigError) as exc:
                    log.error("broker agent: trust update not installed: %s", exc)
                    continue
                except Exception:  # one bad update must not stop the agent
                    log.exception("broker agent: trust update not installed")
                    continue
                # the receipt now counts the new issuing CA's CRLs: replace the old CA's retained one
                self.client.publish(rv.installed_topic(self.config.broker.topic_prefix),
                                    rv.build_installed(self.core.installed_number(), datetime.now(UTC),
                                                       root=self.core.installed_root()),
                                    qos=1, retain=True)
                continue
            try:
                number = self.core.install(payload)
            except (rv.RevocationError, ConfigError) as exc:
                log.error("broker agent: CRL bulletin not installed: %s", exc)
                continue
            except Exception:  # one bad bulletin must not stop the agent
                log.exception("broker agent: CRL bulletin not installed")
                continue
            self.client.publish(rv.installed_topic(self.config.broker.topic_prefix),
                                rv.build_installed(number, datetime.now(UTC), root=self.core.installed_root()),
                                qos=1, retain=True)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``broker`` command group to the ``clinicam`` parser."""
    parser = subparsers.add_parser("broker", help="the broker agent: installs the site's CRL bulletins",
                                   description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="broker_command", metavar="ACTION")
    agent = sub.add_parser("agent", help="install CRL bulletins into Mosquitto and reload it, until stopped")
    agent.add_argument("--config", type=Path, default=DEFAULT_PATH, help=f"default {DEFAULT_PATH}")
    agent.set_defaults(func=cmd_agent)


def cmd_agent(args: argparse.Namespace) -> int:
    config = load_agent_config(args.config)
    core = AgentCore(config, sighup_from(Path(config.mosquitto.pid_file)))
    agent = Agent(config, core)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    agent.start()
    print("clinicam broker agent: running", file=sys.stderr)
    stop.wait()
    agent.stop()
    return 0
