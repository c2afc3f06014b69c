"""Moving a two-tier site to a new root and issuing CA without visiting stations (issue 17).

``begin`` (``clinicam provision rotate-ca SITE``, on the admin machine: it needs the
root key) makes the next generation — root R2, issuing CA I2, R2 cross-certified by
R1 — and the first trust update (``SITE/trust.json``: roots R2 and R1, issuing CA I2,
signed by R1). During the overlap every party trusts both roots: the broker agent
installs the update into Mosquitto's cafile, stations into their ``ca.pem``, and the
registrar issues from I2, so each station renews at once (its certificate is not from
the update's issuing CA). ``finish`` (``--finish``) re-issues the services under R2
and writes the last update (R2 alone, signed by R2, with the cross certificate).

Why the broker's server certificate stays under R1 until the end: a station that has
not yet taken the first update trusts R1 only, and must still be able to connect to
receive it.

docs/interfaces.md "CA rotation" has the protocol; README "Certificate lifecycle" the
administrator's steps. Layout during the overlap::

    SITE/ca/ca.key              R2's key (R1's moved to ca/previous/)
    SITE/ca.pem                 R2 then R1
    SITE/ca/cross.pem           R2 certified by R1
    SITE/ca/previous/           R1's and I1's keys and certificates, their last CRLs (crl.pem)
    SITE/chain.pem              I2 then I1; registrar/issuing.pem the same (the key is I2's)
    SITE/trust.json             the trust update for the registrar's [issuing] trust
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from clinicam.common.errors import ProvisioningError
from clinicam.protocol import trustann as ta
from clinicam.protocol.chain import load_certs, load_crls
from clinicam.provisioning import pki
from clinicam.provisioning.site import Site, _mkdir
from cryptography import x509


@dataclass(frozen=True)
class RotationStep:
    """What a step made: the trust update file and the roots it lists."""

    trust_file: Path
    number: int
    roots: list[x509.Certificate]
    issuing: x509.Certificate
    generation: int


def in_progress(site: Site) -> int | None:
    """The generation a rotation under way moves to, or ``None``."""
    rot = site.read_info().get("rotation")
    return int(rot["generation"]) if isinstance(rot, dict) else None


def begin(site: Site, *, now: dt.datetime | None = None) -> RotationStep:
    """Make the next CA generation and the first trust update (signed by the current root)."""
    now = now or pki.utcnow()
    if site.tiers != 2 or site.issuing is None:
        raise ProvisioningError("CA rotation needs a two-tier site: run 'clinicam provision two-tier SITE' first")
    info = site.read_info()
    if in_progress(site) is not None:
        raise ProvisioningError("a CA rotation is already under way: finish it with "
                                "'clinicam provision rotate-ca SITE --finish' first")
    old_root, old_key = site.ca, site.ca_key()
    old_issuing, old_issuing_key = site.issuing, site.issuing_key()
    gen = int(info.get("generation", 1)) + 1
    root_key, issuing_key = pki.new_key(), pki.new_key()
    root = pki.make_ca(root_key, site.name, now=now, path_length=1, name=pki.root_name(site.name, gen))
    issuing = pki.make_issuing_ca(root_key, root, issuing_key, site.name, gen, now=now)
    cross = pki.cross_certify(old_key, old_root, root, now=now)
    _keep_previous(site, gen - 1, old_root, old_issuing, old_issuing_key)
    ca_dir = site.path / "ca"
    pki.write_private(ca_dir / "ca.key", pki.key_pem(root_key, site.passphrase))
    pki.write_public(ca_dir / "cross.pem", pki.cert_pem(cross))
    pki.write_public(site.ca_pem, pki.cert_pem(root) + pki.cert_pem(old_root))
    issuing_pem = pki.cert_pem(issuing) + pki.cert_pem(old_issuing)
    pki.write_private(site.registrar_dir / "issuing.key", pki.key_pem(issuing_key))
    pki.write_public(site.registrar_dir / "issuing.pem", issuing_pem)
    pki.write_public(site.chain_pem, issuing_pem)
    site.ca, site.issuing = root, issuing
    site._record(root, "ca")
    site._record(issuing, "issuing")
    # The new CAs' CRLs start at number 1; the old generation's last CRLs stay in crl.pem.
    (ca_dir / "crl-root.pem").unlink(missing_ok=True)
    (site.registrar_dir / "crl-issuing.pem").unlink(missing_ok=True)
    site.write_crl(now=now, ca_key=root_key)
    _write_cafiles(site, [root, old_root], [issuing, old_issuing])
    new_crls = [c for c in load_crls(site.crl_pem.read_bytes(), "crl.pem") if c.issuer in (root.subject,
                                                                                          issuing.subject)]
    number = int(info.get("trust_number", 0)) + 1
    step = _write_trust(site, number, now, [root, old_root], issuing, new_crls, [], old_root, old_key, gen)
    info = site.read_info()
    info.update(generation=gen, trust_number=number, rotation={"generation": gen, "started": now.isoformat()})
    site.write_info(info)
    return step


def stations_behind(site: Site, now: dt.datetime | None = None) -> list[str]:
    """Station ids whose newest valid certificate is not from the current issuing CA."""
    now = now or pki.utcnow()
    assert site.issuing is not None
    newest: dict[str, tuple[str, x509.Certificate]] = {}
    for rec in site.records():
        if rec.kind == "device" and rec.valid_at(now):
            cert = site.certificate(rec)
            if rec.id not in newest or rec.not_after > newest[rec.id][0]:
                newest[rec.id] = (rec.not_after, cert)
    return sorted(d for d, (_, cert) in newest.items() if cert.issuer != site.issuing.subject)


def finish(site: Site, *, now: dt.datetime | None = None, force: bool = False) -> RotationStep:
    """Retire the old root: services under the new one, the last trust update (signed by it)."""
    now = now or pki.utcnow()
    gen = in_progress(site)
    if gen is None or site.issuing is None:
        raise ProvisioningError("no CA rotation is under way: start one with 'clinicam provision rotate-ca SITE'")
    behind = stations_behind(site, now)
    if behind and not force:
        raise ProvisioningError(
            f"{len(behind)} station(s) still hold a certificate of the old CA ({', '.join(behind[:10])}): "
            "import the registrar's journal ('clinicam provision import-renewals'), wait for them to renew, "
            "or retire them; --force cuts them off")
    root, root_key = site.ca, site.ca_key()
    site._issue_broker(root_key, now, pki.DEFAULT_DAYS)  # reissue() refuses it during the overlap
    for name in ("registrar", "broker-agent", *(f"relay-{n}" for n in range(1, site.relays + 1))):
        site.reissue(name, now=now)
    pki.write_public(site.ca_pem, pki.cert_pem(root))
    pki.write_public(site.chain_pem, pki.cert_pem(site.issuing))
    pki.write_public(site.registrar_dir / "issuing.pem", pki.cert_pem(site.issuing))
    previous = site.path / "ca" / "previous"
    if (previous / "crl.pem").exists():
        os.replace(previous / "crl.pem", previous / f"crl-{gen - 1}.pem")
    site.write_crl(now=now, ca_key=root_key)
    _write_cafiles(site, [root], [site.issuing])
    cross = load_certs((site.path / "ca" / "cross.pem").read_bytes(), "ca/cross.pem")
    info = site.read_info()
    number = int(info.get("trust_number", 0)) + 1
    step = _write_trust(site, number, now, [root], site.issuing, [], cross, root, root_key, gen)
    info = site.read_info()
    info["trust_number"] = number
    info.pop("rotation", None)
    site.write_info(info)
    return step


def _keep_previous(site: Site, gen: int, root: x509.Certificate, issuing: x509.Certificate,
                   issuing_key: pki.PrivateKey) -> None:
    """The old generation, offline in ``ca/previous/``: keys, certificates, its last CRLs."""
    previous = _mkdir(site.path / "ca" / "previous", 0o700)
    os.replace(site.path / "ca" / "ca.key", previous / f"ca-{gen}.key")
    pki.write_public(previous / f"ca-{gen}.pem", pki.cert_pem(root))
    pki.write_private(previous / f"issuing-{gen}.key", pki.key_pem(issuing_key))
    pki.write_public(previous / f"issuing-{gen}.pem", pki.cert_pem(issuing))
    crls = [site.path / "ca" / "crl-root.pem", site.registrar_dir / "crl-issuing.pem"]
    pki.write_public(previous / "crl.pem", b"".join(p.read_bytes() for p in crls if p.exists()))
    for p in crls:
        if p.exists():
            shutil.copy2(p, previous / f"{p.stem}-{gen}.pem")


def _write_cafiles(site: Site, roots: list[x509.Certificate], issuing: list[x509.Certificate]) -> None:
    """The public trust files: the broker's bundle, the relays' and the registrar's roots."""
    roots_pem = b"".join(pki.cert_pem(r) for r in roots)
    pki.write_public(site.broker_dir / "ca.pem", roots_pem + b"".join(pki.cert_pem(i) for i in issuing))
    pki.write_public(site.relay_dir / "ca.pem", roots_pem)
    pki.write_public(site.registrar_dir / "ca.pem", roots_pem)


def _write_trust(site: Site, number: int, now: dt.datetime, roots: list[x509.Certificate],
                 issuing: x509.Certificate, crls: list[x509.CertificateRevocationList],
                 cross: list[x509.Certificate], signer: x509.Certificate, signer_key: pki.PrivateKey,
                 gen: int) -> RotationStep:
    payload = ta.build_trust(number=number, at=now, roots=roots, issuing=issuing, crls=crls, cross=cross,
                             signer=signer, signer_key=signer_key)
    path = site.path / "trust.json"
    pki.write_public(path, payload)
    return RotationStep(path, number, roots, issuing, gen)
