"""The station's configuration: ``/etc/clinicam/station.toml`` as frozen dataclasses.

Every key has a default where one is safe, so a minimal file only names what differs
per station; ``firmware/station.example.toml`` documents each key. The device's own
id is not here: it is the CN of its certificate (one source of truth), and the broker
address defaults to what ``clinicam provision install`` wrote next to the identity.
Loading refuses unknown keys and bad values with messages naming file, key and problem.
"""

from __future__ import annotations

from dataclasses import dataclass, field
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
    regex,
)
from clinicam.protocol.topics import DEFAULT_PREFIX

DEFAULT_PATH = Path("/etc/clinicam/station.toml")
EXAMPLE = Path(__file__).with_name("station.example.toml")

BCM_PIN = checked(between(0, 27))
SYMBOLOGIES = ("code128", "gs1-128", "qr", "gs1-qr", "datamatrix", "gs1-datamatrix", "pdf417", "ean13")


def _symbologies(values: tuple[str, ...]) -> str | None:
    bad = [v for v in values if v not in SYMBOLOGIES]
    return f"must name symbologies from {', '.join(SYMBOLOGIES)}" if bad else None


def _snomed_codes(values: tuple[str, ...]) -> str | None:
    return None if all(v.isascii() and v.isdigit() for v in values) else "must be SNOMED CT codes (digits)"


@dataclass(frozen=True)
class DeviceSection:
    site: str = ""
    location: str = ""


@dataclass(frozen=True)
class HardwareSection:
    backend: Literal["pi", "sim"] = "pi"
    sim_images: str = field(default="", metadata=checked(absolute_path))
    # "" follows backend; "sim" with backend "pi": real GPIO, simulated camera (a bench
    # rig without a camera, and the CI boot test, whose VM has GPIO but no camera).
    camera: Literal["", "pi", "sim"] = ""


@dataclass(frozen=True)
class CameraSection:
    still_width: int = field(default=4608, metadata=checked(between(64, 9152)))
    still_height: int = field(default=2592, metadata=checked(between(64, 6944)))
    lores_width: int = field(default=1280, metadata=checked(between(160, 2304)))
    lores_height: int = field(default=720, metadata=checked(between(120, 1296)))
    jpeg_quality: int = field(default=90, metadata=checked(between(1, 100)))
    autofocus: bool = True
    tuning_file: str = field(default="", metadata=checked(absolute_path))

    def __post_init__(self) -> None:
        # picamera2 aligns odd sizes down (1281x721 becomes 1280x720) and refuses a lores
        # stream larger than main with a bare RuntimeError: both are refused here instead.
        for key in ("still_width", "still_height", "lores_width", "lores_height"):
            if getattr(self, key) % 2:
                raise ValueError(f"{key}: must be even (the camera aligns odd sizes down), "
                                 f"got {getattr(self, key)}")
        if self.lores_width > self.still_width or self.lores_height > self.still_height:
            raise ValueError(
                f"lores_width x lores_height ({self.lores_width}x{self.lores_height}) may not "
                f"exceed still_width x still_height ({self.still_width}x{self.still_height})"
            )


@dataclass(frozen=True)
class ReaderSection:
    engine: Literal["auto", "zxing", "pyzbar", "pipeline"] = "auto"
    formats: tuple[str, ...] = field(
        default=("code128", "gs1-128", "qr", "gs1-qr", "datamatrix", "gs1-datamatrix"),
        metadata=checked(nonempty, _symbologies),
    )
    hid_device: str = field(default="", metadata=checked(absolute_path))
    presentation_clear_s: float = field(default=1.0, metadata=checked(between(0.1, 30)))


@dataclass(frozen=True)
class PanelSection:
    shutter_pin: int = field(default=17, metadata=BCM_PIN)
    long_press_s: float = field(default=1.5, metadata=checked(between(0.5, 10)))
    bounce_s: float = field(default=0.05, metadata=checked(between(0, 1)))
    light: Literal["rgb", "three"] = "rgb"
    red_pin: int = field(default=22, metadata=BCM_PIN)
    green_pin: int = field(default=23, metadata=BCM_PIN)
    blue_pin: int = field(default=24, metadata=BCM_PIN)
    light_active_high: bool = True
    buzzer_pin: int | None = field(default=18, metadata=BCM_PIN)
    buzzer: Literal["active", "tonal"] = "active"


@dataclass(frozen=True)
class PowerSection:
    mains_pin: int | None = field(default=None, metadata=BCM_PIN)
    mains_active_high: bool = False
    battery_pin: int | None = field(default=None, metadata=BCM_PIN)
    battery_active_high: bool = False
    tamper_pin: int | None = field(default=None, metadata=BCM_PIN)
    tamper_active_high: bool = False


@dataclass(frozen=True)
class IdentitySection:
    dir: str = field(default="/etc/clinicam/identity", metadata=checked(nonempty, absolute_path))


@dataclass(frozen=True)
class UplinkSection:
    host: str = ""  # empty: the broker host recorded at install (identity dir broker.json)
    port: int | None = field(default=None, metadata=checked(between(1, 65535)))
    topic_prefix: str = field(
        default=DEFAULT_PREFIX, metadata=checked(matches(r"[A-Za-z0-9_./-]{1,64}", "a topic prefix without wildcards"))
    )
    keepalive_s: int = field(default=30, metadata=checked(between(5, 600)))
    ack_timeout_s: float = field(default=60.0, metadata=checked(between(1, 3600)))
    max_inflight: int = field(default=8, metadata=checked(between(4, 10)))
    reconnect_min_s: float = field(default=1.0, metadata=checked(between(0.1, 60)))
    reconnect_max_s: float = field(default=60.0, metadata=checked(between(1, 3600)))
    retry_min_s: float = field(default=2.0, metadata=checked(between(0.1, 3600)))
    retry_max_s: float = field(default=300.0, metadata=checked(between(1, 86400)))

    def __post_init__(self) -> None:
        if self.reconnect_min_s > self.reconnect_max_s:
            raise ValueError("reconnect_min_s: must not exceed reconnect_max_s")
        if self.retry_min_s > self.retry_max_s:
            raise ValueError("retry_min_s: must not exceed retry_max_s")


