"""Selftest of the installed identity: files and modes, certificate, CA, recipient key, CRL.

Each file is judged on its own, so one missing or foreign file gives its own precise
line instead of hiding the rest (``load_identity`` stops at the first problem, which
is right for a running station but not for a diagnosis). The broker check reuses what
was loaded here (:class:`IdentityReview`).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

from clinicam.common.errors import ConfigError, ProvisioningError
from clinicam.firmware.selftest.result import FAIL, PASS, WARN, CheckResult
from clinicam.firmware.uplink.recipient import STATE as RECIPIENT_STATE
from clinicam.protocol import certprofile
from clinicam.protocol import chain as trust
from clinicam.protocol.recipient import load_recipient_public
from clinicam.provisioning import identity, pki
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPublicKeyTypes
from cryptography.x509.oid import NameOID

REQUIRED = (identity.KEY, identity.CERT, identity.CA, identity.RECIPIENT, identity.BROKER)
EXPIRY_WARN = dt.timedelta(days=30)


def _cn(name: x509.Name) -> str:
    """The first CN of a name, for display (a CA or device name, never PHI)."""
    cns = name.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(cns[0].value) if cns else name.rfc4514_string()


def _day(when: dt.datetime) -> str:
    return f"{when:%Y-%m-%d}"


def _days(delta: dt.timedelta) -> str:
    n = abs(delta).days
    return "1 day" if n == 1 else f"{n} days"


class IdentityReview:
    """Loads the identity directory piece by piece and judges each piece."""

    def __init__(self, directory: Path, now: dt.datetime) -> None:
        self.dir = Path(directory)
        self.now = now
        self.key: pki.PrivateKey | None = None
        self.cert: x509.Certificate | None = None
        self.ca: x509.Certificate | None = None
        self.device_id: str | None = None
        self.broker: tuple[str, int] | None = None
        self.broker_problem = ""
        self.chain: tuple[x509.Certificate, ...] = ()  # issuing CA(s) after the leaf in device.pem
        self.path: list[x509.Certificate] = []  # the verified chain above the leaf
        self.roots: tuple[x509.Certificate, ...] = ()  # every root of ca.pem

    @property
    def install_remedy(self) -> str:
        return f"install the station's bundle: clinicam provision install --bundle BUNDLE --identity-dir {self.dir}"

    @property
    def renew_remedy(self) -> str:
        return (f"renew: clinicam provision renew SITE {self.dir / identity.CSR} --out device.pem on the site, "
                f"then clinicam provision install --bundle BUNDLE --identity-dir {self.dir}")

    def checks(self) -> list[tuple[str, Callable[[], CheckResult]]]:
        return [
            ("identity", self.check_files),
            ("certificate", self.check_certificate),
            ("ca", self.check_ca),
            ("recipient", self.check_recipient),
            ("crl", self.check_crl),
        ]

    # -- files and modes -------------------------------------------------------------

    def check_files(self) -> CheckResult:
        """Presence of every file, ``device.key`` private, nothing writable by others."""
        self.load_broker()
        if not self.dir.is_dir():
            return CheckResult("identity", FAIL, f"{self.dir} does not exist",
                               f"make the key with 'clinicam provision device-key {self.dir} --device ID', "
                               "have it signed, then install the bundle")
        if not os.access(self.dir, os.R_OK | os.X_OK):
            return CheckResult("identity", FAIL, f"{self.dir} cannot be read by this user",
                               "run the selftest as the station's user (e.g. sudo -u clinicam) or as root")
        problems: list[tuple[str, str]] = []
        mode = stat.S_IMODE(self.dir.stat().st_mode)
        if mode & 0o002:
            problems.append((f"{self.dir} is world-writable ({mode:04o})", f"chmod 700 {self.dir}"))
        missing = [name for name in REQUIRED if not (self.dir / name).exists()]
        if missing:
            problems.append((f"missing in {self.dir}: {', '.join(missing)}", self.install_remedy))
        problems += self._mode_problems()
        if self.broker_problem and identity.BROKER not in missing:
            problems.append((self.broker_problem, self.install_remedy))
        if problems:
            return CheckResult("identity", FAIL, "; ".join(p for p, _ in problems),
                               "; ".join(dict.fromkeys(r for _, r in problems)))
        present = [n for n in (*REQUIRED, identity.CRL) if (self.dir / n).exists()]
        key_mode = stat.S_IMODE((self.dir / identity.KEY).stat().st_mode)
        return CheckResult("identity", PASS, f"{self.dir}: {', '.join(present)}; {identity.KEY} {key_mode:04o}")

    def _mode_problems(self) -> list[tuple[str, str]]:
        problems = []
        key = self.dir / identity.KEY
        if key.exists():
            mode = stat.S_IMODE(key.stat().st_mode)
            if mode & 0o077:
                problems.append((f"{identity.KEY} is mode {mode:04o}, open to group or others", f"chmod 600 {key}"))
            elif not os.access(key, os.R_OK):
                problems.append((f"{identity.KEY} is not readable by this user",
                                 "run the selftest as the station's user (e.g. sudo -u clinicam)"))
        for name in (*REQUIRED[1:], identity.CRL):
            path = self.dir / name
            if path.exists() and stat.S_IMODE(path.stat().st_mode) & 0o022:
                problems.append((f"{name} is writable by group or others", f"chmod 644 {path}"))
        return problems

    def load_broker(self) -> None:
        """Read ``broker.json`` into ``broker`` (or say what is wrong with it in ``broker_problem``)."""
        path = self.dir / identity.BROKER
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            host, port = data["host"], data["port"]
        except FileNotFoundError:
            self.broker_problem = f"{identity.BROKER} is missing"
            return
        except (OSError, ValueError, KeyError, TypeError):
            self.broker_problem = f'{identity.BROKER} is not JSON {{"host", "port"}}'
            return
        if not isinstance(host, str) or not host or type(port) is not int or not 1 <= port <= 65535:
            self.broker_problem = f"{identity.BROKER} must hold a host name and a port 1-65535"
            return
        self.broker = (host, port)

    # -- certificates ----------------------------------------------------------------

    def _load_ca(self) -> x509.Certificate | None:
        if self.ca is None and (self.dir / identity.CA).exists():
            self.ca = pki.load_cert(self.dir / identity.CA, self.install_remedy)
        return self.ca

    def check_certificate(self) -> CheckResult:
        """Matches the key, chains to ``ca.pem``, is valid now, has clientAuth and a device-id CN."""
        name = "certificate"
        cert_path = self.dir / identity.CERT
        if not cert_path.exists():
            return CheckResult(name, FAIL, f"{identity.CERT} is missing", self.install_remedy)
        self.key = pki.load_key(self.dir / identity.KEY,
                                f"make it with 'clinicam provision device-key {self.dir} --device ID'")
        try:
            certs = trust.load_certs(cert_path.read_bytes(), str(cert_path))
        except (ConfigError, OSError):
            return CheckResult(name, FAIL, f"{identity.CERT} holds no readable PEM certificate", self.install_remedy)
        cert, self.chain = certs[0], tuple(certs[1:])
        if not pki.same_key(cert, self.key):
            return CheckResult(name, FAIL, f"{identity.CERT} does not belong to {identity.KEY}",
                               "install the certificate signed from this station's device.csr")
        try:
            ca = self._load_ca()
        except ProvisioningError:
            ca = None
        if ca is None:
            return CheckResult(name, FAIL, f"cannot check the chain: {identity.CA} is missing or unreadable",
                               self.install_remedy)
        try:
            # every root of ca.pem: two while a CA rotation overlaps (issue 17)
            self.roots = tuple(trust.load_certs((self.dir / identity.CA).read_bytes(), identity.CA))
        except (ConfigError, OSError):
            self.roots = (ca,)
        try:
            self.path = trust.TrustStore(self.roots, self.chain).path(cert, self.now)
        except trust.ChainError as exc:  # other issuer name, key or signature; a bad issuing CA
            why = "" if str(exc) == trust.NOT_ISSUED else f"{exc}; "
            return CheckResult(name, FAIL,
                               f"not issued by the site CA in {identity.CA} ({why}issuer: "
                               f"{_cn(cert.issuer)!r}, site CA: {_cn(ca.subject)!r})",
                               "install the certificate this site signed for this station (with its "
                               f"issuing CA, from 'clinicam provision bundle'), or the site's {identity.CA}")
        return self._judge_certificate(cert)


    def _judge_certificate(self, cert: x509.Certificate) -> CheckResult:
        name = "certificate"
        start, end = cert.not_valid_before_utc, cert.not_valid_after_utc
        if self.now < start:
            return CheckResult(name, FAIL, f"not valid before {start:%Y-%m-%d %H:%M}Z "
                               f"(in {_days(start - self.now)})",
                               "check this station's clock (timedatectl), or wait until then")
        if self.now > end:
            return CheckResult(name, FAIL, f"expired {_day(end)} ({_days(self.now - end)} ago)",
                               self.renew_remedy)
        if not pki.has_client_auth(cert):
            return CheckResult(name, FAIL, "not a client certificate (no clientAuth)",
                               "sign the station's device.csr with 'clinicam provision sign'")
        try:
            device_id = pki.check_id(pki.common_name(cert.subject, identity.CERT))
        except ProvisioningError as exc:
            return CheckResult(name, FAIL, f"its common name is not a device id: {exc}",
                               "sign a device.csr made by 'clinicam provision device-key' for this station")
        self.cert, self.device_id = cert, device_id
        left = end - self.now
        if not certprofile.has_station_policy(cert):
            return CheckResult(name, WARN, f"{device_id}: issued before the station certificate profile; "
                               "the relay files its photos only during a grace period",
                               self.renew_remedy)
        if left < EXPIRY_WARN:
            return CheckResult(name, WARN, f"{device_id}: expires {_day(end)} (in {_days(left)})",
                               self.renew_remedy)
        under = f" under root {_cn(self.path[-1].subject)!r}" if len(self.path) > 1 else ""
        if len(self.roots) > 1:
            under += f" ({identity.CA} trusts {len(self.roots)} roots: a CA rotation is under way)"
        return CheckResult(name, PASS, f"{device_id}, issued by {_cn(cert.issuer)!r}{under}, "
                           f"valid until {_day(end)} ({_days(left)})")

    def check_ca(self) -> CheckResult:
        """``ca.pem`` is a CA certificate (basic constraints, certificate signing), valid now."""
        if not (self.dir / identity.CA).exists():
            return CheckResult("ca", FAIL, f"{identity.CA} is missing", self.install_remedy)
        ca = self._load_ca()
        assert ca is not None
        try:
            is_ca = ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
        except x509.ExtensionNotFound:
            is_ca = False
        try:
            signs = ca.extensions.get_extension_for_class(x509.KeyUsage).value.key_cert_sign
        except x509.ExtensionNotFound:
            signs = True  # no key usage: not restricted
        if not (is_ca and signs):
            return CheckResult("ca", FAIL, f"{identity.CA} ({_cn(ca.subject)!r}) is not a CA certificate",
                               "install the site's ca.pem (from 'clinicam provision bundle')")
        if not ca.not_valid_before_utc <= self.now <= ca.not_valid_after_utc:
            return CheckResult("ca", FAIL, f"{_cn(ca.subject)!r} is valid only "
                               f"{_day(ca.not_valid_before_utc)} to {_day(ca.not_valid_after_utc)}",
                               "check this station's clock; a site CA past its end needs a new site")
        return CheckResult("ca", PASS, f"{_cn(ca.subject)!r}, valid until {_day(ca.not_valid_after_utc)}")

    # -- recipient and revocation ------------------------------------------------------

    def check_recipient(self) -> CheckResult:
        """The relay's public key that every capture key is wrapped to (DESIGN §4), and where
        it came from: the installed bundle, or the site's signed rotation announcement that
        the station verified against its root and recorded in ``recipient.json``."""
        path = self.dir / identity.RECIPIENT
        if not path.exists():
            return CheckResult("recipient", FAIL, f"{identity.RECIPIENT} is missing", self.install_remedy)
        key = load_recipient_public(path.read_bytes())
        sealing = f"{key.kem}, fingerprint {key.fingerprint}: new captures are sealed to it"
        try:
            adopted = json.loads((self.dir / RECIPIENT_STATE).read_text())
            fingerprint, at = str(adopted["fingerprint"]), str(adopted["at"])
        except FileNotFoundError:
            return CheckResult("recipient", PASS, f"{sealing}; as installed (no rotation announcement adopted)")
        except (OSError, ValueError, KeyError, TypeError):
            return CheckResult("recipient", WARN, f"{sealing}; {RECIPIENT_STATE} is unreadable",
                               f"remove {self.dir / RECIPIENT_STATE}: the next announcement rewrites it")
        if fingerprint != key.fingerprint:
            return CheckResult("recipient", WARN,
                               f"{sealing}; but the verified announcement of {at} named {fingerprint}",
                               f"{identity.RECIPIENT} was changed by hand: reinstall the bundle, or restart the "
                               "station so it takes the site's announcement again")
        return CheckResult("recipient", PASS, f"{sealing}; from the site's verified rotation announcement of {at}")

    def check_crl(self) -> CheckResult:
        """When ``crl.pem`` is installed: signed by the CA, current, not listing this station."""
        path = self.dir / identity.CRL
        if not path.exists():
            return CheckResult("crl", PASS, "none installed (optional: the broker enforces revocation)")
        try:
            crls = trust.load_crls(path.read_bytes(), str(path))
        except ConfigError:
            return CheckResult("crl", FAIL, f"{identity.CRL} is not a PEM CRL", "copy the site's crl.pem again")
        ca = self._load_ca()
        signers = {c.subject: c for c in (ca, *self.chain)} if ca is not None else {}
        for crl in crls:
            signer = signers.get(crl.issuer)
            if signer is None or not crl.is_signature_valid(cast(CertificateIssuerPublicKeyTypes, signer.public_key())):
                return CheckResult("crl", FAIL, f"{identity.CRL} is not signed by the site CA in {identity.CA}",
                                   "copy the site's crl.pem again")
        cert = self.cert or self._cert_if_any()
        issuer = cert.issuer if cert is not None else crls[0].issuer
        return self._judge_crl(next((c for c in crls if c.issuer == issuer), crls[0]))

    def _judge_crl(self, crl: x509.CertificateRevocationList) -> CheckResult:
        cert = self.cert or self._cert_if_any()
        if cert is not None:
            entry = crl.get_revoked_certificate_by_serial_number(cert.serial_number)
            if entry is not None:
                serial = pki.serial_hex(cert.serial_number)
                return CheckResult("crl", FAIL, f"this station's certificate (serial {serial}) "
                                   f"was revoked on {_day(entry.revocation_date_utc)}",
                                   "the site shut this station out: provision a new identity "
                                   "(clinicam provision device-key, sign, install)")
        listed = len(list(crl))
        nxt = crl.next_update_utc
        if nxt is not None and nxt < self.now:
            return CheckResult("crl", WARN, f"stale since {_day(nxt)} ({listed} revoked)",
                               "copy the site's current crl.pem ('clinicam provision crl' on the site)")
        return CheckResult("crl", PASS, f"{listed} revoked, this station not among them")

    def _cert_if_any(self) -> x509.Certificate | None:
        try:
            return pki.load_cert(self.dir / identity.CERT)
        except ProvisioningError:
            return None

    def any_device_id(self) -> str | None:
        """The CN of ``device.pem`` even when it failed its checks (expired, foreign), if well-formed."""
        cert = self.cert or self._cert_if_any()
        try:
            return pki.check_id(pki.common_name(cert.subject, identity.CERT)) if cert else None
        except ProvisioningError:
            return None


def check_renewal(section: Any, review: IdentityReview, now: dt.datetime) -> CheckResult:
    """The renewal margin, when this certificate renews, and the last outcome (issue 17)."""
    cert = review.cert
    if not section.enabled:
        until = f" before {_day(cert.not_valid_after_utc)}" if cert is not None else ""
        return CheckResult("renewal", WARN, f"automatic renewal is off: renew by hand{until}",
                           "set [renewal] enabled = true on a two-tier site (registrar)")
    if cert is None:
        return CheckResult("renewal", WARN, "no valid certificate to renew", review.install_remedy)
    start = cert.not_valid_after_utc - dt.timedelta(days=section.margin_days)
    when = "due now" if now >= start else f"from {_day(start)}"
    last = _last_renewal(review.dir)
    text = f"margin {section.margin_days:g} days, renews {when}; last: {last.get('state', 'never')}"
    if last.get("at"):
        text += f" {str(last['at'])[:10]}"
    if last.get("reason"):
        text += f" ({last['reason']})"
    if last.get("state") == "failed":
        return CheckResult("renewal", WARN, text, "check the registrar on the relay host "
                           "('clinicam relay registrar') and its journal")
    return CheckResult("renewal", PASS, text)


def _last_renewal(directory: Path) -> dict[str, Any]:
    try:
        data = json.loads((directory / "renewal.json").read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}
