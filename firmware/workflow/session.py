"""The workflow's state: policy, phase, the open session and the station's flags.

All of it is immutable: :func:`clinicam.firmware.workflow.machine.step` returns a new state, so
a test can keep every intermediate state and the station loop can never half-update
one. Session ids are derived from a per-boot random seed the caller supplies and a
counter, which keeps :func:`step` pure (no randomness inside) while the ids stay
unguessable from outside the station.
"""

from __future__ import annotations

import enum
import hashlib
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from clinicam.common.errors import ConfigError
from clinicam.drivers.patterns import PATTERNS, PatternName
from clinicam.firmware.workflow.events import Action, SetStatus, Signal

if TYPE_CHECKING:
    from clinicam.firmware.codes.classify import OperatorId, PatientId
    from clinicam.firmware.config import WorkflowSection

SEED_BYTES = 32


class Phase(enum.Enum):
    """The states of DESIGN §6; the value is what the status topic shows."""

    UNPROVISIONED = "unprovisioned"
    IDLE = "idle"
    OPERATOR = "operator"
    SESSION = "session"
    WIPING = "wiping"


@dataclass(frozen=True)
class WorkflowPolicy:
    """The site's rules for a session (config section ``[workflow]``).

    ``require_clock_sync`` defaults to true because a Pi has no battery clock and a
    wrong date on a clinical photo is a safety problem (DESIGN §6).
    """

    require_consent: bool = False
    require_operator: bool = False
    require_clock_sync: bool = True
    session_idle_s: float = 120.0

    def __post_init__(self) -> None:
        idle = self.session_idle_s
        if isinstance(idle, bool) or not isinstance(idle, int | float) or not 10 <= idle <= 3600:
            raise ConfigError("workflow session_idle_s must be a number of seconds from 10 to 3600")

    @classmethod
    def from_section(cls, section: WorkflowSection) -> WorkflowPolicy:
        """The policy of a station config's ``[workflow]`` section."""
        return cls(
            require_consent=section.require_consent,
            require_operator=section.require_operator,
            require_clock_sync=section.require_clock_sync,
            session_idle_s=float(section.session_idle_s),
        )


@dataclass(frozen=True)
class Session:
    """One patient's session: who, the cards scanned so far and its captures.

    ``captures`` lists the session's live capture ids, oldest first: VOID takes the
    last one off, a relay rejection removes its id.
    """

    id: str
    # Identifiers and tags stay out of repr, so a traceback cannot leak them (DESIGN §3.1).
    patient: PatientId = field(repr=False)
    purpose: str | None = field(default=None, repr=False)
    body_site: tuple[str, str] | None = field(default=None, repr=False)  # (code, display)
    laterality: str | None = field(default=None, repr=False)
    view: str | None = field(default=None, repr=False)
    consent: str | None = field(default=None, repr=False)
    taken: int = 0
    captures: tuple[str, ...] = ()


@dataclass(frozen=True)
class StationState:
    """Everything the workflow knows.

    ``in_flight`` is the session id of the capture being taken; ``alert`` the lasting
    pattern (one that loops on the panel until replaced) the workflow last asked for, so
    it can put the session's own light back once the condition clears.
    """

    policy: WorkflowPolicy
    id_seed: bytes
    phase: Phase = Phase.IDLE
    operator: OperatorId | None = None
    session: Session | None = None
    sessions_opened: int = 0
    last_activity: float | None = None
    in_flight: str | None = None
    alert: PatternName | None = None  # the lasting alert pattern (offline, vault_full…) last shown
    clock_synced: bool = False
    online: bool = False
    mains: bool = True
    draining: bool = False
    wipe_trigger: str | None = field(default=None)

    def __post_init__(self) -> None:
        if len(self.id_seed) != SEED_BYTES:
            raise ValueError(f"id_seed must be {SEED_BYTES} random bytes (secrets.token_bytes)")

    def __repr__(self) -> str:
        # The default repr would print the patient and operator ids into any traceback
        # or log line that shows the state (DESIGN §3.1).
        return f"StationState(phase={self.phase.value}, session_open={self.session is not None})"


def initial_state(
    policy: WorkflowPolicy,
    id_seed: bytes,
    *,
    provisioned: bool = True,
    clock_synced: bool = False,
) -> StationState:
    """The state at boot: IDLE when the station has an identity, else UNPROVISIONED."""
    phase = Phase.IDLE if provisioned else Phase.UNPROVISIONED
    return StationState(policy=policy, id_seed=id_seed, phase=phase, clock_synced=clock_synced)


def session_id(id_seed: bytes, number: int) -> str:
    """The 32-hex id of the ``number``-th session of this boot (DESIGN §6 ``session.id``)."""
    digest = hashlib.sha256(b"clinicam/v1 session " + id_seed + number.to_bytes(8, "big"))
    return digest.hexdigest()[:32]


# --- what the panel and the status show -----------------------------------------------

# Conditions whose pattern loops on the panel until another lasting pattern replaces it;
# the workflow puts the phase's own pattern back when the condition clears.
ALERTS = frozenset({PatternName.OFFLINE, PatternName.CLOCK_NOT_SYNCED, PatternName.VAULT_FULL, PatternName.FAULT})
RESTING: dict[Phase, PatternName] = {
    Phase.IDLE: PatternName.READY,
    Phase.OPERATOR: PatternName.OPERATOR_BOUND,
    Phase.SESSION: PatternName.PATIENT_BOUND,
}


def status_of(state: StationState) -> SetStatus:
    """The PHI-free status snapshot of a state (published retained by the station)."""
    return SetStatus(
        state=state.phase.value,
        session_open=state.session is not None,
        draining=state.draining,
        clock_synced=state.clock_synced,
        online=state.online,
        mains=state.mains,
    )


def track_alert(state: StationState, actions: list[Action]) -> StationState:
    """Follow what the panel keeps showing: the last lasting pattern asked for."""
    alert = state.alert
    for action in actions:
        if isinstance(action, Signal) and PATTERNS[action.pattern].is_state:
            alert = action.pattern if action.pattern in ALERTS else None
    return state if alert == state.alert else replace(state, alert=alert)


def restore_pattern(state: StationState, cleared: frozenset[str]) -> list[Action]:
    """The phase's own pattern, if the alert showing is one that has just cleared."""
    resting = RESTING.get(state.phase)
    if state.alert not in cleared or resting is None or state.draining:
        return []
    return [Signal(resting)]
