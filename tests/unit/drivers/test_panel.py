"""Operator panel on gpiozero's MockFactory, with time driven by a fake clock."""

from __future__ import annotations

import itertools

import pytest
from clinicam.drivers.panel import PATTERNS, Panel, describe_patterns, frame_at
from clinicam.drivers.patterns import COLOURS, PatternName

RGB = (22, 23, 24)
NAMES = ("ready operator_bound patient_bound patient_switched captured delivered rejected_code "
         "no_patient consent_needed clock_not_synced vault_full offline voided wiping fault")


@pytest.fixture
def events():
    return []


@pytest.fixture
def panel(factory, clock, events):
    p = Panel(factory, 17, long_press_s=1.5, bounce_s=0.05, background=False, clock=clock,
              on_press=lambda: events.append("press"),
              on_long_press=lambda: events.append("long"))
    yield p
    p.close()


def light(factory, active_high=True):
    states = tuple(int(factory.pin(n).state) for n in RGB)
    return states if active_high else tuple(1 - s for s in states)


def buzz(factory):
    return int(factory.pin(18).state)


def test_the_table_is_complete_and_distinct():
    assert set(PATTERNS) == set(NAMES.split())
    # the names the workflow may ask for (mypy checks its Signal(PatternName.…)) are the table's rows
    assert list(PATTERNS) == [p.value for p in PatternName]
    shapes = [(p.intro, p.loop, p.rest) for p in PATTERNS.values()]
    assert len(set(shapes)) == len(shapes)
    for p in PATTERNS.values():
        assert all(s.light in COLOURS and s.seconds > 0 for s in p.intro + p.loop)
        assert all(s.tone_hz == 0 for s in p.loop)  # loops are silent
    table = describe_patterns()
    assert all(f"`{n}`" in table for n in PATTERNS)


def test_press(panel, factory, clock, events):
    pin = factory.pin(17)
    pin.drive_low()
    clock.advance(0.2)
    pin.drive_high()
    assert events == ["press"]


def test_long_press_on_release(panel, factory, clock, events):
    pin = factory.pin(17)
    pin.drive_low()
    clock.advance(2.0)
    pin.drive_high()
    assert events == ["long"]


def test_bounce_is_one_press(panel, factory, clock, events):
    pin = factory.pin(17)
    pin.drive_low()
    for _ in range(3):  # contact chatter within the bounce time
        clock.advance(0.01)
        pin.drive_high()
        clock.advance(0.01)
        pin.drive_low()
    clock.advance(0.3)
    pin.drive_high()
    clock.advance(0.01)
    pin.drive_low()  # release chatter
    clock.advance(0.01)
    pin.drive_high()
    assert events == ["press"]
    clock.advance(0.5)
    pin.drive_low()
    clock.advance(0.2)
    pin.drive_high()
    assert events == ["press", "press"]


def test_lost_release_does_not_make_a_long_press(panel, factory, clock, events):
    pin = factory.pin(17)
    pin.drive_low()
    clock.advance(0.02)  # a tap shorter than the bounce time: its release is ignored
    pin.drive_high()
    clock.advance(5.0)
    pin.drive_low()
    clock.advance(0.2)
    pin.drive_high()
    assert events == ["press"]


@pytest.mark.parametrize("name", sorted(PATTERNS))
def test_pins_follow_each_pattern(panel, factory, clock, name):
    panel.signal("patient_bound")
    clock.advance(5)
    panel.refresh()
    pattern = PATTERNS[name]
    panel.signal(name)
    for i, step in enumerate(pattern.intro + pattern.loop * 2):
        clock.advance(step.seconds / 2)  # sample mid-step: no float edge effects
        panel.refresh()
        assert light(factory) == COLOURS[step.light], (name, i)
        assert buzz(factory) == (1 if step.tone_hz else 0), (name, i)
        clock.advance(step.seconds / 2)
    clock.advance(0.001)
    panel.refresh()
    if not pattern.is_state:  # transient: back to the session's steady green
        assert light(factory) == COLOURS["green"] and buzz(factory) == 0
    elif pattern.rest:
        assert light(factory) == COLOURS[pattern.rest] and buzz(factory) == 0


