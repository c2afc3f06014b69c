"""The relay's configuration: ``/etc/clinicam/relay.toml`` as frozen dataclasses.

One relay worker per process. Workers split the stations between them (DESIGN §5:
Mosquitto's round-robin ``$share`` would scatter one capture's parts), so each worker
says which share it takes (``worker`` of ``workers``) and which dead workers' shares it
stands in for. ``relay/relay.example.toml`` documents every key; sinks are an array
of tables whose ``type`` picks the kind.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from clinicam.common.tomlconf import (
    absolute_path,
    between,
    checked,
    load_file,
    load_mapping,
    matches,
    nonempty,
    variants,
)
from clinicam.protocol.topics import DEFAULT_PREFIX

DEFAULT_PATH = Path("/etc/clinicam/relay.toml")
EXAMPLE = Path(__file__).with_name("relay.example.toml")

NAME = checked(matches(r"[a-z0-9-]{1,32}", "lowercase letters, digits and '-'"))
PATH = checked(nonempty, absolute_path)
OPTIONAL_PATH = checked(absolute_path)
TIMEOUT = checked(between(0.5, 600))
AE_TITLE = checked(matches(r"[ -~]{1,16}", "1..16 printable ASCII characters"))


@dataclass(frozen=True)
class RelaySection:
    topic_prefix: str = field(
        default=DEFAULT_PREFIX, metadata=checked(matches(r"[A-Za-z0-9_./-]{1,64}", "a topic prefix without wildcards"))
    )
    worker: int = field(default=0, metadata=checked(between(0, 63)))
    workers: int = field(default=1, metadata=checked(between(1, 64)))
    standby_for: tuple[int, ...] = ()
    shared_group: str = ""  # only behind a broker that keeps one publisher on one worker
    state_dir: str = field(default="/var/lib/clinicam-relay", metadata=PATH)
    status_file: str = field(default="/run/clinicam-relay/status.json", metadata=PATH)
    audit_log: str = field(default="/var/lib/clinicam-relay/audit.jsonl", metadata=PATH)
    # Grace period for station certificates issued before the station profile
    # (clinicam.protocol.certprofile): "YYYY-MM-DD" (UTC midnight), "" = none.
    legacy_station_certs_until: str = field(
        default="", metadata=checked(matches(r"(\d{4}-\d{2}-\d{2})?", "a date YYYY-MM-DD, or empty"))
    )

    @property
    def legacy_until(self) -> datetime | None:
        """``legacy_station_certs_until`` as an aware UTC datetime, or None."""
        text = self.legacy_station_certs_until
        return datetime.fromisoformat(text).replace(tzinfo=UTC) if text else None

    def __post_init__(self) -> None:
        try:
            self.legacy_until  # noqa: B018 - validates the date now, at load time
        except ValueError:
            raise ValueError(f"legacy_station_certs_until: {self.legacy_station_certs_until!r} is not a "
                             "calendar date (YYYY-MM-DD)") from None
        if self.worker >= self.workers:
            raise ValueError(f"worker: must be below workers ({self.workers}), got {self.worker}")
        bad = [w for w in self.standby_for if not 0 <= w < self.workers]
        if bad:
            raise ValueError(f"standby_for: workers are numbered 0..{self.workers - 1}, got {bad}")


@dataclass(frozen=True)
class BrokerSection:
    host: str = field(default="localhost", metadata=checked(nonempty))
    port: int = field(default=8883, metadata=checked(between(1, 65535)))
    keepalive_s: int = field(default=30, metadata=checked(between(5, 600)))


@dataclass(frozen=True)
class IdentitySection:
    cert: str = field(default="/etc/clinicam/relay/relay-1.pem", metadata=PATH)
    key: str = field(default="/etc/clinicam/relay/relay-1.key", metadata=PATH)
    ca: str = field(default="/etc/clinicam/relay/ca.pem", metadata=PATH)
    crl: str = field(default="", metadata=OPTIONAL_PATH)
    # Two-tier sites: the issuing CA certificate(s) station certificates chain through.
    chain: str = field(default="", metadata=OPTIONAL_PATH)
    recipient_keys: tuple[str, ...] = ("/etc/clinicam/relay/recipient.key",)

    def __post_init__(self) -> None:
        if not self.recipient_keys or any(not k.startswith("/") for k in self.recipient_keys):
            raise ValueError("recipient_keys: must list at least one absolute path")


@dataclass(frozen=True)
class ReassemblySection:
    max_bytes: int = field(default=512 * 1024 * 1024, metadata=checked(between(1024 * 1024, 16 * 1024**3)))
    max_age_s: float = field(default=300.0, metadata=checked(between(1, 86400)))
    max_parts: int = field(default=1024, metadata=checked(between(2, 100000)))
    max_part_bytes: int = field(default=16 * 1024 * 1024 + 16, metadata=checked(between(1024, 256 * 1024 * 1024)))


@dataclass(frozen=True)
class DirectorySinkConfig:
    type: Literal["directory"]
    name: str = field(metadata=NAME)
    path: str = field(metadata=PATH)
    role: Literal["store", "quarantine"] = "store"


@dataclass(frozen=True, kw_only=True)
class HttpSinkFields:
    """What every HTTPS sink shares: the pinned CA, authentication, timeout and role."""

    ca_file: str = field(default="", metadata=OPTIONAL_PATH)
    auth: Literal["none", "basic", "bearer"] = "none"
    username: str = ""
    password_file: str = field(default="", metadata=OPTIONAL_PATH)
    token_file: str = field(default="", metadata=OPTIONAL_PATH)
    timeout_s: float = field(default=30.0, metadata=TIMEOUT)
    role: Literal["store", "quarantine"] = "store"


@dataclass(frozen=True, kw_only=True)
class DicomWebSinkConfig(HttpSinkFields):
    type: Literal["dicomweb"]
    name: str = field(metadata=NAME)
    url: str = field(metadata=checked(matches(r"https?://\S+", "an http(s) URL of the /studies endpoint")))


@dataclass(frozen=True)
class DimseSinkConfig:
    type: Literal["dimse"]
    name: str = field(metadata=NAME)
    host: str = field(metadata=checked(nonempty))
    port: int = field(default=104, metadata=checked(between(1, 65535)))
    called_ae: str = field(default="ANY-SCP", metadata=AE_TITLE)
    calling_ae: str = field(default="CLINICAM", metadata=AE_TITLE)
    tls: bool = False
    ca_file: str = field(default="", metadata=OPTIONAL_PATH)
    cert_file: str = field(default="", metadata=OPTIONAL_PATH)
    key_file: str = field(default="", metadata=OPTIONAL_PATH)
    timeout_s: float = field(default=30.0, metadata=TIMEOUT)
    role: Literal["store", "quarantine"] = "store"


@dataclass(frozen=True, kw_only=True)
class FhirSinkConfig(HttpSinkFields):
    type: Literal["fhir"]
    name: str = field(metadata=NAME)
    url: str = field(metadata=checked(matches(r"https?://\S+", "the http(s) base URL of a FHIR R4 server")))
    lookup_patient: bool = True  # unknown patients go to the quarantine sink


SinkConfig = DirectorySinkConfig | DicomWebSinkConfig | DimseSinkConfig | FhirSinkConfig
SINK_TYPES: dict[str, type] = {
    "directory": DirectorySinkConfig,
    "dicomweb": DicomWebSinkConfig,
    "dimse": DimseSinkConfig,
    "fhir": FhirSinkConfig,
}


@dataclass(frozen=True)
class RelayConfig:
    relay: RelaySection = RelaySection()
    broker: BrokerSection = BrokerSection()
    identity: IdentitySection = IdentitySection()
    reassembly: ReassemblySection = ReassemblySection()
    sinks: tuple[SinkConfig, ...] = field(default=(), metadata=variants("type", SINK_TYPES))

    def __post_init__(self) -> None:
        names = [s.name for s in self.sinks]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"sinks: names must be unique, repeated: {', '.join(dupes)}")
        if not any(s.role == "store" for s in self.sinks):
            raise ValueError('sinks: configure at least one sink with role = "store"')
        if sum(s.role == "quarantine" for s in self.sinks) > 1:
            raise ValueError('sinks: at most one sink may have role = "quarantine"')

    @property
    def store_sinks(self) -> tuple[SinkConfig, ...]:
        return tuple(s for s in self.sinks if s.role == "store")

    @property
    def quarantine_sink(self) -> SinkConfig | None:
        return next((s for s in self.sinks if s.role == "quarantine"), None)


def load_relay_config(path: Path | str = DEFAULT_PATH) -> RelayConfig:
    """Load and validate a relay configuration file."""
    return load_file(path, RelayConfig, example=str(EXAMPLE), kind="relay")


def relay_config_from(data: dict[str, object], source: str = "relay.toml") -> RelayConfig:
    """Build a configuration from a mapping (tests, the demo)."""
    return load_mapping(data, RelayConfig, source=source)
