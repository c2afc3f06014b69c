"""The closed set of reason codes of DESIGN §5, and the errors that carry one.

Anything that reaches the wire, a log or an ack as a "reason" is one of these: never
free text from a library or a sink (it could quote a patient's name back). ``Reason``
is a ``StrEnum``, so a member is its wire string and mypy checks every use.
"""

from __future__ import annotations

from enum import StrEnum

from clinicam.common.errors import ClinicamError


class Reason(StrEnum):
    MALFORMED = "malformed"
    IDENTITY = "identity"
    CERTIFICATE = "certificate"
    SIGNATURE = "signature"
    RECIPIENT = "recipient"
    PARTS = "parts"
    DECRYPT = "decrypt"
    IMAGE = "image"
    DUPLICATE_CONFLICT = "duplicate-conflict"
    SINK_UNAVAILABLE = "sink-unavailable"
    SINK_AUTH = "sink-auth"
    SINK_REFUSED = "sink-refused"
    QUARANTINED = "quarantined"
    TOO_LARGE = "too-large"
    INCOMPLETE_TIMEOUT = "incomplete-timeout"


REASON_CODES: frozenset[str] = frozenset(r.value for r in Reason)


def is_reason(value: object) -> bool:
    return isinstance(value, str) and value in REASON_CODES


class OpenError(ClinicamError):
    """A sealed capture cannot be opened; ``reason`` is one of ``REASON_CODES``."""

    def __init__(self, reason: str, message: str | None = None) -> None:
        if reason not in REASON_CODES:
            raise ValueError(f"unknown reason code {reason!r}")
        self.reason = reason
        super().__init__(message or f"capture rejected: {reason}")


class SinkError(ClinicamError):
    """A record-system sink failed; ``reason`` is a sink-* code and means *retry*."""

    def __init__(self, reason: str, message: str | None = None) -> None:
        if reason not in REASON_CODES:
            raise ValueError(f"unknown reason code {reason!r}")
        self.reason = reason
        super().__init__(message or f"sink failed: {reason}")


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