def test_new_pattern_cancels_old(panel, factory, clock):
    panel.signal("wiping")
    assert buzz(factory) == 1
    clock.advance(0.5)
    panel.signal("ready")
    assert light(factory) == COLOURS["blue"] and panel.playing == "ready"
    clock.advance(0.2)
    panel.refresh()
    assert buzz(factory) == 0 and light(factory) == COLOURS["blue"]
    clock.advance(60)
    panel.refresh()
    assert light(factory) == COLOURS["blue"]  # the wiping loop did not come back


def test_transient_returns_to_looping_state():
    offline, captured = PATTERNS["offline"], PATTERNS["captured"]
    assert frame_at(captured, 0.0, offline)[0] == "white"
    assert frame_at(captured, 0.09, offline)[0] == "blue"  # offline blink resumes
    assert frame_at(captured, 0.09 + 0.1, offline)[0] == "off"
    assert frame_at(captured, 1.0, None)[0] == "off"


def test_common_anode_and_three_leds(factory, clock):
    p = Panel(factory, 17, light="three", light_active_high=False, buzzer_pin=None,
              background=False, clock=clock)
    try:
        p.signal("vault_full")
        assert light(factory, active_high=False) == COLOURS["red"]
    finally:
        p.close()


def test_tonal_buzzer(factory, clock):
    p = Panel(factory, 17, buzzer="tonal", background=False, clock=clock)
    try:
        p.signal("captured")
        assert factory.pin(18).frequency
        clock.advance(1)
        p.refresh()
        assert not factory.pin(18).state
    finally:
        p.close()


def test_background_player_runs(factory):
    # The real thread with the real clock: only checks that it starts, shows the first
    # frame, and stops cleanly (no timing asserted).
    p = Panel(factory, 17)
    p.signal("ready")
    assert light(factory) == COLOURS["blue"]
    p.close()
    assert light(factory) == COLOURS["off"]


def test_unknown_pattern(panel):
    with pytest.raises(ValueError):
        panel.signal("party")


def test_all_pairs_replace(panel, factory, clock):
    for a, b in itertools.islice(itertools.permutations(PATTERNS, 2), 0, None, 7):
        panel.signal(a)
        clock.advance(0.05)
        panel.signal(b)
        first = PATTERNS[b].intro[0] if PATTERNS[b].intro else PATTERNS[b].loop[0]
        assert light(factory) == COLOURS[first.light]


class _LateButton:
    """What gpiozero's Button reports when its callbacks run late: time since the edge."""

    active_time: float | None = None
    inactive_time: float | None = None

    def close(self) -> None:
        pass


def test_press_and_release_delivered_late_together_is_one_press(panel, clock, events):
    # lgpio's notify thread starved (busy interpreter, loaded host): a 0.4 s press and
    # its release reach the callbacks 2 s later, back to back. Timed by callback time
    # the release would look like bounce and the press be lost (seen in the boot test).
    late = _LateButton()
    panel._button = late
    clock.advance(2.0)
    late.active_time = 2.0  # the press edge was 2 s ago
    panel._pressed()
    late.active_time, late.inactive_time = None, 1.6  # the release edge 1.6 s ago
    panel._released()
    assert events == ["press"]


def test_late_long_press_is_still_long(panel, clock, events):
    late = _LateButton()
    panel._button = late
    clock.advance(3.0)
    late.active_time = 3.0
    panel._pressed()
    late.active_time, late.inactive_time = None, 1.0  # held 2 s, reported 1 s after release
    panel._released()
    assert events == ["long"]


def test_on_time_callbacks_still_debounce(panel, clock, events):
    # Control: a release 20 ms after its press, both on time, is bounce (no press).
    late = _LateButton()
    panel._button = late
    late.active_time = 0.0
    panel._pressed()
    clock.advance(0.02)
    late.active_time, late.inactive_time = None, 0.0
    panel._released()
    assert events == []
