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


class VaultFull(ClinicamError):
    """The RAM vault has no room: refuse the capture, never evict an older one."""


class UplinkError(ClinicamError):
    """The MQTT uplink cannot deliver (denied publish, packet limit, TLS failure)."""


class BrokerUnreachable(UplinkError):
    """No TLS connection to the broker could be made."""


class SinkUnknownPatient(ClinicamError):
    """The record system does not know the patient: quarantine, never guess a chart."""


class MemoryHardeningError(ClinicamError):
    """mlockall, non-dumpable or no-core could not be set where the config requires it."""


class TopicError(ClinicamError, ValueError):
    """A topic name or a part of it is not of the form DESIGN §5 defines."""


class StorageError(ClinicamError):
    """The persistent partition cannot be encrypted, unlocked or erased."""
