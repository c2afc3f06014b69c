"""The relay's configuration: ``/etc/clinicam/relay.toml`` as frozen dataclasses.

One relay worker per process. Workers split the stations between them (DESIGN §5:
Mosquitto's round-robin ``$share`` would scatter one capture's parts), so each worker
says which share it takes (``worker`` of ``workers``) and which dead workers' shares it
stands in for. ``relay/relay.example.toml`` documents every key; sinks are an array
of tables whose ``type`` picks the kind.
"""

from __future__ import annotations

import os
import pwd
from collections.abc import Iterator
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from clinicam.common.errors import ClinicamError, ConfigError
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
# Where the status file lived before it moved under state_dir (a tmpfs: lost at reboot).
LEGACY_STATUS_FILE = "/run/clinicam-relay/status.json"
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
    # Every station seen and its last status: persistent, so a reboot forgets none (issue 16).
    status_file: str = field(default="/var/lib/clinicam-relay/status.json", metadata=PATH)
    audit_log: str = field(default="/var/lib/clinicam-relay/audit.jsonl", metadata=PATH)
    # A persistent broker session (the broker queues events while the relay is away).
    # Off by default: Mosquitto 2.0.11 segfaults on a reload (SIGHUP) after a persistent
    # client that was away at an earlier reload has come back (docs/interfaces.md).
    session_expiry_s: int = field(default=0, metadata=checked(between(0, 30 * 86400)))
    inbox_bytes: int = field(default=128 * 1024 * 1024, metadata=checked(between(1024 * 1024, 16 * 1024**3)))
    inbox_station_bytes: int = field(default=32 * 1024 * 1024, metadata=checked(between(256 * 1024, 16 * 1024**3)))
    # Grace period for station certificates issued before the station profile
    # (clinicam.protocol.certprofile): "YYYY-MM-DD" (UTC midnight), "" = none.
    legacy_station_certs_until: str = field(
        default="", metadata=checked(matches(r"(\d{4}-\d{2}-\d{2})?", "a date YYYY-MM-DD, or empty"))
    )

    @property
    def status_file_moved(self) -> bool:
        """True when relay.toml named the old ``/run`` status file (then ``state_dir``'s is used)."""
        return bool(getattr(self, "_status_file_moved", False))

    @property
    def legacy_until(self) -> datetime | None:
        """``legacy_station_certs_until`` as an aware UTC datetime, or None."""
        text = self.legacy_station_certs_until
        return datetime.fromisoformat(text).replace(tzinfo=UTC) if text else None

    def __post_init__(self) -> None:
        if self.status_file == LEGACY_STATUS_FILE:
            # the old default, kept by every relay.toml edited before it moved (a conffile):
            # take the new one, so an upgrade does not keep losing stations at each reboot
            object.__setattr__(self, "status_file", str(Path(self.state_dir) / "status.json"))
            object.__setattr__(self, "_status_file_moved", True)
        if self.inbox_station_bytes > self.inbox_bytes:
            raise ValueError(f"inbox_station_bytes: must not exceed inbox_bytes ({self.inbox_bytes})")
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
    max_station_bytes: int = field(default=128 * 1024 * 1024, metadata=checked(between(1024 * 1024, 16 * 1024**3)))

    def __post_init__(self) -> None:
        if self.max_station_bytes > self.max_bytes:
            raise ValueError(f"max_station_bytes: must not exceed max_bytes ({self.max_bytes})")


@dataclass(frozen=True)
class AuditSection:
    rotate_bytes: int = field(default=64 * 1024 * 1024, metadata=checked(between(64 * 1024, 64 * 1024**3)))
    rotate_days: float = field(default=7.0, metadata=checked(between(0.01, 3660)))
    keep: int = field(default=52, metadata=checked(between(0, 100000)))
    rate_per_s: float = field(default=20.0, metadata=checked(between(0.1, 100000)))
    burst: int = field(default=200, metadata=checked(between(1, 1000000)))
    max_pending_lines: int = field(default=20000, metadata=checked(between(100, 10000000)))


