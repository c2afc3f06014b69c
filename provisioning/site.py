"""A clinicam site: its CA, register of issued certificates, CRL, broker and relay files.

Layout (DESIGN §7) keeps apart what must stay apart::

    SITE/ca.pem  crl.pem  site.json          public: copied to stations and relays
    SITE/ca/ca.key  register.json  issued/   the CA: keep offline
    SITE/broker/                             the broker's key, cert, config, ACL, CRL
    SITE/relay/                              relay workers' keys and the recipient key
    SITE/chain.pem  SITE/registrar/          two tiers: the issuing CA (docs/interfaces.md)
    SITE/admin/                              the admin machine's MQTT identity (root CRL bulletins)

A two-tier site (``"tiers": 2`` in site.json) signs station certificates with an
issuing CA whose key lives in ``registrar/`` (copied to the relay host, like
``relay/``); the root in ``ca/`` signs the issuing CA and the site's services only.

The register holds ids, serials, dates and fingerprints only: station names are not
PHI, and nothing about patients ever reaches the site PKI.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from clinicam.common.errors import ProvisioningError
from clinicam.protocol.chain import issued_by, load_certs
from clinicam.protocol.recipient import KEMS, generate_recipient_key
from clinicam.protocol.revocation import crl_number
from clinicam.provisioning import brokerconf, pki
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

RENEW_GRACE = dt.timedelta(days=30)


def normalise_kem(kem: str) -> str:
    """Map CLI spellings (``x25519``, ``mlkem768-x25519``) to DESIGN §4's names."""
    upper = kem.upper()
    if upper not in KEMS:
        raise ProvisioningError(f"unknown KEM {kem!r}: use x25519 or mlkem768-x25519")
    return upper


@dataclass
class Record:
    """One issued certificate in ``ca/register.json``."""

    id: str
    kind: str  # ca | issuing | broker | relay | registrar | operator | device | test
    serial: str  # lowercase hex
    not_before: str
    not_after: str
    fingerprint: str
    key: str  # SHA-256 of the SubjectPublicKeyInfo
    revoked_at: str | None = None
    issuer: str = "root"  # root | issuing (two-tier sites' station certificates)

    @classmethod
    def of(cls, cert: x509.Certificate, kind: str, issuer: str = "root") -> Record:
        return cls(
            id=pki.common_name(cert.subject, "certificate"),
            kind=kind,
            serial=pki.serial_hex(cert.serial_number),
            not_before=cert.not_valid_before_utc.isoformat(),
            not_after=cert.not_valid_after_utc.isoformat(),
            fingerprint=pki.fingerprint(cert),
            key=pki.spki_sha256(_ec_public(cert)),
            issuer=issuer,
        )

    @property
    def expires(self) -> dt.datetime:
        return dt.datetime.fromisoformat(self.not_after)

    def valid_at(self, now: dt.datetime) -> bool:
        return self.revoked_at is None and now <= self.expires


def _ec_public(cert: x509.Certificate) -> ec.EllipticCurvePublicKey:
    key = cert.public_key()
    assert isinstance(key, ec.EllipticCurvePublicKey)
    return key


def _mkdir(path: Path, mode: int) -> Path:
    path.mkdir(mode=mode, parents=True, exist_ok=True)
    os.chmod(path, mode)
    return path