@dataclass(frozen=True)
class EventsSection:
    """Audit events kept until the relay logs them (``firmware.uplink.outbox``).

    ``dir`` on the persistent partition makes them outlive the process (a stop while no
    relay is connected); it must exist (the unit's ``StateDirectory=`` makes it); ""
    keeps them in RAM only. They carry ids, codes and counts, never PHI.
    """

    dir: str = field(default="/var/lib/clinicam/events", metadata=checked(absolute_path))
    max_events: int = field(default=256, metadata=checked(between(16, 4096)))
    resend_s: float = field(default=30.0, metadata=checked(between(0.5, 3600)))


@dataclass(frozen=True)
class RenewalSection:
    """Certificate renewal over MQTT (issue 17): from ``margin_days`` before expiry."""

    enabled: bool = True
    margin_days: float = field(default=60.0, metadata=checked(between(0, 3650)))
    retry_min_s: float = field(default=60.0, metadata=checked(between(1, 86400)))
    retry_max_s: float = field(default=21600.0, metadata=checked(between(1, 604800)))
    answer_timeout_s: float = field(default=120.0, metadata=checked(between(1, 3600)))

    def __post_init__(self) -> None:
        if self.retry_min_s > self.retry_max_s:
            raise ValueError("retry_min_s: must not exceed retry_max_s")


@dataclass(frozen=True)
class SealingSection:
    aead: Literal["auto", "AES-256-GCM", "CHACHA20-POLY1305"] = "auto"
    chunk_size: int = field(default=122880, metadata=checked(between(1024, 16 * 1024 * 1024)))


@dataclass(frozen=True)
class VaultSection:
    max_captures: int = field(default=64, metadata=checked(between(1, 10000)))
    max_bytes: int = field(default=256 * 1024 * 1024, metadata=checked(between(1024 * 1024, 4 * 1024**3)))
    ttl_s: float = field(default=12 * 3600.0, metadata=checked(between(60, 7 * 86400)))


@dataclass(frozen=True)
class WorkflowSection:
    session_idle_s: float = field(default=120.0, metadata=checked(between(10, 3600)))
    require_consent: bool = False
    require_operator: bool = False
    require_clock_sync: bool = True
    stop_drain_s: float = field(default=10.0, metadata=checked(between(0, 300)))


@dataclass(frozen=True)
class MemorySection:
    # auto: locking failure is fatal on real hardware, a loud warning in simulation
    lock: Literal["auto", "required", "warn"] = "auto"


@dataclass(frozen=True)
class RuleSection:
    """A site rule for wristbands or badges that are not GS1 (DESIGN §6)."""

    name: str = field(metadata=checked(matches(r"[a-z0-9-]{1,32}", "lowercase letters, digits, '-'")))
    kind: Literal["patient", "operator"]
    pattern: str = field(metadata=checked(nonempty, regex))
    issuer: str = field(metadata=checked(nonempty))
    check: Literal["none", "gs1", "luhn", "mod11"] = "none"
    symbologies: tuple[str, ...] = field(default=(), metadata=checked(_symbologies))
    min_length: int = field(default=1, metadata=checked(between(1, 256)))
    max_length: int = field(default=64, metadata=checked(between(1, 256)))

    def __post_init__(self) -> None:
        if "(?P<id>" not in self.pattern:
            raise ValueError(f"rule {self.name!r}: pattern: must have a named group (?P<id>...)")
        if self.min_length > self.max_length:
            raise ValueError(f"rule {self.name!r}: min_length: must not exceed max_length")


@dataclass(frozen=True)
class CodesSection:
    gs1: bool = True  # accept GS1 AI 8018 (patient) and 8017 (operator)
    rules: tuple[RuleSection, ...] = ()


@dataclass(frozen=True)
class CardsSection:
    body_sites: tuple[str, ...] = field(default=(), metadata=checked(_snomed_codes))


@dataclass(frozen=True)
class StationConfig:
    device: DeviceSection = DeviceSection()
    hardware: HardwareSection = HardwareSection()
    camera: CameraSection = CameraSection()
    reader: ReaderSection = ReaderSection()
    panel: PanelSection = PanelSection()
    power: PowerSection = PowerSection()
    identity: IdentitySection = IdentitySection()
    uplink: UplinkSection = UplinkSection()
    events: EventsSection = EventsSection()
    renewal: RenewalSection = RenewalSection()
    sealing: SealingSection = SealingSection()
    vault: VaultSection = VaultSection()
    workflow: WorkflowSection = WorkflowSection()
    memory: MemorySection = MemorySection()
    codes: CodesSection = CodesSection()
    cards: CardsSection = CardsSection()

    @property
    def memory_lock_required(self) -> bool:
        if self.memory.lock == "auto":
            return self.hardware.backend == "pi"
        return self.memory.lock == "required"


def load_station_config(path: Path | str = DEFAULT_PATH) -> StationConfig:
    """Load and validate a station configuration file."""
    return load_file(path, StationConfig, example=str(EXAMPLE), kind="station")


def station_config_from(data: dict[str, object], source: str = "station.toml") -> StationConfig:
    """Build a configuration from a mapping (tests, the demo)."""
    return load_mapping(data, StationConfig, source=source)