@dataclass(frozen=True)
class MetricsSection:
    """The Prometheus endpoint: off unless ``listen`` is set (e.g. ``127.0.0.1:9464``)."""

    listen: str = field(default="", metadata=checked(matches(
        r"(|(\[[0-9A-Fa-f:]+\]|[A-Za-z0-9.-]+):\d{1,5})", "HOST:PORT, e.g. 127.0.0.1:9464 (empty: off)")))
    register: str = field(default="", metadata=OPTIONAL_PATH)  # the site's ca/register.json: inventory


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

    def __post_init__(self) -> None:
        if self.auth == "basic" and not (self.username and self.password_file):
            raise ValueError('auth = "basic" needs username and password_file')
        if self.auth == "bearer" and not self.token_file:
            raise ValueError('auth = "bearer" needs token_file (a file holding the token)')


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

    def __post_init__(self) -> None:
        if self.tls and not self.ca_file:
            raise ValueError("tls = true needs ca_file (the PACS's CA, pinned)")
        if bool(self.cert_file) != bool(self.key_file):
            raise ValueError("cert_file and key_file go together (mutual TLS)")


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
    metrics: MetricsSection = MetricsSection()
    audit: AuditSection = AuditSection()
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


# Keys naming a file the relay reads, and keys naming where it writes.
_READ_KEYS = {"cert", "key", "ca", "crl", "recipient_keys", "ca_file", "cert_file", "key_file",
              "password_file", "token_file"}
_WRITE_DIRS = {"state_dir", "path"}
_WRITE_FILES = {"status_file", "audit_log"}


def check_files(config: RelayConfig, source: str = "relay.toml") -> None:
    """Every file the relay will read can be read now, and every place it writes can be
    written: checked at start, so a missing token does not surface as ``sink-auth`` on
    each capture while another sink files it. The message names the file, the section
    and the key, like every configuration error (``relay.toml: [sinks#2] token_file: …``)."""
    for section, key, value in _paths(config):
        if key == "recipient_keys":
            problem = _recipient_problem(Path(value))
        elif key in _READ_KEYS:
            problem = _read_problem(Path(value))
        elif key in _WRITE_DIRS:
            problem = _write_problem(Path(value), folder=True)
        else:
            problem = _write_problem(Path(value), folder=False)
        if problem:
            raise ConfigError(f"{source}: [{section}] {key}: {problem}")


def _paths(config: RelayConfig) -> Iterator[tuple[str, str, str]]:
    """(section, key, path) of every non-empty path in the configuration."""
    sections: list[tuple[str, object]] = [("relay", config.relay), ("identity", config.identity)]
    sections += [(f"sinks#{i}", sink) for i, sink in enumerate(config.sinks, start=1)]
    for section, obj in sections:
        for f in fields(obj):  # type: ignore[arg-type]
            if f.name not in _READ_KEYS | _WRITE_DIRS | _WRITE_FILES:
                continue
            value = getattr(obj, f.name)
            for item in value if isinstance(value, tuple) else (value,):
                if item:
                    yield section, f.name, item


def _user() -> str:
    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        return f"uid {os.geteuid()}"


def _read_problem(path: Path) -> str | None:
    try:
        with path.open("rb") as f:
            empty = f.read(1) == b""
    except FileNotFoundError:
        return f"{path} does not exist"
    except IsADirectoryError:
        return f"{path} is a directory, not a file"
    except PermissionError:
        return f"{path} cannot be read by {_user()} (permission denied): check its owner and mode"
    except OSError as exc:
        return f"{path} cannot be read ({exc.strerror})"
    return f"{path} is empty" if empty else None


def _recipient_problem(path: Path) -> str | None:
    from clinicam.protocol.recipient import load_recipient_private

    problem = _read_problem(path)
    if problem:
        return problem
    pem = path.read_bytes()
    if b"PRIVATE KEY-----" not in pem and b"PUBLIC KEY-----" in pem:
        return (f"{path} is a public key (the stations' recipient.pub): the relay needs the private "
                f"key made with it, recipient.key in the site's relay/ folder")
    try:
        load_recipient_private(pem)
    except ClinicamError as exc:
        return f"{path}: {exc}"
    return None


def _write_problem(path: Path, *, folder: bool) -> str | None:
    if path.exists():
        if folder != path.is_dir():
            return f"{path} must be a {'directory' if folder else 'file'}"
        return None if os.access(path, os.W_OK) else f"{path} cannot be written by {_user()}"
    parent = path if folder else path.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        return f"{path}: {parent} is not a directory"
    if not os.access(parent, os.W_OK | os.X_OK):
        return f"{path} cannot be created by {_user()}: {parent} is not writable"
    return None


def load_relay_config(path: Path | str = DEFAULT_PATH) -> RelayConfig:
    """Load and validate a relay configuration file."""
    return load_file(path, RelayConfig, example=str(EXAMPLE), kind="relay")


def relay_config_from(data: dict[str, object], source: str = "relay.toml") -> RelayConfig:
    """Build a configuration from a mapping (tests, the demo)."""
    return load_mapping(data, RelayConfig, source=source)