class Site:
    """An opened site directory. Signing needs ``ca/ca.key``; reading does not."""

    def __init__(
        self, path: Path, *, passphrase: bytes | None = None, ask_passphrase: Callable[[], bytes] | None = None
    ) -> None:
        self.path = Path(path)
        # Of the root key, when site-init protected it; asked for only when signing needs it.
        self.passphrase = passphrase
        self.ask_passphrase = ask_passphrase
        remedy = "is this a site made by 'clinicam provision site-init'?"
        info = self._json(self.path / "site.json", remedy)
        try:
            self.name: str = info["site"]
            self.hosts: list[str] = list(info["broker"]["hosts"])
            self.port: int = int(info["broker"]["port"])
            self.prefix: str = info["topic_prefix"]
            self.kem: str = info["kem"]
            self.relays: int = int(info["relays"])
            self.tiers: int = int(info.get("tiers", 1))
        except (KeyError, TypeError, ValueError) as exc:
            raise ProvisioningError(f"{self.path / 'site.json'} lacks a field: {remedy}") from exc
        self.ca = pki.load_cert(self.ca_pem)
        self.issuing: x509.Certificate | None = pki.load_cert(self.chain_pem) if self.tiers == 2 else None

    # -- paths --------------------------------------------------------------------------

    @property
    def ca_pem(self) -> Path:
        return self.path / "ca.pem"

    @property
    def crl_pem(self) -> Path:
        return self.path / "crl.pem"

    @property
    def chain_pem(self) -> Path:
        """The issuing CA certificate (two-tier sites): public, for the broker and relays."""
        return self.path / "chain.pem"

    @property
    def registrar_dir(self) -> Path:
        return self.path / "registrar"

    @property
    def broker_dir(self) -> Path:
        return self.path / "broker"

    @property
    def relay_dir(self) -> Path:
        return self.path / "relay"

    @property
    def admin_dir(self) -> Path:
        """The admin machine's MQTT identity (CN ``admin``): it publishes the root's CRL bulletin."""
        return self.path / "admin"

    @property
    def root_bulletin_path(self) -> Path:
        """The root's signed CRL bulletin, made by ``revoke``, sent by ``publish-crl``."""
        return self.admin_dir / "crl-root-bulletin.json"

    @property
    def register_path(self) -> Path:
        return self.path / "ca" / "register.json"

    def relay_files(self, n: int) -> tuple[Path, Path]:
        """``(cert, key)`` of relay worker ``n`` (from 1)."""
        return self.relay_dir / f"relay-{n}.pem", self.relay_dir / f"relay-{n}.key"

    # -- creation -----------------------------------------------------------------------

    @classmethod
    def create(
        cls,
        path: Path,
        name: str,
        hosts: Sequence[str],
        *,
        port: int = brokerconf.DEFAULT_PORT,
        relays: int = 1,
        kem: str = "MLKEM768-X25519",
        prefix: str = brokerconf.DEFAULT_PREFIX,
        conf_dir: str = brokerconf.DEFAULT_CONF_DIR,
        now: dt.datetime | None = None,
        tiers: int = 2,
        passphrase: bytes | None = None,
    ) -> Site:
        """Make a new site: CA, broker files, relay identities, recipient key, empty CRL.

        ``tiers=2`` (the default) adds the issuing CA (as ``two_tier`` does for an
        existing site); ``tiers=1`` keeps one site CA (small sites, renewals by hand);
        ``passphrase`` encrypts the root key.
        """
        now = now or pki.utcnow()
        path = Path(path)
        _check_new_site(path, name, hosts, port, relays)
        kem = normalise_kem(kem)
        if tiers not in (1, 2):
            raise ProvisioningError("--tiers must be 1 (one site CA) or 2 (offline root and issuing CA)")
        _mkdir(path, 0o755)
        ca_key = pki.new_key()
        ca = pki.make_ca(ca_key, name, now=now, path_length=tiers - 1)
        pki.write_private(_mkdir(path / "ca", 0o700) / "ca.key", pki.key_pem(ca_key, passphrase))
        pki.write_public(path / "ca.pem", pki.cert_pem(ca))
        _write_json(path / "ca" / "register.json", {"site": name, "certificates": [asdict(Record.of(ca, "ca"))]})
        recipient = generate_recipient_key(kem)
        info = {
            "site": name,
            "broker": {"hosts": list(hosts), "port": port},
            "topic_prefix": prefix,
            "kem": kem,
            "recipient": recipient.fingerprint,
            "relays": relays,
        }
        _write_json(path / "site.json", info, mode=0o644)
        site = cls(path, passphrase=passphrase)
        site._create_broker(ca_key, conf_dir, now)
        site._create_relays(ca_key, now)
        pki.write_public(site.relay_dir / "ca.pem", pki.cert_pem(ca))  # relay.toml [identity] ca
        pki.write_private(site.relay_dir / "recipient.key", recipient.private_pem())
        pki.write_public(site.relay_dir / "recipient.pub", recipient.public_pem())
        site.write_crl(now=now, ca_key=ca_key)
        site._issue_admin(ca_key, now, pki.DEFAULT_DAYS)
        site._issue_broker_agent(ca_key, now, pki.DEFAULT_DAYS)
        if tiers == 2:
            site._add_issuing_ca(ca_key, now)
        return site

    # -- two tiers ----------------------------------------------------------------------

    def two_tier(self, *, now: dt.datetime | None = None) -> x509.Certificate:
        """Migrate a single-tier site: re-issue the root for one CA level below it and make
        the issuing CA. Returns the issuing CA certificate.

        The root keeps its key, name and end date, so everything it signed still
        verifies; only its path length changes from 0 to 1 (OpenSSL, hence the broker,
        enforces it). Station certificates issued so far stay valid until they renew.
        """
        now = now or pki.utcnow()
        if self.tiers == 2:
            raise ProvisioningError(f"{self.path} already has two tiers (site.json \"tiers\": 2): nothing to do")
        ca_key = self.ca_key()
        root = pki.make_ca(ca_key, self.name, now=now, path_length=1, name=self.ca.subject,
                           not_after=self.ca.not_valid_after_utc)
        pki.write_public(self.ca_pem, pki.cert_pem(root))
        self.ca = root
        self._save([*self.records(), Record.of(root, "ca")])
        return self._add_issuing_ca(ca_key, now)

    def _add_issuing_ca(self, ca_key: pki.PrivateKey, now: dt.datetime) -> x509.Certificate:
        key = pki.new_key()
        issuing = pki.make_issuing_ca(ca_key, self.ca, key, self.name, 1, now=now)
        pki.write_private(_mkdir(self.registrar_dir, 0o700) / "issuing.key", pki.key_pem(key))
        pki.write_public(self.registrar_dir / "issuing.pem", pki.cert_pem(issuing))
        pki.write_public(self.chain_pem, pki.cert_pem(issuing))
        self._record(issuing, "issuing")
        info = self._json(self.path / "site.json", "restore it from the site's backup")
        info["tiers"] = 2
        _write_json(self.path / "site.json", info, mode=0o644)
        self.tiers, self.issuing = 2, issuing
        pki.write_public(self.broker_dir / "ca.pem", pki.cert_pem(self.ca) + pki.cert_pem(issuing))
        self.write_crl(now=now, ca_key=ca_key)
        self._issue_registrar(ca_key, now, pki.DEFAULT_DAYS)
        if not (self.broker_dir / "agent.pem").exists():  # a site from before the agent
            self._issue_broker_agent(ca_key, now, pki.DEFAULT_DAYS)
        pki.write_public(self.registrar_dir / "ca.pem", pki.cert_pem(self.ca))
        self.write_acl(now=now)
        return issuing

    def _issue_registrar(self, ca_key: pki.PrivateKey, now: dt.datetime, days: int) -> Path:
        """The registrar's own MQTT identity (CN ``registrar``), from the root like every service."""
        key = pki.new_key()
        cert = self.issue(key.public_key(), "registrar", now=now, days=days, kind="registrar", ca_key=ca_key)
        pki.write_private(self.registrar_dir / "registrar.key", pki.key_pem(key))
        pki.write_public(self.registrar_dir / "registrar.pem", pki.cert_pem(cert))
        return self.registrar_dir / "registrar.pem"

    def _issue_broker_agent(self, ca_key: pki.PrivateKey, now: dt.datetime, days: int) -> Path:
        """The broker agent's identity (CN ``broker-agent``, ``broker/agent.pem``): it installs
        the CRL bulletins on the broker host (``clinicam broker agent``)."""
        key = pki.new_key()
        cert = self.issue(key.public_key(), "broker-agent", now=now, days=days, kind="broker", ca_key=ca_key)
        pki.write_private(self.broker_dir / "agent.key", pki.key_pem(key))
        pki.write_public(self.broker_dir / "agent.pem", pki.cert_pem(cert))
        return self.broker_dir / "agent.pem"

    def _issue_admin(self, ca_key: pki.PrivateKey, now: dt.datetime, days: int) -> Path:
        """The admin machine's identity (CN ``admin``, ``admin/admin.pem``): publishes the
        root's CRL bulletin and reads the registrar's; nothing else (``brokerconf``)."""
        key = pki.new_key()
        cert = self.issue(key.public_key(), "admin", now=now, days=days, kind="admin", ca_key=ca_key)
        _mkdir(self.admin_dir, 0o700)
        pki.write_private(self.admin_dir / "admin.key", pki.key_pem(key))
        pki.write_public(self.admin_dir / "admin.pem", pki.cert_pem(cert))
        return self.admin_dir / "admin.pem"

    def issuing_key(self) -> pki.PrivateKey:
        return pki.load_key(
            self.registrar_dir / "issuing.key",
            "station signing on a two-tier site needs registrar/issuing.key: run this where it is",
        )

    def _create_broker(self, ca_key: pki.PrivateKey, conf_dir: str, now: dt.datetime) -> None:
        # 0755: Mosquitto drops to its own user before it reads the ACL and the CRL, so a
        # copy of this folder must stay readable; the key alone is private (0600).
        d = _mkdir(self.broker_dir, 0o755)
        self._issue_broker(ca_key, now, pki.DEFAULT_DAYS)
        pki.write_public(d / "ca.pem", pki.cert_pem(self.ca))
        conf = brokerconf.render_conf(self.name, port=self.port, conf_dir=conf_dir)
        pki.write_public(d / "mosquitto.conf", conf.encode())
        self.write_acl(now=now)

    def _create_relays(self, ca_key: pki.PrivateKey, now: dt.datetime) -> None:
        _mkdir(self.relay_dir, 0o700)
        for n in range(1, self.relays + 1):
            self._issue_relay(n, ca_key, now, pki.DEFAULT_DAYS)

    def _issue_broker(self, ca_key: pki.PrivateKey, now: dt.datetime, days: int) -> None:
        key = pki.new_key()
        cert = pki.issue(ca_key, self.ca, key.public_key(), "broker", now=now, days=days,
                         server_hosts=self.hosts)  # fmt: skip
        self._record(cert, "broker")
        pki.write_private(self.broker_dir / "broker.key", pki.key_pem(key))
        pki.write_public(self.broker_dir / "broker.pem", pki.cert_pem(cert))

    def _issue_relay(self, n: int, ca_key: pki.PrivateKey, now: dt.datetime, days: int) -> None:
        key = pki.new_key()
        cert = self.issue(key.public_key(), f"relay-{n}", now=now, days=days, kind="relay",
                          ca_key=ca_key)  # fmt: skip
        cert_path, key_path = self.relay_files(n)
        pki.write_private(key_path, pki.key_pem(key))
        pki.write_public(cert_path, pki.cert_pem(cert))

    def reissue(self, name: str, *, now: dt.datetime | None = None, days: int = pki.DEFAULT_DAYS) -> Path:
        """New key and certificate for the broker or a relay worker (their keys live here).

        The old certificate stays valid until it expires; ``revoke`` its serial to cut it.
        """
        now = now or pki.utcnow()
        if name == "broker" and "rotation" in self.read_info():
            raise ProvisioningError(
                "a CA rotation is under way: the broker keeps its certificate from the old root until "
                "'clinicam provision rotate-ca SITE --finish' (stations that have not yet taken the new "
                "roots must still verify it)")
        if name == "broker":
            self._issue_broker(self.ca_key(), now, days)
            return self.broker_dir / "broker.pem"
        if name == "registrar" and self.issuing is not None:
            return self._issue_registrar(self.ca_key(), now, days)
        if name == "broker-agent":
            return self._issue_broker_agent(self.ca_key(), now, days)
        if name == "admin":
            return self._issue_admin(self.ca_key(), now, days)
        number = name.removeprefix("relay-")
        if not number.isdigit() or not 1 <= int(number) <= self.relays:
            raise ProvisioningError(
                f"{name!r} is not a service of this site: use 'broker', 'broker-agent', 'admin', "
                f"'registrar' (two tiers) or relay-1 … relay-{self.relays}"
            )
        self._issue_relay(int(number), self.ca_key(), now, days)
        return self.relay_files(int(number))[0]

    # -- the register -------------------------------------------------------------------

    def records(self) -> list[Record]:
        remedy = "restore it from the site's backup"
        data = self._json(self.register_path, remedy)
        try:
            return [Record(**r) for r in data["certificates"]]
        except (KeyError, TypeError) as exc:
            raise ProvisioningError(f"{self.register_path} is damaged: {remedy}") from exc

    def _save(self, records: list[Record]) -> None:
        _write_json(self.register_path, {"site": self.name, "certificates": [asdict(r) for r in records]})

    def _record(self, cert: x509.Certificate, kind: str, issuer: str = "root") -> None:
        self._save([*self.records(), Record.of(cert, kind, issuer)])
        pki.write_public(self.path / "ca" / "issued" / f"{pki.serial_hex(cert.serial_number)}.pem", pki.cert_pem(cert))

    def valid_records(self, ident: str, now: dt.datetime) -> list[Record]:
        return [r for r in self.records() if r.id == ident and r.valid_at(now)]

    def certificate(self, record: Record) -> x509.Certificate:
        return pki.load_cert(self.path / "ca" / "issued" / f"{record.serial}.pem")

    # -- signing ------------------------------------------------------------------------

    def ca_key(self) -> pki.PrivateKey:
        path = self.path / "ca" / "ca.key"
        if self.passphrase is None and self.ask_passphrase is not None and _encrypted(path):
            self.passphrase = self.ask_passphrase()
        return pki.load_key(
            path,
            "signing needs the site CA key: run this where the offline ca/ folder is mounted",
            self.passphrase,
        )

    def issue(
        self,
        public_key: ec.EllipticCurvePublicKey,
        cn: str,
        *,
        now: dt.datetime | None = None,
        days: int = pki.DEFAULT_DAYS,
        kind: str = "device",
        ca_key: pki.PrivateKey | None = None,
    ) -> x509.Certificate:
        """Issue and register a clientAuth certificate; no checks beyond the id's form.

        Only ``kind="device"`` (``sign``, ``renew``) gets the station profile.
        """
        pki.check_id(cn, allow_reserved=kind != "device")
        now = now or pki.utcnow()
        if kind == "device" and self.issuing is not None:
            # Two tiers: stations come from the issuing CA, never the root.
            cert = pki.issue(self.issuing_key(), self.issuing, public_key, cn, now=now, days=days, station=True)
            self._record(cert, kind, issuer="issuing")
            return cert
        cert = pki.issue(ca_key or self.ca_key(), self.ca, public_key, cn, now=now, days=days,
                         station=kind == "device")
        self._record(cert, kind)
        return cert

    def sign(
        self, csr_pem: bytes, *, where: str = "CSR", days: int = pki.DEFAULT_DAYS, now: dt.datetime | None = None
    ) -> x509.Certificate:
        """Sign a station's CSR for a new id; refuse an id that already has a valid certificate."""
        now = now or pki.utcnow()
        csr = pki.parse_csr(csr_pem, where)
        ident = pki.check_csr(csr, where)
        if self.valid_records(ident, now):
            raise ProvisioningError(
                f"{ident!r} already has a valid certificate: use 'clinicam provision renew' for "
                "the same station, or 'revoke' it first if it is being replaced"
            )
        cert = self.issue(_csr_key(csr), ident, now=now, days=days)
        self.write_acl(now=now)  # the broker grants station rights per registered station
        return cert

    def renew(
        self, csr_pem: bytes, *, where: str = "CSR", days: int = pki.DEFAULT_DAYS, now: dt.datetime | None = None
    ) -> x509.Certificate:
        """New certificate for an id whose last one is valid or expired less than 30 days ago."""
        now = now or pki.utcnow()
        csr = pki.parse_csr(csr_pem, where)
        ident = pki.check_csr(csr, where)
        mine = [r for r in self.records() if r.id == ident and r.kind == "device"]
        if not mine:
            raise ProvisioningError(f"{ident!r} was never issued here: use 'clinicam provision sign'")
        if any(r.revoked_at for r in mine) and not any(r.valid_at(now) for r in mine):
            raise ProvisioningError(
                f"{ident!r} was revoked: a revoked station is not renewed; sign a new id after checking it"
            )
        if not any(r.revoked_at is None and now <= r.expires + RENEW_GRACE for r in mine):
            raise ProvisioningError(
                f"{ident!r} expired more than 30 days ago: sign it again with 'clinicam provision sign'"
            )
        cert = self.issue(_csr_key(csr), ident, now=now, days=days)
        self.write_acl(now=now)  # an id whose last certificate had lapsed is back in it
        return cert

    def revoke(self, target: str, *, now: dt.datetime | None = None, issuing: bool = True) -> list[Record]:
        """Revoke every unrevoked certificate of an id, or one by serial; rewrite the CRLs.

        A revocation by the root also writes the root's signed CRL bulletin
        (``root_bulletin_path``) for ``publish-crl``. ``issuing=False`` (the CLI) refuses
        certificates of the issuing CA: on a two-tier site the issuing CA's CRL has one
        author, the registrar host (``relay revoke``), whose CRL numbers would collide.
        """
        now = now or pki.utcnow()
        records = self.records()
        serial = _serial_of(target)
        hit = [r for r in records if r.revoked_at is None and (r.id == target or int(r.serial, 16) == serial)]
        hit = [r for r in hit if r.kind != "ca"]
        if not hit:
            raise ProvisioningError(
                "nothing to revoke: no unrevoked certificate has that id or serial "
                "(see 'clinicam provision show --site')"
            )
        if not issuing and any(r.issuer == "issuing" for r in hit):
            raise ProvisioningError(
                f"{target!r} holds a certificate of the issuing CA: on a two-tier site revoke it on the relay "
                f"host ('clinicam relay revoke --config /etc/clinicam/registrar.toml {target}'), then bring "
                "the register up to date here with 'clinicam provision import-revocations SITE'"
            )
        for r in hit:
            r.revoked_at = now.isoformat()
        self._save(records)
        # Re-sign only the CRLs whose issuer revoked something: a station revoked on a
        # two-tier site needs the issuing key, not the offline root.
        self.write_crl(now=now, issuers={r.issuer for r in hit})
        self.write_acl(now=now)  # the CRL shuts the certificate out; the ACL drops its rights too
        if any(r.issuer == "root" for r in hit):
            self._write_root_bulletin([r.id for r in hit if r.issuer == "root"], now)
        return hit

    def _write_root_bulletin(self, ids: Sequence[str], now: dt.datetime) -> Path:
        """The root's CRL as a signed bulletin; ids of a bulletin not yet published carry over."""
        from clinicam.protocol import revocation as rv

        pending: list[str] = []
        if self.root_bulletin_path.exists():
            try:
                pending = list(json.loads(self.root_bulletin_path.read_text())["revoked"])
            except (OSError, ValueError, KeyError, TypeError):
                pending = []
        wanted = sorted({i for i in [*pending, *ids] if rv.is_identity(i) and i != "broker"})
        crl = x509.load_pem_x509_crl((self.path / "ca" / "crl-root.pem").read_bytes())
        payload = rv.build_bulletin(crls=[crl], revoked=wanted, at=now, signer_key=self.ca_key(),
                                    signer_cert=self.ca)
        _mkdir(self.admin_dir, 0o700)
        pki.write_public(self.root_bulletin_path, payload)
        return self.root_bulletin_path

    def import_revocations(self, crls: Sequence[x509.CertificateRevocationList], *,
                           now: dt.datetime | None = None) -> list[Record]:
        """Bring the register in step with revocations made elsewhere (the registrar host's
        ``relay revoke``): the site CRLs are the source of truth for who is revoked.

        Each CRL must be signed by this site's root or issuing CA; per issuer the newer
        one is kept (never an older one, never one that drops an entry) as the site's CRL
        file, and every register record it lists is marked revoked; the ACL is rewritten
        without them. Returns the records newly marked.
        """
        from clinicam.protocol import revocation as rv

        now = now or pki.utcnow()
        parts = {"root": self.path / "ca" / "crl-root.pem", "issuing": self.registrar_dir / "crl-issuing.pem"}
        signers = {"root": self.ca, "issuing": self.issuing}
        for which, cert in signers.items():
            mine = [c for c in crls if cert is not None and c.issuer == cert.subject]
            if not mine or cert is None:
                continue
            if not all(c.is_signature_valid(_ec_public(cert)) for c in mine):
                raise ProvisioningError(f"a CRL of {cert.subject.rfc4514_string()} is not signed by this site's CA")
            held = [x509.load_pem_x509_crl(parts[which].read_bytes())] if parts[which].exists() else []
            try:
                merged = rv.successor(held, mine)
            except rv.RevocationError as exc:
                raise ProvisioningError(f"{exc}: is this the site's newest CRL?") from exc
            if rv.crls_pem(merged) != rv.crls_pem(held):
                pki.write_public(parts[which], rv.crls_pem(merged))
        pem = b"".join(parts[w].read_bytes() for w, c in signers.items() if c is not None)
        pki.write_public(self.crl_pem, pem)
        pki.write_public(self.broker_dir / "crl.pem", pem)
        marked = self._mark_listed()
        self.write_acl(now=now)
        return marked

    def _mark_listed(self) -> list[Record]:
        """Mark revoked every record whose serial its issuer's CRL (in ``crl.pem``) lists."""
        from clinicam.protocol import chain as trust

        listed: dict[tuple[str, int], dt.datetime] = {}
        names = {"root": self.ca.subject, "issuing": self.issuing.subject if self.issuing else None}
        for crl in trust.load_crls(self.crl_pem.read_bytes(), str(self.crl_pem)):
            for which, name in names.items():
                if crl.issuer == name:
                    listed.update({(which, r.serial_number): r.revocation_date_utc for r in crl})
        records, marked = self.records(), []
        for r in records:
            when = listed.get((r.issuer, int(r.serial, 16)))
            if r.revoked_at is None and when is not None:
                r.revoked_at = when.isoformat()
                marked.append(r)
        if marked:
            self._save(records)
        return marked

    def import_renewals(self, journal: Path, *, now: dt.datetime | None = None) -> list[Record]:
        """Add the certificates the registrar issued (its journal) to the register.

        Renewals happen on the relay host; the register on the admin machine must know
        their serials, or ``revoke ID`` would leave a renewed certificate valid. Each is
        checked (issued by this site's issuing CA, a station id) before it is recorded;
        ones already recorded are skipped, so importing twice is harmless.
        """
        if self.issuing is None:
            raise ProvisioningError("this site has one tier: there is no registrar journal to import")
        known = {r.serial for r in self.records()}
        added: list[Record] = []
        for n, cert in enumerate(_journal_certs(journal), 1):
            where = f"{journal} line {n}"
            if not any(issued_by(cert, ca) for ca in self.issuing_cas()):
                raise ProvisioningError(f"{where}: not issued by this site's issuing CA: is it this site's "
                                        "journal?")
            pki.check_id(pki.common_name(cert.subject, where))
            serial = pki.serial_hex(cert.serial_number)
            if serial in known:
                continue
            self._record(cert, "device", issuer="issuing")
            known.add(serial)
            added.append(Record.of(cert, "device", "issuing"))
        if added:
            self._mark_listed()  # imported after its revocation: stays revoked, never re-admitted
            self.write_acl(now=now)
        return added

    def write_acl(self, *, now: dt.datetime | None = None) -> Path:
        """Regenerate ``broker/acl``: site.json's relays, the stations and operators valid ``now``."""
        now = now or pki.utcnow()
        valid = [r for r in self.records() if r.valid_at(now)]
        ops = [r.id for r in valid if r.kind == "operator"]
        stations = [r.id for r in valid if r.kind == "device"]
        acl = brokerconf.render_acl(prefix=self.prefix, relays=self.relays, operators=ops, stations=stations,
                                    registrar=self.tiers == 2)
        pki.write_public(self.broker_dir / "acl", acl.encode())
        return self.broker_dir / "acl"

    def write_crl(
        self, *, now: dt.datetime | None = None, ca_key: pki.PrivateKey | None = None,
        issuers: set[str] | None = None,
    ) -> Path:
        """Write ``crl.pem`` for relays and ``broker/crl.pem`` for the broker.

        On a two-tier site both hold the root's CRL followed by the issuing CA's
        (Mosquitto's ``crlfile`` loads every CRL of the file, and OpenSSL checks a leaf
        against its own issuer's CRL). ``issuers`` re-signs only those CRLs (``root``,
        ``issuing``); the others are kept as last signed.

        The CRL lives as long as the CA: it is pushed to the broker and relays, never
        fetched, so a short ``nextUpdate`` would add no freshness, only a day when a
        forgotten refresh locks every station out.
        """
        now = now or pki.utcnow()
        issuers = {"root", "issuing"} if issuers is None else issuers
        parts = {"root": self.path / "ca" / "crl-root.pem", "issuing": self.registrar_dir / "crl-issuing.pem"}
        signers = {"root": self.ca, "issuing": self.issuing}
        for which, cert in signers.items():
            if cert is None or which not in issuers:
                continue
            revoked = [(int(r.serial, 16), dt.datetime.fromisoformat(r.revoked_at)) for r in self.records()
                       if r.revoked_at and r.issuer == which]
            days = max(1, (cert.not_valid_after_utc - now).days)
            key = (ca_key or self.ca_key()) if which == "root" else self.issuing_key()
            number = _next_crl_number(parts[which])
            pki.write_public(parts[which], pki.crl_pem(pki.make_crl(key, cert, revoked, now=now, days=days,
                                                                    number=number)))
        pem = b"".join(parts[w].read_bytes() for w, c in signers.items() if c is not None)
        pem += self._previous_crls()
        pki.write_public(self.crl_pem, pem)
        pki.write_public(self.broker_dir / "crl.pem", pem)
        return self.crl_pem

    def _previous_crls(self) -> bytes:
        """The last CRLs of the CA generation a rotation replaces (``provision rotate-ca``):
        they stay in ``crl.pem`` until the rotation finishes, since the broker checks a
        certificate against its own issuer's CRL."""
        path = self.path / "ca" / "previous" / "crl.pem"
        return path.read_bytes() if path.exists() else b""

    def read_info(self) -> dict:
        """``site.json`` as it is on disk."""
        return self._json(self.path / "site.json", "restore it from the site's backup")

    def write_info(self, info: dict) -> None:
        _write_json(self.path / "site.json", info, mode=0o644)

    def issuing_cas(self) -> list[x509.Certificate]:
        """Every issuing CA of ``chain.pem`` (two during a CA rotation, the current first)."""
        return load_certs(self.chain_pem.read_bytes(), str(self.chain_pem)) if self.issuing is not None else []

    # -- station bundle -----------------------------------------------------------------

    def bundle(self, device: str, out: Path, *, now: dt.datetime | None = None) -> Path:
        """Gather the public files a station installs: CA, its certificate, CRL, recipient, broker."""
        now = now or pki.utcnow()
        pki.check_id(device)
        valid = [r for r in self.valid_records(device, now) if r.kind == "device"]
        if not valid:
            raise ProvisioningError(f"{device!r} has no valid certificate: sign its CSR first")
        newest = max(valid, key=lambda r: r.not_after)
        out = Path(out)
        leaf = self.certificate(newest)
        # its own issuing CA: during a CA rotation chain.pem holds the new one and the old one
        chain = b"".join(pki.cert_pem(c) for c in self.issuing_cas() if c.subject == leaf.issuer)
        # A chain file: the certificate, then its issuing CA (sent in the TLS handshake).
        pki.write_public(out / "device.pem", pki.cert_pem(leaf) + chain)
        pki.write_public(out / "ca.pem", self.ca_pem.read_bytes())
        pki.write_public(out / "crl.pem", self.crl_pem.read_bytes())
        pki.write_public(out / "recipient.pub", (self.relay_dir / "recipient.pub").read_bytes())
        pki.write_public(out / "broker.json", json.dumps(self.broker_address()).encode())
        return out

    def broker_address(self) -> dict[str, object]:
        return {"host": self.hosts[0], "port": self.port}

    # -- helpers ------------------------------------------------------------------------

    @staticmethod
    def _json(path: Path, remedy: str) -> dict:
        try:
            return dict(json.loads(path.read_text()))
        except FileNotFoundError:
            raise ProvisioningError(f"{path} is missing: {remedy}") from None
        except (OSError, ValueError) as exc:
            raise ProvisioningError(f"{path} is unreadable or not JSON: {remedy}") from exc


