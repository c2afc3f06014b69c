"""Revoking stations on the registrar host, and the CRL bulletin the registrar publishes.

The registrar host holds the issuing CA's key, so a station's revocation needs no visit
to the offline root: ``clinicam relay revoke ID`` adds every serial the registrar knows
for ``ID`` (its journal's renewals, plus ``--serial`` for the first certificate signed
on the admin machine) to the issuing CA's CRL inside ``[identity] crl`` with the next
CRL number, keeping every entry it had, and notes the id in ``[issuing] revocations``.
The running registrar sees the file change, publishes the signed bulletin
(``protocol.revocation``) retained on ``P/_site/crl``, and once the broker agent's
receipt names that number it cuts the revoked stations' sessions (``kick``).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path

from clinicam.common.errors import ConfigError
from clinicam.protocol import chain as trust
from clinicam.protocol import revocation as rv
from clinicam.provisioning import pki
from clinicam.relay.registrar.core import Journal
from cryptography import x509


def _read_crls(path: Path) -> list[x509.CertificateRevocationList]:
    try:
        return trust.load_crls(path.read_bytes(), f"[identity] crl: {path}")
    except OSError as exc:
        raise ConfigError(f"[identity] crl: {path} cannot be read: copy the site's crl.pem") from exc


class RevocationLog:
    """JSON lines ``{"number", "device", "serials", "at"}``: which ids each CRL number revoked."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def entries(self) -> list[dict[str, object]]:
        if not self.path.exists():
            return []
        try:
            return [json.loads(line) for line in self.path.read_text().splitlines() if line]
        except ValueError as exc:
            raise ConfigError(f"[issuing] revocations: {self.path} is damaged: move it aside") from exc

    def devices(self, number: int) -> list[str]:
        return sorted({str(e["device"]) for e in self.entries() if e.get("number") == number})

    def add(self, number: int, device: str, serials: Iterable[str], at: datetime) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a") as f:
            f.write(json.dumps({"number": number, "device": device, "serials": sorted(serials),
                                "at": at.isoformat()}, sort_keys=True) + "\n")


def revoke(device: str, *, serials: Iterable[str], crl_path: Path, issuing_cert: x509.Certificate,
           issuing_key: pki.PrivateKey, journal: Journal, log: RevocationLog, now: datetime) -> tuple[int, list[str]]:
    """Revoke ``device``: its renewed serials (journal) and ``serials``; returns (CRL number, serials)."""
    pki.check_id(device)
    wanted = {int(s, 16) for s in serials} | {int(e.serial, 16) for e in journal.issued()
                                                if e.device == device and e.serial}
    if not wanted:
        raise ConfigError(f"the registrar has issued nothing to {device!r}: give the serial of its first "
                          "certificate with --serial (see 'clinicam provision show --site')")
    crls = _read_crls(crl_path)
    own = [c for c in crls if c.issuer == issuing_cert.subject and c.is_signature_valid(issuing_cert.public_key())]  # type: ignore[arg-type]
    if len(own) != 1:
        raise ConfigError(f"[identity] crl: {crl_path} holds no CRL of the issuing CA: copy the site's crl.pem")
    old = own[0]
    listed = {r.serial_number: r.revocation_date_utc for r in old}
    added = sorted(wanted - set(listed))
    entries = [*listed.items(), *((s, now) for s in added)]
    number = rv.crl_number(old) + 1
    days = max(1, (issuing_cert.not_valid_after_utc - now).days)
    new = pki.make_crl(issuing_key, issuing_cert, entries, now=now, days=days, number=number)
    rv.successor([old], [new])  # never loses an entry, never goes back
    others = [c for c in crls if c is not old]
    pki.write_public(crl_path, rv.crls_pem([*others, new]))
    hexes = [pki.serial_hex(s) for s in sorted(wanted)]
    log.add(number, device, hexes, now)
    return number, hexes


def current_bulletin(*, crl_path: Path, issuing_cert: x509.Certificate, issuing_key: pki.PrivateKey,
                     log: RevocationLog, now: datetime) -> tuple[int, bytes, list[str]]:
    """The bulletin for the CRLs in ``crl_path`` now: (number, payload, ids revoked by that number)."""
    crls = _read_crls(crl_path)
    own = [c for c in crls if c.issuer == issuing_cert.subject]
    if len(own) != 1:
        raise ConfigError(f"[identity] crl: {crl_path} holds no CRL of the issuing CA: copy the site's crl.pem")
    number = rv.crl_number(own[0])
    ids = log.devices(number)
    payload = rv.build_bulletin(crls=crls, revoked=ids, at=now, signer_key=issuing_key,
                                signer_cert=issuing_cert)
    return number, payload, ids
