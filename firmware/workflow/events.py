"""Events the station loop feeds to the workflow, and the actions it gets back.

Events are frozen dataclasses named as past facts or requests (STYLE "State"):
drivers, the uplink's network thread, timers and signal handlers only build one and
``put`` it on the station's queue. Actions are what :func:`clinicam.firmware.workflow.machine.step`
asks the station to do; the workflow itself never touches hardware, the clock or the
network, so every rule of DESIGN §6 can be tested without any of them.

Times (``now``) are monotonic seconds (``time.monotonic()`` in the station): they only
measure inactivity, never date a capture — ``captured_at`` is the station's job.

Nothing here may carry PHI into a place that is logged or published: :class:`Audit`
and :class:`SetStatus` hold only session ids, reason codes and flags. Events that do
carry identifiers (:class:`CodeScanned`, :class:`TakeCapture`) exist only in memory.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TypeAlias

from clinicam.drivers.patterns import PatternName

if TYPE_CHECKING:
    from clinicam.firmware.codes.classify import CardCode, OperatorId, PatientId
    from clinicam.firmware.workflow.metadata import SessionFacts

    Classified: TypeAlias = PatientId | OperatorId | CardCode


# --- events: codes and the operator's hands -------------------------------------------


@dataclass(frozen=True)
class CodeScanned:
    """A code was read and classified; ``now`` marks operator activity."""

    classified: Classified = field(repr=False)
    now: float


@dataclass(frozen=True)
class CodeRejectedEvent:
    """A code was read but refused by the classifier (``reason`` is a code, never text)."""

    reason: str


@dataclass(frozen=True)
class ShutterPressed:
    """The capture button was pressed briefly."""

    now: float


@dataclass(frozen=True)
class LongPressed:
    """The capture button was held: the clinician ends the session."""

    now: float


@dataclass(frozen=True)
class Tick:
    """Time passed; lets the workflow close an idle session without reading a clock."""

    now: float


# --- events: the station's environment ------------------------------------------------


@dataclass(frozen=True)
class ClockSyncChanged:
    """The system clock became (un)synchronised (NTP / chrony state)."""

    synced: bool


@dataclass(frozen=True)
class MainsLost:
    """Mains power is gone but the battery/UPS still runs: close the session, keep delivering."""


@dataclass(frozen=True)
class MainsRestored:
    """Mains power is back."""


@dataclass(frozen=True)
class BatteryCritical:
    """The battery is about to die: wipe now (DESIGN §3.4)."""


@dataclass(frozen=True)
class TamperDetected:
    """The enclosure was opened: wipe now (DESIGN §3.4)."""


@dataclass(frozen=True)
class WipeRequested:
    """A wipe was asked for by ``trigger`` (``remote``, ``signal``, ``drain``…)."""

    trigger: str


@dataclass(frozen=True)
class WipeCompleted:
    """The station finished a wipe; a remote wipe returns to IDLE, others stay wiped."""


@dataclass(frozen=True)
class DrainStarted:
    """SIGTERM: keep delivering what is pending, refuse anything new."""


@dataclass(frozen=True)
class ProvisionedChanged:
    """The station's identity appeared or disappeared."""

    provisioned: bool


# --- events: what happened to a capture -----------------------------------------------


@dataclass(frozen=True)
class CaptureSealed:
    """The capture asked for by :class:`TakeCapture` is sealed in the vault."""

    capture_id: str


@dataclass(frozen=True)
class CaptureFailed:
    """The capture could not be taken: ``vault-full`` or ``fault`` (camera, sealing)."""

    reason: str


# --- events: what the uplink reports (posted from its threads) -------------------------
# The uplink (clinicam.firmware.uplink) posts these onto the station's queue directly;
# the ones that change the workflow go through ``step``, the rest the station loop only
# logs and reports. None carries PHI: captures are named by id, failures by code.


@dataclass(frozen=True)
class UplinkConnected:
    """The broker accepted us; the limits it advertised in CONNACK."""

    receive_maximum: int = 65535
    max_packet_size: int | None = None


@dataclass(frozen=True)
class UplinkLost:
    """The connection dropped (or could not be made); paho reconnects with back-off.

    Captures keep being accepted into the vault meanwhile.
    """

    reason: str = ""


