"""The workflow's rules for what becomes of a capture (DESIGN §6), part of ``step``.

A capture the station asked for comes back sealed or failed; one it sent comes back
stored or rejected by the relay. These handlers are pure like the rest of
``clinicam.firmware.workflow.machine`` (which dispatches to them) and need nothing of its
session helpers: a capture outcome never opens or closes a session.
"""

from __future__ import annotations

from dataclasses import replace

from clinicam.firmware.workflow.events import (
    Action,
    CaptureFailed,
    CaptureRejected,
    CaptureSealed,
    CaptureStored,
    Signal,
)
from clinicam.firmware.workflow.session import Phase, StationState, restore_pattern

# What every step handler returns: the next state and the actions, in order.
Result = tuple[StationState, list[Action]]

# A capture sealed or delivered shows the camera and the vault work again.
_CAPTURE_CLEARS = frozenset({"vault_full", "fault"})


def on_sealed(state: StationState, event: CaptureSealed) -> Result:
    owner = state.in_flight
    if owner is None:
        return state, []  # stale: a wipe already discarded the capture it belongs to
    state = replace(state, in_flight=None)
    session = state.session
    if session is not None and session.id == owner:
        captures = (*session.captures, event.capture_id)
        updated = replace(session, taken=session.taken + 1, captures=captures)
        state = replace(state, session=updated)
    return state, [*restore_pattern(state, _CAPTURE_CLEARS), Signal("captured")]


def on_failed(state: StationState, event: CaptureFailed) -> Result:
    if state.in_flight is None:
        return state, []
    pattern = "vault_full" if event.reason == "vault-full" else "fault"
    return replace(state, in_flight=None), [Signal(pattern)]


def on_stored(state: StationState, event: CaptureStored) -> Result:
    if state.phase is Phase.WIPING:
        return state, []
    return state, [*restore_pattern(state, _CAPTURE_CLEARS), Signal("delivered")]


def on_rejected(state: StationState, event: CaptureRejected) -> Result:
    session = state.session
    if session is not None and event.capture_id in session.captures:
        kept = tuple(c for c in session.captures if c != event.capture_id)
        state = replace(state, session=replace(session, captures=kept))
    return state, [Signal("fault")]
