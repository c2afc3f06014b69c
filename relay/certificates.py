"""The certificates this relay host holds, and when each ends: for ``relay status`` and the metrics.

A station's certificate end date comes from its status (``cert_not_after``) and it renews
itself on a two-tier site. The ones here do not renew themselves: the relay's client
certificate (397 days; ``clinicam provision reissue``), the site CA it trusts, the issuing
CA of a two-tier site (``[identity] chain``), and, when the registrar runs on this host,
its own certificate and the issuing CA it signs with. An expired relay certificate stops
all filing, so it is watched like the stations'. Only roles, common names (services and
CAs, never PHI) and dates leave this module.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from clinicam.common.errors import ClinicamError
from clinicam.protocol import chain as trust
from clinicam.relay.config import IdentitySection
from cryptography import x509
from cryptography.x509.oid import NameOID

# role -> what to do when it runs out (``relay status`` prints it)
REMEDY = {
    "relay": "'clinicam provision reissue SITE {name}' on the admin machine, install it as "
             "[identity] cert and restart the relay",
    "registrar": "'clinicam provision reissue SITE registrar' on the admin machine, install it "
                 "and restart the registrar",
    "site-ca": "move the site to a new root before then ('clinicam provision rotate-ca', README "
               "'Certificate lifecycle')",
    "issuing-ca": "rotate to a new root and issuing CA before then ('clinicam provision rotate-ca', README "
                  "'Certificate lifecycle')",
}


@dataclass(frozen=True)
class HeldCertificate:
    """One certificate on this host: its role, its CN, its notAfter (Unix seconds)."""

    role: str  # "relay", "site-ca", "issuing-ca", "registrar"
    name: str
    not_after: float
    source: str  # "[identity] cert: /etc/clinicam/relay/relay-1.pem", for messages


@dataclass(frozen=True)
class Unreadable:
    """A certificate file named in a configuration that cannot be read now."""

    source: str
    problem: str


def relay_certificates(identity: IdentitySection) -> Iterator[HeldCertificate | Unreadable]:
    """The relay's client certificate, its site CA and (two-tier) the issuing CA(s)."""
    yield from _read("relay", "[identity] cert", identity.cert, first_only=True)
    yield from _read("site-ca", "[identity] ca", identity.ca)
    if identity.chain:
        yield from _read("issuing-ca", "[identity] chain", identity.chain)


def registrar_certificates(config_path: Path) -> Iterator[HeldCertificate | Unreadable]:
    """The registrar's own certificate and its issuing CA, when it is configured here."""
    from clinicam.relay.registrar.config import load_registrar_config

    try:
        config = load_registrar_config(config_path)
    except ClinicamError as exc:
        yield Unreadable("the registrar's certificates", str(exc))  # the message names the file
        return
    yield from _read("registrar", f"{config_path.name} [identity] cert", config.identity.cert, first_only=True)
    yield from _read("issuing-ca", f"{config_path.name} [issuing] cert", config.issuing.cert, first_only=True)


def distinct(found: Iterable[HeldCertificate | Unreadable]) -> list[HeldCertificate | Unreadable]:
    """Each certificate once (the registrar's issuing CA is also the relays' chain)."""
    seen: set[tuple[str, str, float]] = set()
    out: list[HeldCertificate | Unreadable] = []
    for item in found:
        if isinstance(item, HeldCertificate):
            key = (item.role, item.name, item.not_after)
            if key in seen:
                continue
            seen.add(key)
        out.append(item)
    return out


def _read(role: str, key: str, path: str, *, first_only: bool = False) -> Iterator[HeldCertificate | Unreadable]:
    source = f"{key}: {path}"
    try:
        certs = trust.load_certs(Path(path).read_bytes(), source)
    except OSError as exc:
        yield Unreadable(source, f"cannot be read ({exc.strerror or type(exc).__name__})")
        return
    except ClinicamError as exc:
        yield Unreadable(source, str(exc))
        return
    for cert in certs[:1] if first_only else certs:  # a device.pem-like file: the leaf, then its CA
        yield HeldCertificate(role, _cn(cert), cert.not_valid_after_utc.timestamp(), source)


def _cn(cert: x509.Certificate) -> str:
    cns = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(cns[0].value) if cns else "?"
