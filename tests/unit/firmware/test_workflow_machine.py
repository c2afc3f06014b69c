"""Random event sequences against the workflow's safety rules (hypothesis state machine).

The test keeps its own small record of what happened — which wristband was scanned
last, whether a session-ending event came after it, the clock, consent — without
re-implementing the workflow, and checks every capture request against it. Whatever
order the events come in, a capture must carry the patient scanned last, and only
when the site's rules allow a capture at all.
"""

from __future__ import annotations

from typing import Any

from clinicam.drivers.patterns import PATTERNS
from clinicam.firmware.codes.classify import CARD_VALUES, CardCode, OperatorId, PatientId, parse_card
from clinicam.firmware.workflow.events import (
    Action,
    Audit,
    BatteryCritical,
    CaptureFailed,
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
    SetStatus,
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
from clinicam.firmware.workflow.machine import step
from clinicam.firmware.workflow.session import Phase, WorkflowPolicy, initial_state
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

PATIENTS = [
    PatientId("CANARY-PAT-1", "GS1", None),
    PatientId("CANARY-PAT-2", "GS1", None),
    PatientId("CANARY-PAT-2", "GS1", "CANARY-ENC-3"),
]
OPERATORS = [OperatorId("CANARY-OPR-1", "GS1"), OperatorId("CANARY-OPR-2", "GS1")]
CARDS = [
    parse_card(f"CLINICAM:{kind}:{value}" if value else f"CLINICAM:{kind}")
    for kind, values in CARD_VALUES.items()
    for value in list(values)[:3]
]
SEED = bytes(range(100, 132))


class Workflow(RuleBasedStateMachine):
    """Drives ``step`` with random events; the model below never looks inside the state."""

    @initialize(
        consent=st.booleans(),
        operator=st.booleans(),
        clock=st.booleans(),
        idle=st.sampled_from([10.0, 120.0]),
        synced=st.booleans(),
    )
    def start(self, consent: bool, operator: bool, clock: bool, idle: float, synced: bool) -> None:
        self.policy = WorkflowPolicy(consent, operator, clock, idle)
        self.state = initial_state(self.policy, SEED, clock_synced=synced)
        self.now = 0.0
        self.seq = 0
        # The model: facts about the event history, not about the workflow's state.
        self.last_patient: PatientId | None = None
        self.closed_since_patient = True
        self.operator: OperatorId | None = None
        self.synced = synced
        self.consented = False
        self.draining = False
        self.mains = True
        self.sealed_by_session: dict[str, int] = {}
        self.live: dict[str, list[str]] = {}
        self.asked_for: str | None = None

    def send(self, event: Event) -> list[Action]:
        before = self.state
        self.state, actions = step(self.state, event)
        for action in actions:
            self.check(action, event)
        if any(isinstance(a, TakeCapture) for a in actions):
            assert before.phase is Phase.SESSION
        return actions

    def check(self, action: Action, event: Event) -> None:
        if isinstance(action, Signal):
            assert action.pattern in PATTERNS
        elif isinstance(action, (Audit, SetStatus, Wipe, VoidCapture)):
            assert "CANARY" not in repr(action)
            if isinstance(action, Wipe):
                assert isinstance(event, (BatteryCritical, TamperDetected, WipeRequested))
        if isinstance(action, TakeCapture):
            self.check_capture(action)

    def check_capture(self, take: TakeCapture) -> None:
        ctx = take.context
        assert ctx.patient == self.last_patient and not self.closed_since_patient
        assert not self.draining
        if self.policy.require_clock_sync:
            assert self.synced
        if self.policy.require_consent:
            assert self.consented and ctx.consent is not None
        if self.policy.require_operator:
            assert ctx.operator is not None and ctx.operator == self.operator
        assert ctx.index == self.sealed_by_session.get(ctx.session_id, 0) + 1
        self.asked_for = ctx.session_id

    def close(self) -> None:
        self.closed_since_patient = True
        self.consented = False

    # --- the operator's hands -------------------------------------------------------

    @rule(patient=st.sampled_from(PATIENTS), dt=st.floats(0, 10))
    def scan_wristband(self, patient: PatientId, dt: float) -> None:
        self.now += dt
        actions = self.send(CodeScanned(patient, self.now))
        opened = any(isinstance(a, Audit) and a.event == "session-opened" for a in actions)
        if opened or (patient == self.last_patient and not self.closed_since_patient):
            if patient != self.last_patient or self.closed_since_patient:
                self.consented = False
            self.last_patient, self.closed_since_patient = patient, False
        else:
            self.close()  # refused: whatever session there was is not this patient's

    @rule(operator=st.sampled_from(OPERATORS), dt=st.floats(0, 10))
    def scan_badge(self, operator: OperatorId, dt: float) -> None:
        self.now += dt
        refused = self.state.phase in (Phase.WIPING, Phase.UNPROVISIONED) or self.draining
        self.send(CodeScanned(operator, self.now))
        if not refused:
            self.operator = operator

    @rule(code=st.sampled_from(CARDS), dt=st.floats(0, 10))
    def scan_card(self, code: CardCode, dt: float) -> None:
        self.now += dt
        actions = self.send(CodeScanned(code, self.now))
        if code.kind == "END":
            self.close()
        elif code.kind == "CONSENT" and Signal("no_patient") not in actions:
            self.consented = not self.closed_since_patient and not self.draining
        for void in (a for a in actions if isinstance(a, VoidCapture)):
            session = self.state.session
            assert session is not None
            assert void.capture_id == self.live[session.id].pop()

    @rule(reason=st.sampled_from(["check-digit", "unknown"]))
    def reject_code(self, reason: str) -> None:
        assert self.send(CodeRejectedEvent(reason))

    @rule(dt=st.floats(0, 10))
    def press(self, dt: float) -> None:
        self.now += dt
        self.send(ShutterPressed(self.now))

    @rule(
        patient=st.sampled_from(PATIENTS),
        code=st.sampled_from(CARDS),
        badge=st.booleans(),
        consent=st.booleans(),
        ok=st.booleans(),
    )
    def bedside_round(
        self, patient: PatientId, code: CardCode, badge: bool, consent: bool, ok: bool
    ) -> None:
        """Badge?, wristband, consent?, a card, a press, its outcome: the common round,
        which independent random rules would rarely line up."""
        if badge:
            self.scan_badge(OPERATORS[0], 1.0)
        self.scan_wristband(patient, 1.0)
        if consent:
            self.scan_card(parse_card("CLINICAM:CONSENT:VERBAL"), 1.0)
        self.scan_card(code, 1.0)
        self.press(1.0)
        if self.asked_for is not None:
            self.answer_capture(ok)

    @rule(dt=st.floats(0, 10))
    def long_press(self, dt: float) -> None:
        self.now += dt
        self.send(LongPressed(self.now))
        self.close()
        self.operator = None if self.state.operator is None else self.operator

    @rule(dt=st.sampled_from([0.5, 9.9, 10.0, 60.0, 119.9, 120.0, 600.0]))
    def tick(self, dt: float) -> None:
        self.now += dt
        if Signal("ready") in self.send(Tick(self.now)):  # idle: session closed, signed out
            self.close()
            self.operator = None

    # --- capture outcomes -----------------------------------------------------------

    @precondition(lambda self: self.asked_for is not None)
    @rule(ok=st.booleans())
    def answer_capture(self, ok: bool) -> None:
        owner, self.asked_for = self.asked_for, None
        if not ok:
            self.send(CaptureFailed("vault-full"))
            return
        self.seq += 1
        capture_id = f"{self.seq:032x}"
        actions = self.send(CaptureSealed(capture_id))
        if actions and owner is not None:
            self.sealed_by_session[owner] = self.sealed_by_session.get(owner, 0) + 1
            self.live.setdefault(owner, []).append(capture_id)

    @precondition(lambda self: self.seq > 0)
    @rule()
    def delivered(self) -> None:
        self.send(CaptureStored(f"{self.seq:032x}"))

    # --- environment ----------------------------------------------------------------

    @rule(synced=st.booleans())
    def clock(self, synced: bool) -> None:
        self.send(ClockSyncChanged(synced))
        self.synced = synced

    @rule(event=st.sampled_from([MainsLost(), MainsRestored(), UplinkConnected(), UplinkLost()]))
    def environment(self, event: Any) -> None:
        self.send(event)
        if isinstance(event, MainsLost) and self.mains:
            self.close()
        if isinstance(event, (MainsLost, MainsRestored)):
            self.mains = isinstance(event, MainsRestored)

    # Wipes and the drain end a run's interesting part, so they come rarely (1 draw in 10).
    @rule(
        event=st.sampled_from([BatteryCritical(), TamperDetected(), WipeRequested("remote")]),
        dice=st.integers(0, 9),
    )
    def wipe(self, event: Any, dice: int) -> None:
        if dice:
            return
        actions = self.send(event)
        assert isinstance(actions[0], Wipe)
        self.close()
        self.operator = None
        self.asked_for = None

    @rule(dice=st.integers(0, 3))
    def wipe_done(self, dice: int) -> None:
        if dice:
            return
        self.send(WipeCompleted())

    @precondition(lambda self: self.seq >= 3)  # draining ends a run: let captures happen first
    @rule()
    def drain(self) -> None:
        self.send(DrainStarted())
        self.close()
        self.draining = True

    @invariant()
    def session_matches_history(self) -> None:
        if not hasattr(self, "state"):
            return
        session = self.state.session
        if session is not None:
            assert session.patient == self.last_patient and not self.closed_since_patient
        if self.state.phase is Phase.WIPING or self.draining:
            assert session is None


Workflow.TestCase.settings = settings(
    max_examples=100,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestWorkflow = Workflow.TestCase
