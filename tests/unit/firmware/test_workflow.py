"""The workflow rules of DESIGN §6, one scenario per rule, through the pure ``step``.

Cards are built by the real card parser (``clinicam.firmware.codes.classify.parse_card``) from
their printed payloads, so a card the sheet prints is a card the workflow understands.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

import pytest
from clinicam.common.errors import ConfigError
from clinicam.firmware.codes.classify import CardCode, OperatorId, PatientId, parse_card
from clinicam.firmware.config import station_config_from
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
from clinicam.firmware.workflow.session import (
    Phase,
    StationState,
    WorkflowPolicy,
    initial_state,
    session_id,
)

SEED = bytes(range(32))
ALICE = PatientId("CANARY-PAT-0001", "GS1", None)
BOB = PatientId("CANARY-PAT-0002", "GS1", "ENC-CANARY-9")
NURSE = OperatorId("CANARY-OPR-0077", "GS1")


def card(kind: str, value: str = "") -> CardCode:
    return parse_card(f"CLINICAM:{kind}:{value}" if value else f"CLINICAM:{kind}")


class Station:
    """Feeds events through ``step`` and keeps the trail, like the station loop would."""

    def __init__(self, policy: WorkflowPolicy | None = None, *, synced: bool = True) -> None:
        self.state: StationState = initial_state(
            policy or WorkflowPolicy(), SEED, clock_synced=synced
        )
        self.now = 1000.0
        self.captures = 0

    def send(self, *events: Event) -> list[Action]:
        actions: list[Action] = []
        for event in events:
            self.state, more = step(self.state, event)
            actions.extend(more)
        return actions

    def scan(self, code: PatientId | OperatorId | CardCode) -> list[Action]:
        return self.send(CodeScanned(code, self.now))

    def press(self) -> list[Action]:
        return self.send(ShutterPressed(self.now))

    def shoot(self) -> tuple[TakeCapture, str]:
        """Press, expect a capture request, answer it as sealed; return (request, id)."""
        actions = self.press()
        takes = [a for a in actions if isinstance(a, TakeCapture)]
        assert len(takes) == 1, actions
        self.captures += 1
        capture_id = f"{self.captures:032x}"
        assert signals(self.send(CaptureSealed(capture_id)))[-1:] == ["captured"]
        return takes[0], capture_id


def signals(actions: Iterable[Action]) -> list[str]:
    return [a.pattern for a in actions if isinstance(a, Signal)]


def audits(actions: Iterable[Action]) -> list[dict[str, str | int]]:
    return [a.as_dict() for a in actions if isinstance(a, Audit)]


def takes(actions: Iterable[Action]) -> list[TakeCapture]:
    return [a for a in actions if isinstance(a, TakeCapture)]


# --- no capture without a patient -----------------------------------------------------


def test_capture_or_card_without_patient_is_refused_with_no_patient() -> None:
    st = Station()
    assert signals(st.press()) == ["no_patient"]
    assert signals(st.scan(card("PURPOSE", "WOUND"))) == ["no_patient"]
    assert signals(st.scan(card("VOID"))) == ["no_patient"]
    assert st.state.phase is Phase.IDLE and st.state.session is None


def test_wristband_opens_a_session_and_captures_are_bound_to_it() -> None:
    st = Station()
    actions = st.scan(ALICE)
    assert signals(actions) == ["patient_bound"]
    sid = st.state.session.id if st.state.session else ""
    assert re.fullmatch(r"[0-9a-f]{32}", sid)
    assert audits(actions) == [{"event": "session-opened", "session": sid}]
    assert SetStatus("session", True, False, True, False, True) in actions
    first, _ = st.shoot()
    second, _ = st.shoot()
    assert first.context.patient == ALICE and first.context.session_id == sid
    assert (first.context.index, second.context.index) == (1, 2)
    assert first.context.operator is None


def test_same_wristband_again_only_reconfirms() -> None:
    st = Station()
    st.scan(ALICE)
    st.shoot()
    before = st.state
    actions = st.scan(ALICE)
    assert actions == [Signal("patient_bound")]
    assert st.state.session == before.session
    assert st.shoot()[0].context.index == 2


def test_a_different_wristband_closes_the_session_and_opens_a_new_one() -> None:
    st = Station()
    st.scan(ALICE)
    st.scan(card("PURPOSE", "WOUND"))
    st.shoot()
    old = st.state.session.id if st.state.session else ""
    actions = st.scan(BOB)
    assert signals(actions) == ["patient_switched"]
    new = st.state.session.id if st.state.session else ""
    assert new != old
    assert audits(actions) == [
        {"event": "session-closed", "session": old, "reason": "switch", "count": 1},
        {"event": "session-opened", "session": new},
    ]
    request, _ = st.shoot()
    assert request.context.patient == BOB and request.context.index == 1
    assert request.context.purpose is None  # cards belong to the session they were read in


def test_same_person_with_another_encounter_is_a_new_session() -> None:
    st = Station()
    st.scan(ALICE)
    other_stay = PatientId(ALICE.id, ALICE.issuer, "ENC-2")
    assert signals(st.scan(other_stay)) == ["patient_switched"]
    assert st.shoot()[0].context.patient.encounter == "ENC-2"


# --- operator, consent, clock ---------------------------------------------------------


def test_operator_badge_first_when_required() -> None:
    st = Station(WorkflowPolicy(require_operator=True))
    assert signals(st.scan(ALICE)) == ["rejected_code"]
    assert st.state.session is None
    assert signals(st.scan(NURSE)) == ["operator_bound"]
    assert st.state.phase is Phase.OPERATOR
    assert signals(st.scan(ALICE)) == ["patient_bound"]
    assert st.shoot()[0].context.operator == NURSE


def test_badge_is_optional_but_recorded_when_not_required() -> None:
    st = Station()
    st.scan(ALICE)
    assert signals(st.scan(NURSE)) == ["patient_bound"]  # the session's light stays
    assert st.state.phase is Phase.SESSION
    assert st.shoot()[0].context.operator == NURSE


def test_consent_before_the_first_capture_when_required() -> None:
    st = Station(WorkflowPolicy(require_consent=True))
    st.scan(ALICE)
    assert signals(st.press()) == ["consent_needed"]
    assert takes(st.press()) == []
    assert signals(st.scan(card("CONSENT", "verbal"))) == ["patient_bound"]
    assert st.shoot()[0].context.consent == "VERBAL"
    st.scan(BOB)
    assert signals(st.press()) == ["consent_needed"]  # consent is per session


def test_no_capture_while_the_clock_is_not_synchronised() -> None:
    st = Station(synced=False)
    st.scan(ALICE)
    assert signals(st.press()) == ["clock_not_synced"]
    st.send(ClockSyncChanged(True))
    st.shoot()
    st.send(ClockSyncChanged(False))
    assert signals(st.press()) == ["clock_not_synced"]


def test_clock_sync_can_be_waived_by_the_site() -> None:
    st = Station(WorkflowPolicy(require_clock_sync=False), synced=False)
    st.scan(ALICE)
    st.shoot()


# --- cards ----------------------------------------------------------------------------


def test_cards_apply_to_the_captures_that_follow_and_site_resets_lat_and_view() -> None:
    st = Station()
    st.scan(ALICE)
    plain, _ = st.shoot()
    for c in (card("PURPOSE", "WOUND"), card("SITE", "30021000"), card("LAT", "LEFT"),
              card("VIEW", "CLOSE-UP")):
        assert signals(st.scan(c)) == ["patient_bound"]
    tagged, _ = st.shoot()
    st.scan(card("SITE", "56459004"))
    reset, _ = st.shoot()
    assert (plain.context.purpose, plain.context.body_site, plain.context.laterality) == (
        None, None, None)
    ctx = tagged.context
    assert (ctx.purpose, ctx.body_site, ctx.laterality, ctx.view) == (
        "WOUND", ("30021000", "Lower leg"), "LEFT", "CLOSE-UP")
    ctx = reset.context
    assert (ctx.purpose, ctx.body_site, ctx.laterality, ctx.view) == (
        "WOUND", ("56459004", "Foot"), None, None)


def test_void_takes_back_the_sessions_captures_last_first() -> None:
    st = Station()
    st.scan(ALICE)
    assert signals(st.scan(card("VOID"))) == ["rejected_code"]  # nothing to void yet
    _, first = st.shoot()
    _, second = st.shoot()
    assert st.scan(card("VOID")) == [VoidCapture(second), Signal("voided")]
    assert st.scan(card("VOID")) == [VoidCapture(first), Signal("voided")]
    assert signals(st.scan(card("VOID"))) == ["rejected_code"]
    assert st.shoot()[0].context.index == 3  # indexes are never reused


def test_void_never_reaches_into_the_previous_session() -> None:
    st = Station()
    st.scan(ALICE)
    st.shoot()
    st.scan(BOB)
    actions = st.scan(card("VOID"))
    assert signals(actions) == ["rejected_code"]
    assert not [a for a in actions if isinstance(a, VoidCapture)]


def test_a_rejected_capture_cannot_be_voided_any_more() -> None:
    st = Station()
    st.scan(ALICE)
    _, first = st.shoot()
    _, second = st.shoot()
    assert signals(st.send(CaptureRejected(second, "decrypt"))) == ["fault"]
    assert st.scan(card("VOID")) == [VoidCapture(first), Signal("voided")]


def test_rejected_codes_get_their_signal() -> None:
    st = Station()
    assert st.send(CodeRejectedEvent("check-digit")) == [Signal("rejected_code")]


# --- how a session ends ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("ending", "reason", "pattern"),
    [
        (CodeScanned(card("END"), 1000.0), "end", "ready"),
        (LongPressed(1000.0), "long-press", "ready"),
        (MainsLost(), "mains-lost", "ready"),
        (Tick(1120.0), "idle", "ready"),
        (DrainStarted(), "shutdown", None),
    ],
)
def test_session_ends(ending: Event, reason: str, pattern: str | None) -> None:
    st = Station()
    st.scan(ALICE)
    st.shoot()
    sid = st.state.session.id if st.state.session else ""
    actions = st.send(ending)
    closed = [a for a in audits(actions) if a["event"] == "session-closed"]
    assert closed == [{"event": "session-closed", "session": sid, "reason": reason, "count": 1}]
    assert signals(actions) == ([pattern] if pattern else [])
    assert st.state.session is None
    assert takes(st.press()) == []


def test_end_keeps_the_operator_and_idle_signs_out() -> None:
    st = Station(WorkflowPolicy(require_operator=True))
    st.scan(NURSE)
    st.scan(ALICE)
    assert signals(st.scan(card("END"))) == ["operator_bound"]  # now the next wristband
    assert st.state.phase is Phase.OPERATOR
    st.scan(BOB)
    assert st.shoot()[0].context.operator == NURSE
    st.send(Tick(st.now + 120))
    assert st.state.phase is Phase.IDLE and st.state.operator is None


def test_long_press_without_session_signs_the_operator_out() -> None:
    st = Station()
    st.scan(NURSE)
    assert st.send(LongPressed(st.now)) == [
        Signal("ready"), SetStatus("idle", False, False, True, False, True)]
    assert st.state.operator is None


def test_inactivity_is_counted_from_the_last_scan_or_press() -> None:
    st = Station()
    st.scan(ALICE)
    st.now += 100
    st.scan(card("LAT", "RIGHT"))
    assert st.send(Tick(st.now + 119.9)) == []
    assert st.state.session is not None
    assert signals(st.send(Tick(st.now + 120))) == ["ready"]
    assert st.state.session is None


def test_mains_loss_keeps_delivering_and_a_new_session_may_start_on_battery() -> None:
    st = Station()
    st.scan(ALICE)
    _, capture = st.shoot()
    assert audits(st.send(MainsLost()))[0] == {"event": "mains-lost"}  # the warning
    assert st.send(MainsLost()) == []
    assert st.send(CaptureStored(capture)) == [Signal("delivered")]
    st.scan(BOB)
    st.shoot()
    actions = st.send(MainsRestored())
    assert actions == [
        Audit("mains-restored"), SetStatus("session", True, False, True, False, True)]


# --- capture outcomes -----------------------------------------------------------------


def test_a_full_vault_refuses_with_its_signal_and_does_not_use_an_index() -> None:
    st = Station()
    st.scan(ALICE)
    assert len(takes(st.press())) == 1
    assert st.send(CaptureFailed("vault-full")) == [Signal("vault_full")]
    assert st.shoot()[0].context.index == 1


def test_a_camera_fault_gets_the_fault_signal() -> None:
    st = Station()
    st.scan(ALICE)
    st.press()
    assert st.send(CaptureFailed("fault")) == [Signal("fault")]


def test_one_capture_at_a_time_and_a_late_one_stays_in_its_session() -> None:
    st = Station()
    st.scan(ALICE)
    assert len(takes(st.press())) == 1
    assert st.press() == []  # still taking the first one
    st.scan(BOB)
    assert signals(st.send(CaptureSealed("a" * 32))) == ["captured"]
    assert signals(st.scan(card("VOID"))) == ["rejected_code"]  # not Bob's capture


# --- lasting alerts give the light back when they clear -------------------------------


def test_the_session_light_comes_back_when_an_alert_clears() -> None:
    st = Station(synced=False)
    st.send(UplinkConnected())
    st.scan(ALICE)
    assert signals(st.press()) == ["clock_not_synced"]
    assert st.send(ClockSyncChanged(True)) == [
        Signal("patient_bound"), SetStatus("session", True, False, True, True, True)]
    assert signals(st.send(UplinkLost())) == ["offline"]
    assert signals(st.send(UplinkConnected())) == ["patient_bound"]
    st.press()
    assert signals(st.send(CaptureFailed("vault-full"))) == ["vault_full"]
    assert signals(st.send(CaptureStored("c" * 32))) == ["patient_bound", "delivered"]
    st.press()
    assert signals(st.send(CaptureFailed("fault"))) == ["fault"]
    st.press()
    assert signals(st.send(CaptureSealed("d" * 32))) == ["patient_bound", "captured"]


def test_no_light_change_when_nothing_was_showing_or_it_was_already_replaced() -> None:
    st = Station(synced=False)
    assert signals(st.send(ClockSyncChanged(True))) == []
    assert signals(st.send(UplinkConnected())) == []
    st.scan(ALICE)
    st.press()
    st.send(CaptureFailed("vault-full"))
    st.scan(card("LAT", "LEFT"))  # its own light replaced the alert
    assert signals(st.send(CaptureStored("e" * 32))) == ["delivered"]


# --- wipe, drain, provisioning, uplink ------------------------------------------------


@pytest.mark.parametrize(
    ("event", "trigger"),
    [
        (BatteryCritical(), "battery"),
        (TamperDetected(), "tamper"),
        (WipeRequested("remote"), "remote"),
    ],
)
def test_wipe_triggers_wipe_first_and_clear_everything(event: Event, trigger: str) -> None:
    st = Station()
    st.scan(NURSE)
    st.scan(ALICE)
    st.press()
    actions = st.send(event)
    assert actions[0] == Wipe(trigger)
    assert audits(actions)[0]["reason"] == "wipe"
    assert signals(actions) == ["wiping"]
    assert st.state.phase is Phase.WIPING
    assert (st.state.session, st.state.operator, st.state.in_flight) == (None, None, None)
    assert st.send(CaptureSealed("b" * 32)) == []  # the wipe took it
    assert st.press() == [Signal("wiping")]
    assert st.scan(ALICE) == [Signal("wiping")]


def test_only_a_remote_wipe_returns_to_service() -> None:
    st = Station()
    st.send(WipeRequested("remote"))
    assert signals(st.send(WipeCompleted())) == ["ready"]
    assert st.state.phase is Phase.IDLE
    st.send(TamperDetected())
    assert st.send(WipeCompleted()) == []
    assert st.state.phase is Phase.WIPING


def test_while_draining_nothing_new_is_captured_but_delivery_goes_on() -> None:
    st = Station()
    st.scan(ALICE)
    _, capture = st.shoot()
    st.send(DrainStarted())
    assert st.press() == [Signal("fault")]
    assert st.scan(BOB) == [Signal("fault")]
    assert st.send(CaptureStored(capture)) == [Signal("delivered")]
    assert st.state.draining


def test_unprovisioned_station_refuses_until_provisioned() -> None:
    st = Station()
    st.state = initial_state(WorkflowPolicy(), SEED, provisioned=False, clock_synced=True)
    assert st.scan(ALICE) == [Signal("fault")]
    assert st.press() == [Signal("fault")]
    assert signals(st.send(ProvisionedChanged(True))) == ["ready"]
    st.scan(ALICE)
    st.shoot()
    actions = st.send(ProvisionedChanged(False))
    assert audits(actions)[0]["reason"] == "unprovisioned"
    assert st.state.phase is Phase.UNPROVISIONED and st.state.session is None


def test_uplink_loss_is_signalled_once_and_shown_in_status() -> None:
    st = Station()
    assert st.send(UplinkConnected()) == [SetStatus("idle", False, False, True, True, True)]
    assert signals(st.send(UplinkLost())) == ["offline"]
    assert st.send(UplinkLost()) == []


# --- purity, ids, policy, PHI ---------------------------------------------------------


def test_session_ids_are_deterministic_per_seed_and_distinct() -> None:
    ids = {session_id(SEED, n) for n in range(1, 50)}
    assert len(ids) == 49
    assert session_id(SEED, 1) != session_id(bytes(32), 1)
    a, b = Station(), Station()
    for st in (a, b):
        st.scan(ALICE)
        st.scan(BOB)
    assert a.state == b.state


def test_step_refuses_unknown_events_and_bad_seeds() -> None:
    with pytest.raises(TypeError):
        step(initial_state(WorkflowPolicy(), SEED), object())  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="32 random bytes"):
        initial_state(WorkflowPolicy(), b"short")


@pytest.mark.parametrize("idle", [0, 9.9, True, "120", 3601])
def test_policy_refuses_unreasonable_idle_times(idle: object) -> None:
    with pytest.raises(ConfigError, match="session_idle_s"):
        WorkflowPolicy(session_idle_s=idle)  # type: ignore[arg-type]


def test_policy_comes_from_the_station_config() -> None:
    config = station_config_from(
        {"workflow": {"require_consent": True, "require_operator": True, "session_idle_s": 300}}
    )
    policy = WorkflowPolicy.from_section(config.workflow)
    assert policy == WorkflowPolicy(True, True, True, 300.0)
    assert WorkflowPolicy.from_section(station_config_from({}).workflow) == WorkflowPolicy()


def test_no_identifier_in_audit_status_or_reprs() -> None:
    st = Station(WorkflowPolicy(require_operator=True, require_consent=True))
    trail: list[Action] = []
    trail += st.scan(NURSE)
    trail += st.scan(ALICE)
    trail += st.scan(card("CONSENT", "WRITTEN"))
    request, _ = st.shoot()
    trail += st.scan(BOB)
    trail += st.send(TamperDetected())
    canaries = ("CANARY-PAT-0001", "CANARY-PAT-0002", "CANARY-OPR-0077", "ENC-CANARY", "WRITTEN")
    # Positive control: the capture request does carry the identifiers, in memory.
    assert request.context.patient.id == canaries[0] and request.context.operator == NURSE
    published = " ".join(repr(a) for a in trail if not isinstance(a, TakeCapture))
    published += repr(Station().state) + repr(st.state)
    st2 = Station()
    st2.scan(BOB)
    st2.scan(card("CONSENT", "WRITTEN"))
    published += repr(st2.state) + repr(st2.state.session) + repr(CodeScanned(BOB, 0.0))
    for canary in canaries:
        assert canary not in published
