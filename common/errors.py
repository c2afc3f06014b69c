"""The one exception hierarchy of clinicam.

Every error names a condition and its message tells the reader what to do next.
Messages never carry PHI: no scanned text, no patient or operator identifier, no
image bytes (DESIGN §3.1). Where an error maps to a builtin, it inherits that too,
as gpiozero does (``ConfigError`` is also a ``ValueError``), so callers that only
know the builtin still catch it.

This module imports nothing else of clinicam, so every layer (``drivers`` included)
may use it.
"""

from __future__ import annotations

# The closed set of reason codes of DESIGN §5. Anything that reaches the wire, a log or
# an ack as a "reason" must be one of these: never free text from a library or a sink.
REASON_CODES: frozenset[str] = frozenset(
    {
        "malformed",
        "identity",
        "certificate",
        "signature",
        "recipient",
        "parts",
        "decrypt",
        "image",
        "duplicate-conflict",
        "sink-unavailable",
        "sink-auth",
        "sink-refused",
        "quarantined",
        "too-large",
        "incomplete-timeout",
    }
)


class ClinicamError(Exception):
    """Base of every error clinicam raises on purpose."""


class ConfigError(ClinicamError, ValueError):
    """A configuration file is missing, unreadable or holds a value we refuse."""


class ProvisioningError(ClinicamError):
    """Certificates, keys or the site register are missing, invalid or inconsistent."""


class HardwareError(ClinicamError):
    """A device the station needs is absent or misbehaving."""


class CameraUnavailable(HardwareError):
    """The camera cannot be opened or stopped delivering frames."""


class ReaderUnavailable(HardwareError):
    """A barcode engine or scanner device cannot be used."""


class CodeRejected(ClinicamError, ValueError):
    """A scanned code is not one the station accepts.

    ``reason`` is a short code (``unknown``, ``check-digit``, ``bad-card``…); the
    scanned text itself is never part of the error.
    """

    def __init__(self, reason: str, message: str | None = None) -> None:
        self.reason = reason
        super().__init__(message or f"code rejected: {reason}")


class SealError(ClinicamError):
    """A capture could not be sealed (empty image, bad key, oversize part)."""


class OpenError(ClinicamError):
    """A sealed capture cannot be opened; ``reason`` is one of ``REASON_CODES``."""

    def __init__(self, reason: str, message: str | None = None) -> None:
        if reason not in REASON_CODES:
            raise ValueError(f"unknown reason code {reason!r}")
        self.reason = reason
        super().__init__(message or f"capture rejected: {reason}")


class PrePolicyCertificate(OpenError):
    """A device certificate from before the station profile (``identity``, but *retry*).

    It may well be a real station's: the relay answers ``retry`` so the station keeps
    the photo (``rejected`` would make it drop it) until the station is renewed with
    'clinicam provision renew' or the relay sets ``legacy_station_certs_until``.
    """

    def __init__(self, message: str | None = None) -> None:
        super().__init__("identity", message or "station certificate predates the station profile: "
                         "renew it with 'clinicam provision renew', or set [relay] "
                         "legacy_station_certs_until for a grace period")


class VaultFull(ClinicamError):
    """The RAM vault has no room: refuse the capture, never evict an older one."""


class UplinkError(ClinicamError):
    """The MQTT uplink cannot deliver (denied publish, packet limit, TLS failure)."""


class BrokerUnreachable(UplinkError):
    """No TLS connection to the broker could be made."""


class SinkError(ClinicamError):
    """A record-system sink failed; ``reason`` is a sink-* code and means *retry*."""

    def __init__(self, reason: str, message: str | None = None) -> None:
        if reason not in REASON_CODES:
            raise ValueError(f"unknown reason code {reason!r}")
        self.reason = reason
        super().__init__(message or f"sink failed: {reason}")


class SinkUnknownPatient(ClinicamError):
    """The record system does not know the patient: quarantine, never guess a chart."""


class MemoryHardeningError(ClinicamError):
    """mlockall, non-dumpable or no-core could not be set where the config requires it."""


class TopicError(ClinicamError, ValueError):
    """A topic name or a part of it is not of the form DESIGN §5 defines."""


class StorageError(ClinicamError):
    """The persistent partition cannot be encrypted, unlocked or erased."""
