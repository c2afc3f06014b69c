"""``registrar.toml``: where the registrar finds the broker, its identity and the issuing CA.

A two-tier site's ``registrar/`` folder (``clinicam provision site-init --tiers 2`` or
``two-tier``) holds every file named here; copy it to the relay host.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from clinicam.common.tomlconf import absolute_path, between, checked, load_file, load_mapping, nonempty
from clinicam.protocol.topics import DEFAULT_PREFIX
from clinicam.provisioning import pki

DEFAULT_PATH = Path("/etc/clinicam/registrar.toml")
EXAMPLE = Path(__file__).with_name("registrar.example.toml")
PATH = checked(nonempty, absolute_path)


@dataclass(frozen=True)
class BrokerSection:
    host: str = field(default="localhost", metadata=checked(nonempty))
    port: int = field(default=8883, metadata=checked(between(1, 65535)))
    keepalive_s: int = field(default=30, metadata=checked(between(5, 600)))


@dataclass(frozen=True)
class IdentitySection:
    cert: str = field(default="/etc/clinicam/registrar/registrar.pem", metadata=PATH)
    key: str = field(default="/etc/clinicam/registrar/registrar.key", metadata=PATH)
    ca: str = field(default="/etc/clinicam/registrar/ca.pem", metadata=PATH)
    crl: str = field(default="/etc/clinicam/relay/crl.pem", metadata=PATH)


@dataclass(frozen=True)
class IssuingSection:
    cert: str = field(default="/etc/clinicam/registrar/issuing.pem", metadata=PATH)
    key: str = field(default="/etc/clinicam/registrar/issuing.key", metadata=PATH)
    journal: str = field(default="/var/lib/clinicam/registrar/journal.jsonl", metadata=PATH)
    # Which ids each CRL number revoked ('clinicam relay revoke'): the bulletin names them.
    revocations: str = field(default="/var/lib/clinicam/registrar/revocations.jsonl", metadata=PATH)
    # The recipient key stations seal to (recipient.pub), announced on P/_site/recipient
    # whenever the file changes; empty: no announcement (issue 17, key rotation).
    recipient: str = field(default="", metadata=checked(absolute_path))
    # The site's trust update (CA rotation, 'clinicam provision rotate-ca': SITE/trust.json),
    # published as it is on P/_site/trust whenever the file changes; empty: none.
    trust: str = field(default="", metadata=checked(absolute_path))
    days: int = field(default=pki.DEFAULT_DAYS, metadata=checked(between(1, 825)))
    min_interval_s: float = field(default=86400.0, metadata=checked(between(0, 31536000)))
    max_per_day: int = field(default=50, metadata=checked(between(1, 100000)))
    topic_prefix: str = DEFAULT_PREFIX


@dataclass(frozen=True)
class RegistrarConfig:
    broker: BrokerSection = BrokerSection()
    identity: IdentitySection = IdentitySection()
    issuing: IssuingSection = IssuingSection()


def load_registrar_config(path: Path | str = DEFAULT_PATH) -> RegistrarConfig:
    return load_file(path, RegistrarConfig, example=str(EXAMPLE), kind="registrar")


def registrar_config_from(data: dict[str, object], source: str = "registrar.toml") -> RegistrarConfig:
    return load_mapping(data, RegistrarConfig, source=source)
