"""Operator identities: least privilege for the engineers who send station commands.

``clinicam relay cmd`` needs to write ``P/+/cmd`` and read ``P/+/event`` and
``P/+/status``. A relay certificate can do that, but it may also write ``P/+/ack``
(a forged "stored" ack makes a station drop a photo nobody filed) and read every
capture, and using a running relay's identity takes over its MQTT session (the broker
pins the client id to the CN). An operator certificate (CN ``operator-NAME``) gets
only the command rights, in ``broker/acl`` regenerated from the site register.

The key is made here, on the admin machine, like a relay's: an operator is a person
with a laptop, not a station with a secure element, and the key goes to ``--out``
only (mode 0600), never into the site directory.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

from clinicam.common.errors import ProvisioningError
from clinicam.provisioning import pki
from clinicam.provisioning.brokerconf import OPERATOR_PREFIX
from clinicam.provisioning.site import Site

MAX_NAME = 64 - len(OPERATOR_PREFIX)


@dataclass(frozen=True)
class IssuedOperator:
    """What ``issue_operator`` wrote: the identity's CN, its files and the new ACL."""

    cn: str
    cert: Path
    key: Path
    ca: Path
    acl: Path
    serial: str
    not_after: dt.datetime


def operator_cn(name: str) -> str:
    """``operator-NAME`` for a well-formed ``NAME``; a clear error otherwise."""
    cn = f"{OPERATOR_PREFIX}{name}"
    if not name or len(name) > MAX_NAME or not pki.ID_PATTERN.fullmatch(cn):
        raise ProvisioningError(
            f"--name {name!r}: use 1 to {MAX_NAME} characters of lowercase a-z, digits and '-' "
            "(for example 'it-jane'); the certificate is named operator-NAME"
        )
    return pki.check_id(cn, allow_reserved=True)


def issue_operator(
    site: Site, name: str, out: Path, *, days: int = pki.DEFAULT_DAYS, now: dt.datetime | None = None
) -> IssuedOperator:
    """Issue, register and write ``operator-NAME``; regenerate the broker ACL with it.

    A second valid certificate for the same name is refused: revoke the old one first,
    so that the register never holds a forgotten, still valid operator key.
    """
    now = now or pki.utcnow()
    cn = operator_cn(name)
    if site.valid_records(cn, now):
        raise ProvisioningError(
            f"{cn!r} already has a valid certificate: revoke it first with "
            f"'clinicam provision revoke {site.path} {cn}' if its key is lost or being replaced"
        )
    if days < 1:
        raise ProvisioningError("--days must be at least 1")
    out = Path(out)
    try:
        out.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise ProvisioningError(f"--out {out} cannot be created ({exc.strerror}): pick a writable folder") from exc
    key = pki.new_key()
    cert = site.issue(key.public_key(), cn, now=now, days=days, kind="operator")
    key_path, cert_path, ca_path = out / f"{cn}.key", out / f"{cn}.pem", out / "ca.pem"
    pki.write_private(key_path, pki.key_pem(key))
    pki.write_public(cert_path, pki.cert_pem(cert))
    pki.write_public(ca_path, site.ca_pem.read_bytes())
    acl = site.write_acl(now=now)
    return IssuedOperator(cn, cert_path, key_path, ca_path, acl, pki.serial_hex(cert.serial_number),
                          cert.not_valid_after_utc)  # fmt: skip