@dataclass(frozen=True)
class RelayPresenceChanged:
    """Whether a relay serves this station now (DESIGN §5 relay presence).

    ``False`` while connected to the broker: captures wait in the vault and the station
    shows ``offline`` (the station turns it into ``UplinkLost`` for the workflow);
    ``True`` after that: the pending captures (``resent``) are being sent at once.
    """

    online: bool
    resent: int = 0


@dataclass(frozen=True)
class CaptureSent:
    """Every part and the manifest of a capture were accepted by the broker."""

    capture_id: str


@dataclass(frozen=True)
class CaptureStored:
    """The relay confirmed every sink has the capture (``stored``); it left the vault.

    ``pending`` is the vault's count of undelivered captures right after.
    """

    capture_id: str
    ref: dict[str, str] = field(default_factory=dict)
    pending: int = 0


@dataclass(frozen=True)
class CaptureRejected:
    """The relay answered ``rejected``: the capture can never be opened; it left the vault."""

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
class CommandReceived:
    """A fresh, live remote command (``identify``, ``wipe``, ``ping``)."""

    cmd: str
    id: str


@dataclass(frozen=True)
class CommandIgnored:
    """A command refused as retained, expired, repeated or malformed."""

    why: str


@dataclass(frozen=True)
class FaultReported:
    """Something only an engineer can fix: a part too large for the broker (``too-large``).

    The station shows ``fault`` on its panel; the workflow's state does not change.
    """

    reason: str
    capture_id: str | None = None


# --- events: the station loop's own -----------------------------------------------------


@dataclass(frozen=True)
class StopRequested:
    """Leave the main loop (after a drain, or in tests)."""


Event: TypeAlias = (
    CodeScanned
    | CodeRejectedEvent
    | ShutterPressed
    | LongPressed
    | Tick
    | ClockSyncChanged
    | MainsLost
    | MainsRestored
    | BatteryCritical
    | TamperDetected
    | WipeRequested
    | WipeCompleted
    | DrainStarted
    | ProvisionedChanged
    | CaptureSealed
    | CaptureFailed
    | CaptureStored
    | CaptureRejected
    | UplinkConnected
    | UplinkLost
    | RelayPresenceChanged
    | CaptureSent
    | CapturesExpired
    | CaptureRetryScheduled
    | CommandReceived
    | CommandIgnored
    | FaultReported
    | StopRequested
)

# What the uplink posts: a part of the one vocabulary, not a second one.
UplinkEvent: TypeAlias = (
    UplinkConnected
    | UplinkLost
    | RelayPresenceChanged
    | CaptureSent
    | CaptureStored
    | CaptureRejected
    | CapturesExpired
    | CaptureRetryScheduled
    | CommandReceived
    | CommandIgnored
    | FaultReported
)


# --- actions --------------------------------------------------------------------------


@dataclass(frozen=True)
class Signal:
    """Show a light/sound pattern (one of ``clinicam.drivers.patterns.PatternName``)."""

    pattern: PatternName


@dataclass(frozen=True)
class TakeCapture:
    """Take, seal and queue one photo; answer with CaptureSealed or CaptureFailed.

    ``context`` is everything the metadata needs from the session (patient, operator,
    cards, session id and index); the station adds time, image, camera and device.
    """

    context: SessionFacts


@dataclass(frozen=True)
class VoidCapture:
    """Void a capture: wipe it if still pending, else send a signed ``void`` event."""

    capture_id: str


@dataclass(frozen=True)
class Wipe:
    """Zero the vault and the session now; ``trigger`` is reported with the wipe."""

    trigger: str


@dataclass(frozen=True)
class Audit:
    """Publish an audit event on ``P/D/event``: a name and PHI-free fields only."""

    event: str
    fields: tuple[tuple[str, str | int], ...] = field(default=())

    @classmethod
    def of(cls, event: str, **fields: str | int) -> Audit:
        """``Audit.of("session-closed", session=sid, reason="end")``."""
        return cls(event, tuple(fields.items()))

    def as_dict(self) -> dict[str, str | int]:
        """The event as the JSON object of DESIGN §5 (without ``at``, which the station adds)."""
        return {"event": self.event, **dict(self.fields)}


@dataclass(frozen=True)
class SetStatus:
    """The workflow's part of the retained status: state name and flags, never identifiers."""

    state: str
    session_open: bool
    draining: bool
    clock_synced: bool
    online: bool
    mains: bool


Action: TypeAlias = Signal | TakeCapture | VoidCapture | Wipe | Audit | SetStatus