def _next_crl_number(path: Path) -> int:
    """One more than the CRL number of the CRL at ``path`` (1 for a new or unnumbered one)."""
    try:
        return crl_number(x509.load_pem_x509_crl(path.read_bytes())) + 1
    except (OSError, ValueError):
        return 1


def _journal_certs(journal: Path) -> list[x509.Certificate]:
    """The issued certificates (leaf of each ``cert`` chain) of a registrar journal."""
    try:
        lines = journal.read_text().splitlines()
    except OSError as exc:
        raise ProvisioningError(f"{journal} cannot be read: copy the registrar's journal from the relay host") from exc
    certs = []
    for n, line in enumerate(lines, 1):
        try:
            entry = json.loads(line) if line.strip() else {}
        except ValueError as exc:
            raise ProvisioningError(f"{journal} line {n} is not JSON: is this the registrar's journal?") from exc
        if isinstance(entry, dict) and entry.get("outcome") == "issued" and isinstance(entry.get("cert"), str):
            certs.append(pki.parse_cert(entry["cert"].encode(), f"{journal} line {n}"))
    return certs



def _encrypted(path: Path) -> bool:
    try:
        return pki.is_encrypted_pem(path.read_bytes())
    except OSError:
        return False  # load_key says what is wrong with it


def _serial_of(target: str) -> int | None:
    """A serial as typed by a person: hex, with or without colons, ``0x`` or leading zeros."""
    text = target.lower().replace(":", "").removeprefix("0x")
    try:
        return int(text, 16) if text else None
    except ValueError:
        return None


def _csr_key(csr: x509.CertificateSigningRequest) -> ec.EllipticCurvePublicKey:
    key = csr.public_key()
    assert isinstance(key, ec.EllipticCurvePublicKey)  # check_csr made sure
    return key


def _write_json(path: Path, data: dict, mode: int = 0o600) -> None:
    pki.write_file(path, (json.dumps(data, indent=2, sort_keys=True) + "\n").encode(), mode)


def _check_new_site(path: Path, name: str, hosts: Sequence[str], port: int, relays: int) -> None:
    if (path / "site.json").exists() or (path / "ca").exists():
        raise ProvisioningError(f"{path} already holds a site: refusing to overwrite its CA; pick an empty directory")
    if not name.strip():
        raise ProvisioningError("the site needs a name (--site)")
    if not hosts:
        raise ProvisioningError("give at least one --broker-host (DNS name or IP address)")
    if not 1 <= port <= 65535:
        raise ProvisioningError(f"broker port {port} is out of range 1-65535")
    if not 1 <= relays <= 99:
        raise ProvisioningError("--relays must be between 1 and 99")
