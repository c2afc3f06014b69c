"""The station's workflow (DESIGN §6) as one pure function: ``step(state, event)``.

``step`` reads nothing but its arguments — no clock, no randomness, no I/O — and
returns the next state and the actions the station must carry out, in order. The
station loop is the only caller: it owns the queue, performs the actions and feeds
their outcomes back as events (``TakeCapture`` → ``CaptureSealed``/``CaptureFailed``).

The rules that protect the patient are checked here, in one place:

* no capture without a bound patient; a different wristband closes the session and
  opens a new one (``patient_switched``), the same one again only re-confirms;
* the operator badge first and consent before the first capture, when the site
  requires them; no capture while the clock is not synchronised (when required);
* cards apply to the captures that follow them, a new ``SITE`` resets laterality
  and view, ``VOID`` voids the session's last capture;
* the session ends on ``END``, a long press, loss of mains or inactivity;
* battery-critical, tamper and a wipe request wipe at once; while draining (SIGTERM)
  nothing new is captured.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

from clinicam.drivers.patterns import PatternName
from clinicam.firmware.codes.classify import CardCode, OperatorId, PatientId
from clinicam.firmware.workflow.events import (
    Action,
    Audit,
    BatteryCritical,
    CaptureFailed,
    CaptureRejected,
    CaptureSealed,
    CaptureStored,
    ClockSyncChanged,
    CodeRejectedEvent,
    CodeScanned,
    DrainStarted,
    Event,
    LongPressed,
    MainsLost,
    MainsRestored,
    ProvisionedChanged,
    ShutterPressed,
    Signal,
    TakeCapture,
    TamperDetected,
    Tick,
    UplinkConnected,
    UplinkLost,
    VoidCapture,
    Wipe,
    WipeCompleted,
    WipeRequested,
)
from clinicam.firmware.workflow.metadata import SessionFacts
from clinicam.firmware.workflow.session import (
    RESTING,
    Phase,
    Session,
    StationState,
    restore_pattern,
    session_id,
    status_of,
    track_alert,
)

# What every step handler returns: the next state and the actions, in order.
Result = tuple[StationState, list[Action]]

# Card kinds that set one field of the session, and how (upper-cased value).
_TAG_FIELDS: dict[str, Callable[[Session, str], Session]] = {
    "PURPOSE": lambda s, v: replace(s, purpose=v),
    "LAT": lambda s, v: replace(s, laterality=v),
    "VIEW": lambda s, v: replace(s, view=v),
    "CONSENT": lambda s, v: replace(s, consent=v),
}

# The panel's table (clinicam.drivers.patterns) has no pattern of its own for these two:
# an accepted card re-confirms the session, and a wristband scanned before the required
# badge is a code the station does not accept yet.
CARD_ACCEPTED = PatternName.PATIENT_BOUND
OPERATOR_FIRST = PatternName.REJECTED_CODE

# A remote wipe leaves a working station; tamper, battery and shutdown wipes do not.
_RECOVERABLE_WIPES = frozenset({"remote"})


def step(state: StationState, event: Event) -> Result:
    """Apply one event: the next state and the actions to perform, in order."""
    handler = _HANDLERS.get(type(event))
    if handler is None:
        raise TypeError(f"workflow cannot handle event type {type(event).__name__}")
    new_state, actions = handler(state, event)
    new_state = track_alert(new_state, actions)
    status = status_of(new_state)
    if status != status_of(state):
        actions.append(status)
    return new_state, actions


# --- sessions -------------------------------------------------------------------------


def _open_session(state: StationState, patient: PatientId) -> Result:
    number = state.sessions_opened + 1
    session = Session(id=session_id(state.id_seed, number), patient=patient)
    opened = replace(state, session=session, sessions_opened=number, phase=Phase.SESSION)
    return opened, [Audit.of("session-opened", session=session.id)]


def _close_session(state: StationState, reason: str) -> Result:
    """Close the open session (if any) and go back to scanning; ``reason`` is a code."""
    session = state.session
    if session is None:
        return state, []
    audit = Audit.of("session-closed", session=session.id, reason=reason, count=session.taken)
    phase = Phase.OPERATOR if state.operator is not None else Phase.IDLE
    return replace(state, session=None, phase=phase), [audit]


def _sign_out(state: StationState, reason: str) -> Result:
    """Close the session and forget the operator: the station is free for anyone."""
    closed, actions = _close_session(state, reason)
    return replace(closed, operator=None, phase=Phase.IDLE), actions


def _resting(state: StationState) -> Signal:
    """The pattern of the phase a session closed into: ready, or operator bound."""
    return Signal(RESTING.get(state.phase, PatternName.READY))


def _refusal(state: StationState) -> Signal | None:
    """The signal that refuses any operator input in this state, or None if input is open."""
    if state.phase is Phase.UNPROVISIONED or state.draining:
        return Signal(PatternName.FAULT)
    if state.phase is Phase.WIPING:
        return Signal(PatternName.WIPING)
    return None


# --- codes ----------------------------------------------------------------------------


def _on_code(state: StationState, event: CodeScanned) -> Result:
    refused = _refusal(state)
    if refused is not None:
        return state, [refused]
    state = replace(state, last_activity=event.now)
    code = event.classified
    if isinstance(code, PatientId):
        return _on_patient(state, code)
    if isinstance(code, OperatorId):
        return _on_operator(state, code)
    if isinstance(code, CardCode):
        return _on_card(state, code)
    return state, [Signal(PatternName.REJECTED_CODE)]


def _on_patient(state: StationState, patient: PatientId) -> Result:
    if state.policy.require_operator and state.operator is None:
        return state, [Signal(OPERATOR_FIRST)]
    current = state.session
    if current is not None and current.patient == patient:
        return state, [Signal(PatternName.PATIENT_BOUND)]
    closed, actions = _close_session(state, "switch")
    opened, more = _open_session(closed, patient)
    signal = Signal(PatternName.PATIENT_SWITCHED if current is not None else PatternName.PATIENT_BOUND)
    return opened, [*actions, *more, signal]


def _on_operator(state: StationState, operator: OperatorId) -> Result:
    if state.session is not None:
        # Mid-session the session's own light stays: the badge re-confirms it.
        return replace(state, operator=operator), [Signal(CARD_ACCEPTED)]
    return replace(state, operator=operator, phase=Phase.OPERATOR), [Signal(PatternName.OPERATOR_BOUND)]


def _on_card(state: StationState, card: CardCode) -> Result:
    session = state.session
    if session is None:
        return state, [Signal(PatternName.NO_PATIENT)]
    kind = card.kind.upper()
    if kind == "END":
        closed, actions = _close_session(state, "end")
        return closed, [*actions, _resting(closed)]
    if kind == "VOID":
        return _void_last(state, session)
    if kind == "SITE":
        site = (card.value, card.display)
        updated = replace(session, body_site=site, laterality=None, view=None)
    elif kind in _TAG_FIELDS:
        updated = _TAG_FIELDS[kind](session, card.value.upper())
    else:
        return state, [Signal(PatternName.REJECTED_CODE)]
    return replace(state, session=updated), [Signal(CARD_ACCEPTED)]


def _void_last(state: StationState, session: Session) -> Result:
    if not session.captures:
        return state, [Signal(PatternName.REJECTED_CODE)]
    last = session.captures[-1]
    updated = replace(session, captures=session.captures[:-1])
    return replace(state, session=updated), [VoidCapture(last), Signal(PatternName.VOIDED)]


def _on_code_rejected(state: StationState, event: CodeRejectedEvent) -> Result:
    return state, [_refusal(state) or Signal(PatternName.REJECTED_CODE)]


# --- the button and the clock ---------------------------------------------------------


def _on_shutter(state: StationState, event: ShutterPressed) -> Result:
    refused = _refusal(state)
    if refused is not None:
        return state, [refused]
    state = replace(state, last_activity=event.now)
    session = state.session
    if session is None:
        return state, [Signal(PatternName.NO_PATIENT)]
    blocked = _capture_blocker(state, session)
    if blocked is not None:
        return state, [Signal(blocked)]
    if state.in_flight is not None:
        return state, []  # one capture at a time; its own signal follows shortly
    return replace(state, in_flight=session.id), [TakeCapture(_context(state, session))]


def _capture_blocker(state: StationState, session: Session) -> PatternName | None:
    """The pattern that explains why the session may not capture yet, or None."""
    policy = state.policy
    if policy.require_operator and state.operator is None:
        return OPERATOR_FIRST
    if policy.require_clock_sync and not state.clock_synced:
        return PatternName.CLOCK_NOT_SYNCED
    if policy.require_consent and session.consent is None:
        return PatternName.CONSENT_NEEDED
    return None


def _context(state: StationState, session: Session) -> SessionFacts:
    return SessionFacts(
        session_id=session.id,
        index=session.taken + 1,
        patient=session.patient,
        operator=state.operator,
        purpose=session.purpose,
        body_site=session.body_site,
        laterality=session.laterality,
        view=session.view,
        consent=session.consent,
    )


def _on_long_press(state: StationState, event: LongPressed) -> Result:
    if state.phase not in (Phase.SESSION, Phase.OPERATOR) or state.draining:
        return state, []
    state = replace(state, last_activity=event.now)
    if state.session is not None:
        closed, actions = _close_session(state, "long-press")
    else:
        closed, actions = _sign_out(state, "long-press")
    return closed, [*actions, _resting(closed)]


def _on_tick(state: StationState, event: Tick) -> Result:
    if state.phase not in (Phase.SESSION, Phase.OPERATOR) or state.last_activity is None:
        return state, []
    if event.now - state.last_activity < state.policy.session_idle_s:
        return state, []
    signed_out, actions = _sign_out(state, "idle")
    return signed_out, [*actions, Signal(PatternName.READY)]


def _on_clock(state: StationState, event: ClockSyncChanged) -> Result:
    state = replace(state, clock_synced=event.synced)
    cleared = frozenset({PatternName.CLOCK_NOT_SYNCED}) if event.synced else frozenset()
    return state, restore_pattern(state, cleared)


# --- power, tamper, wipe, shutdown, provisioning, uplink ------------------------------


def _wipe(state: StationState, trigger: str) -> Result:
    closed, actions = _close_session(state, "wipe")
    wiped = replace(
        closed,
        phase=Phase.WIPING,
        operator=None,
        in_flight=None,
        last_activity=None,
        wipe_trigger=trigger,
    )
    return wiped, [Wipe(trigger), *actions, Signal(PatternName.WIPING)]


def _on_battery(state: StationState, event: BatteryCritical) -> Result:
    return _wipe(state, "battery")


def _on_tamper(state: StationState, event: TamperDetected) -> Result:
    return _wipe(state, "tamper")


def _on_wipe_requested(state: StationState, event: WipeRequested) -> Result:
    return _wipe(state, event.trigger)


def _on_wipe_completed(state: StationState, event: WipeCompleted) -> Result:
    if state.phase is not Phase.WIPING or state.draining:
        return state, []
    if state.wipe_trigger not in _RECOVERABLE_WIPES:
        return state, []
    return replace(state, phase=Phase.IDLE, wipe_trigger=None), [Signal(PatternName.READY)]


def _on_mains_lost(state: StationState, event: MainsLost) -> Result:
    """Close the session (a cart may be moving to the next bed), warn, keep delivering."""
    if not state.mains:
        return state, []
    closed, actions = _close_session(replace(state, mains=False), "mains-lost")
    warn = Audit("mains-lost")
    return closed, [warn, *actions, _resting(closed)] if actions else [warn]


def _on_mains_restored(state: StationState, event: MainsRestored) -> Result:
    if state.mains:
        return state, []
    return replace(state, mains=True), [Audit("mains-restored")]


def _on_drain(state: StationState, event: DrainStarted) -> Result:
    closed, actions = _close_session(replace(state, draining=True), "shutdown")
    return closed, actions


def _on_provisioned(state: StationState, event: ProvisionedChanged) -> Result:
    if event.provisioned:
        if state.phase is not Phase.UNPROVISIONED:
            return state, []
        return replace(state, phase=Phase.IDLE), [Signal(PatternName.READY)]
    if state.phase is Phase.UNPROVISIONED:
        return state, []
    signed_out, actions = _sign_out(state, "unprovisioned")
    return replace(signed_out, phase=Phase.UNPROVISIONED), [*actions, Signal(PatternName.FAULT)]


def _on_uplink_up(state: StationState, event: UplinkConnected) -> Result:
    state = replace(state, online=True)
    return state, restore_pattern(state, frozenset({PatternName.OFFLINE}))


def _on_uplink_down(state: StationState, event: UplinkLost) -> Result:
    if not state.online:
        return state, []
    return replace(state, online=False), [Signal(PatternName.OFFLINE)]


# --- what becomes of a capture: sealed or failed here, stored or rejected by the relay ---
# (a capture outcome never opens or closes a session)

# A capture sealed or delivered shows the camera and the vault work again.
_CAPTURE_CLEARS = frozenset({PatternName.VAULT_FULL, PatternName.FAULT})


def _on_sealed(state: StationState, event: CaptureSealed) -> Result:
    owner = state.in_flight
    if owner is None:
        return state, []  # stale: a wipe already discarded the capture it belongs to
    state = replace(state, in_flight=None)
    session = state.session
    if session is not None and session.id == owner:
        captures = (*session.captures, event.capture_id)
        updated = replace(session, taken=session.taken + 1, captures=captures)
        state = replace(state, session=updated)
    return state, [*restore_pattern(state, _CAPTURE_CLEARS), Signal(PatternName.CAPTURED)]


def _on_failed(state: StationState, event: CaptureFailed) -> Result:
    if state.in_flight is None:
        return state, []
    pattern = PatternName.VAULT_FULL if event.reason == "vault-full" else PatternName.FAULT
    return replace(state, in_flight=None), [Signal(pattern)]


def _on_stored(state: StationState, event: CaptureStored) -> Result:
    if state.phase is Phase.WIPING:
        return state, []
    return state, [*restore_pattern(state, _CAPTURE_CLEARS), Signal(PatternName.DELIVERED)]


def _on_rejected(state: StationState, event: CaptureRejected) -> Result:
    session = state.session
    if session is not None and event.capture_id in session.captures:
        kept = tuple(c for c in session.captures if c != event.capture_id)
        state = replace(state, session=replace(session, captures=kept))
    return state, [Signal(PatternName.FAULT)]


_HANDLERS: dict[type, Callable[[StationState, Any], Result]] = {
    CodeScanned: _on_code,
    CodeRejectedEvent: _on_code_rejected,
    ShutterPressed: _on_shutter,
    LongPressed: _on_long_press,
    Tick: _on_tick,
    ClockSyncChanged: _on_clock,
    CaptureSealed: _on_sealed,
    CaptureFailed: _on_failed,
    CaptureStored: _on_stored,
    CaptureRejected: _on_rejected,
    BatteryCritical: _on_battery,
    TamperDetected: _on_tamper,
    WipeRequested: _on_wipe_requested,
    WipeCompleted: _on_wipe_completed,
    MainsLost: _on_mains_lost,
    MainsRestored: _on_mains_restored,
    DrainStarted: _on_drain,
    ProvisionedChanged: _on_provisioned,
    UplinkConnected: _on_uplink_up,
    UplinkLost: _on_uplink_down,
}
