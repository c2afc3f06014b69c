"""What ``clinicam provision show`` prints: identities, fingerprints, expiry, warnings.

Only public facts: ids, serials, fingerprints and dates. Private keys are never read
into a report beyond checking that they match.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field

from clinicam.protocol.recipient import load_recipient_public
from clinicam.provisioning import pki
from clinicam.provisioning.identity import DeviceIdentity
from clinicam.provisioning.site import Record, Site
from cryptography import x509

WARN_DAYS = 30


@dataclass
class Report:
    """Lines to print and warnings to print louder (certificates near or past expiry)."""

    lines: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def expiry(self, what: str, not_after: dt.datetime, now: dt.datetime, remedy: str) -> None:
        """Add ``what``'s expiry, and a warning when it is under 30 days away or past."""
        left = not_after - now
        self.lines.append(f"  expires:     {not_after:%Y-%m-%d %H:%M}Z ({left.days} days)")
        if left.total_seconds() < 0:
            self.warnings.append(f"{what} EXPIRED on {not_after:%Y-%m-%d}: {remedy}")
        elif left < dt.timedelta(days=WARN_DAYS):
            self.warnings.append(f"{what} expires in {left.days} days: {remedy}")


def describe_identity(ident: DeviceIdentity, now: dt.datetime | None = None) -> Report:
    """A station's installed identity."""
    now = now or pki.utcnow()
    r = Report()
    r.lines += [
        f"device:        {ident.device_id}",
        f"identity dir:  {ident.dir}",
        f"certificate:   serial {pki.serial_hex(ident.cert.serial_number)}",
        f"  sha256:      {pki.fingerprint(ident.cert)}",
    ]
    r.expiry(
        "device certificate",
        ident.not_after,
        now,
        "make a CSR with 'clinicam provision device-key' and have the site 'renew' it",
    )
    r.lines += [
        f"site CA:       {ident.ca.subject.rfc4514_string()}",
        f"  sha256:      {pki.fingerprint(ident.ca)}",
        f"recipient:     {ident.recipient.kem} {ident.recipient.fingerprint}",
        f"broker:        {ident.broker_host}:{ident.broker_port}",
        f"CRL:           {_crl_line(ident.crl)}",
    ]
    if ident.crl is not None and ident.crl.get_revoked_certificate_by_serial_number(ident.cert.serial_number):
        r.warnings.append("this station's certificate is REVOKED: the broker will refuse it")
    return r


def _crl_line(crl: x509.CertificateRevocationList | None) -> str:
    if crl is None:
        return "none installed"
    return f"{len(crl)} revoked, updated {crl.last_update_utc:%Y-%m-%d}"


def describe_site(site: Site, now: dt.datetime | None = None) -> Report:
    """A site: CA, broker, relays, recipient key and every issued certificate's state."""
    now = now or pki.utcnow()
    r = Report()
    r.lines += [
        f"site:          {site.name}",
        f"broker:        {', '.join(site.hosts)} port {site.port}",
        f"topic prefix:  {site.prefix}",
        f"recipient:     {site.kem} {_recipient_fingerprint(site)}",
        f"site CA:       sha256 {pki.fingerprint(site.ca)}",
    ]
    r.expiry("site CA", site.ca.not_valid_after_utc, now,
             "move the site to a new root: 'clinicam provision rotate-ca SITE'" if site.tiers == 2
             else "plan a new site CA and re-provision")
    rotation = site.read_info().get("rotation")
    if isinstance(rotation, dict):
        r.lines.append(f"CA rotation:   under way since {str(rotation.get('started', '?'))[:10]} (generation "
                       f"{rotation.get('generation')}); 'rotate-ca SITE --finish' once every station renewed")
    r.lines.append("issued:")
    records = [rec for rec in site.records() if rec.kind != "ca"]
    newer = superseded(records)
    for rec in records:
        state = _state(rec, now, newer)
        r.lines.append(f"  {rec.id:24} {rec.kind:8} {state:10} {rec.not_after[:10]} {rec.serial}")
        if state == "valid" and rec.expires - now < dt.timedelta(days=WARN_DAYS):
            r.warnings.append(f"{rec.id} ({rec.kind}) expires in {(rec.expires - now).days} days: renew it")
    return r


def _recipient_fingerprint(site: Site) -> str:
    return load_recipient_public((site.relay_dir / "recipient.pub").read_bytes()).fingerprint


def superseded(records: list[Record]) -> set[str]:
    """Serials replaced by a later certificate of the same id and kind (a renewal or a
    re-issue): still unexpired and unrevoked, but no longer the one in service. The
    register lists certificates in issuing order, so the later of two equal dates wins."""
    latest: dict[tuple[str, str], Record] = {}
    for rec in records:
        key = (rec.id, rec.kind)
        if rec.revoked_at is None and (key not in latest or rec.not_before >= latest[key].not_before):
            latest[key] = rec
    return {
        rec.serial for rec in records
        if rec.revoked_at is None and latest[(rec.id, rec.kind)].serial != rec.serial
    }


def _state(rec: Record, now: dt.datetime, newer: AbstractSet[str] = frozenset()) -> str:
    if rec.revoked_at:
        return "revoked"
    if now > rec.expires:
        return "expired"
    return "superseded" if rec.serial in newer else "valid"
