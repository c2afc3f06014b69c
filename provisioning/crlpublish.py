"""The admin machine on the site's channel: send the root's CRL bulletin, read the registrar's.

A revocation by the root (a service identity — operator, relay, registrar, broker agent —,
the issuing CA, or any certificate of a single-tier site) is signed where the root key
is, so the admin machine publishes it itself, as the ``admin`` identity (ACL: write
``P/_site/crl-root``, read ``P/_site/crl`` and ``P/_site/crl-installed``, nothing else):

1. publish the bulletin retained on ``P/_site/crl-root`` (a broker agent started later
   still finds it; the relays adopt it at once);
2. wait for the broker agent's receipt naming the root CRL number (the broker has the
   CRL and the ACL without the revoked ids);
3. take over each revoked identity's open session (``kick``, with a short-lived
   certificate from the root), so it is cut, not only refused on reconnect.

The other way, ``fetch_registrar_bulletin`` reads the registrar's retained bulletin
(stations revoked on the relay host) so the register can be brought in step
(``Site.import_revocations``) without copying a file.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from clinicam.common.errors import ProvisioningError
from clinicam.protocol import chain as trust
from clinicam.protocol import revocation as rv
from clinicam.protocol.topics import ADMIN
from clinicam.provisioning.kick import kick
from clinicam.provisioning.site import Site
from clinicam.provisioning.tlsctx import client_context
from cryptography import x509

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Published:
    """What ``publish_root_bulletin`` achieved: the CRL number, whether the broker agent
    confirmed it, and each revoked id with whether its session could be taken over."""

    number: int
    installed: bool
    cut: dict[str, bool]


def site_store(site: Site) -> trust.TrustStore:
    return trust.TrustStore([site.ca], [site.issuing] if site.issuing is not None else [])


def _client(site: Site) -> Any:
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    cert, key = site.admin_dir / "admin.pem", site.admin_dir / "admin.key"
    if not cert.exists():
        raise ProvisioningError(f"{cert} is missing: a site made before the admin identity gets it with "
                                f"'clinicam provision reissue {site.path} admin' (then 'provision acl')")
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=ADMIN, protocol=mqtt.MQTTv5)
    client.tls_set_context(client_context(site.ca_pem, cert, key))
    return client


def _connect(client: Any, host: str, port: int) -> None:
    try:
        client.connect(host, port, keepalive=30)
    except OSError as exc:
        raise ProvisioningError(f"cannot reach the broker at {host}:{port} ({exc}): run this where the broker "
                                "is reachable, or give --broker-host/--broker-port") from exc


def _session(site: Site, host: str, port: int, on_connect: Any, on_message: Any,
             done: threading.Event, timeout_s: float) -> None:
    """Connect as the admin identity, run the callbacks until ``done`` or ``timeout_s``, disconnect."""
    client = _client(site)
    client.on_connect, client.on_message = on_connect, on_message
    _connect(client, host, port)
    client.loop_start()
    try:
        done.wait(timeout_s)
    finally:
        client.disconnect()
        client.loop_stop()


def publish_root_bulletin(site: Site, *, host: str, port: int, timeout_s: float = 60.0) -> Published:
    """Publish ``site.root_bulletin_path`` (or the last published one), wait for the
    receipt, cut the revoked ids' sessions. Not installed within ``timeout_s``: no cut
    (the retained bulletin waits for the agent; run this again later)."""
    path = site.root_bulletin_path
    if not path.exists():
        path = path.with_name("crl-root-bulletin.published.json")
    try:
        payload = path.read_bytes()
    except OSError as exc:
        raise ProvisioningError(f"{site.root_bulletin_path} is missing: 'clinicam provision revoke' makes it") from exc
    try:
        bulletin = rv.parse_bulletin(payload, site_store(site))
    except rv.RevocationError as exc:
        raise ProvisioningError(f"{path}: {exc}") from exc
    prefix = site.prefix
    installed, done = threading.Event(), threading.Event()

    def on_connect(client: Any, _u: Any, _f: Any, rc: Any, _p: Any) -> None:
        if rc.is_failure:
            log.warning("admin: the broker refused the connection (%s)", rc)
            done.set()
            return
        client.subscribe(rv.installed_topic(prefix), qos=1)
        client.publish(rv.root_crl_topic(prefix), payload, qos=1, retain=True)

    def on_message(_c: Any, _u: Any, msg: Any) -> None:
        try:
            if rv.parse_receipt(bytes(msg.payload)).root >= bulletin.number:
                installed.set()
                done.set()
        except rv.RevocationError as exc:
            log.warning("admin: unreadable CRL receipt (%s)", exc)

    _session(site, host, port, on_connect, on_message, done, timeout_s)
    cut: dict[str, bool] = {}
    if installed.is_set():
        key = site.ca_key()
        for ident in bulletin.revoked:
            cut[ident] = kick(ident, host=host, port=port, ca=site.ca_pem, issuing_cert=site.ca, issuing_key=key)
        if path == site.root_bulletin_path:  # its ids are done: the next revoke does not carry them over
            path.replace(path.with_name("crl-root-bulletin.published.json"))
    return Published(bulletin.number, installed.is_set(), cut)


def fetch_registrar_bulletin(site: Site, *, host: str, port: int, timeout_s: float = 10.0) -> rv.Bulletin:
    """The registrar's retained bulletin from ``P/_site/crl``, verified against the site."""
    got: dict[str, bytes] = {}
    done = threading.Event()

    def on_connect(client: Any, _u: Any, _f: Any, rc: Any, _p: Any) -> None:
        if rc.is_failure:
            done.set()
            return
        client.subscribe(rv.crl_topic(site.prefix), qos=1)

    def on_message(_c: Any, _u: Any, msg: Any) -> None:
        got["payload"] = bytes(msg.payload)
        done.set()

    _session(site, host, port, on_connect, on_message, done, timeout_s)
    if "payload" not in got:
        raise ProvisioningError(f"no CRL bulletin on {rv.crl_topic(site.prefix)} within {timeout_s:g} s: is the "
                                "registrar running, and the ACL regenerated ('clinicam provision acl')?")
    try:
        return rv.parse_bulletin(got["payload"], site_store(site))
    except rv.RevocationError as exc:
        raise ProvisioningError(f"the registrar's CRL bulletin: {exc}") from exc


def crls_from_file(site: Site, path: Path) -> list[x509.CertificateRevocationList]:
    """The CRLs of ``path``: a bulletin (JSON, verified against the site) or PEM CRLs such
    as the relay host's ``[identity] crl``."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ProvisioningError(f"{path} cannot be read: give the relay host's crl.pem or a CRL bulletin") from exc
    if data.lstrip().startswith(b"{"):
        try:
            return rv.parse_bulletin(data, site_store(site)).crls
        except rv.RevocationError as exc:
            raise ProvisioningError(f"{path}: {exc}") from exc
    return trust.load_crls(data, str(path))
