"""What the uplink tells the station: frozen events named as past facts.

The uplink runs on its own threads (paho's network loop and its delivery loop) and
never touches workflow state: it hands these to the ``on_event`` callback, which the
station turns into ``queue.put`` (STYLE "State"). None carries PHI: captures are
named by id, failures by code.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class UplinkConnected:
    """The broker accepted us; the limits it advertised in CONNACK."""

    receive_maximum: int
    max_packet_size: int | None


@dataclass(frozen=True)
class UplinkLost:
    """The connection dropped (or could not be made); paho reconnects with back-off."""

    reason: str


@dataclass(frozen=True)
class CaptureSent:
    """Every part and the manifest of a capture were accepted by the broker."""

    capture_id: str


@dataclass(frozen=True)
class CaptureStored:
    """The relay confirmed every sink has the capture; it left the vault."""

    capture_id: str
    ref: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class CaptureRejected:
    """The relay can never open the capture (reason code); it left the vault."""

    capture_id: str
    reason: str


@dataclass(frozen=True)
class CapturesExpired:
    """Undelivered past the vault's time-to-live: zeroed and dropped (audited)."""

    capture_ids: tuple[str, ...]


@dataclass(frozen=True)
class CaptureRetryScheduled:
    """No ack, a ``retry`` ack or a refused publish: the capture is re-sent later."""

    capture_id: str
    attempt: int
    delay_s: float
    why: str  # "retry", "ack-timeout", "publish-refused"


@dataclass(frozen=True)
class UplinkMisconfigured:
    """Something only configuration can fix (a part too big for the broker)."""

    reason: str
    capture_id: str | None = None


@dataclass(frozen=True)
class CommandReceived:
    """A fresh, live remote command (``identify``, ``wipe``, ``ping``)."""

    cmd: str
    id: str


@dataclass(frozen=True)
class CommandIgnored:
    """A command refused as retained, expired, repeated or malformed."""

    why: str


UplinkEvent = (
    UplinkConnected
    | UplinkLost
    | CaptureSent
    | CaptureStored
    | CaptureRejected
    | CapturesExpired
    | CaptureRetryScheduled
    | UplinkMisconfigured
    | CommandReceived
    | CommandIgnored
)
