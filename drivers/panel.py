"""The operator panel: shutter button (or foot pedal), status light and buzzer, via gpiozero.

Devices are built on the pin factory passed in (``LGPIOFactory`` on a Pi,
``MockFactory(pin_class=MockPWMPin)`` in simulation and tests); nothing relies on
gpiozero's global default factory.

*Button.* A short press captures, a long press ends the session. Debouncing and the
press/long-press decision are done here, on an injectable clock: gpiozero's mock pins
do not implement ``bounce_time``, and a clock lets tests drive time exactly. A long press
is reported as soon as the button has been held ``long_press_s`` (gpiozero's hold
timer, so the nurse hears it while still holding) or, at the latest, on release; with
``background=False`` only the release decides, so tests are exact.

*Light and buzzer.* ``signal(name)`` shows one of ``PATTERNS`` without blocking: a
background thread steps through it, and a new signal replaces the pattern playing.
With ``background=False`` nothing runs by itself and the caller (a test) advances the
injected clock and calls ``refresh()``.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from typing import Any

from clinicam.drivers.patterns import COLOURS, PATTERNS, Pattern, Step, describe_patterns

__all__ = ["PATTERNS", "Panel", "describe_patterns", "frame_at"]

log = logging.getLogger(__name__)

Frame = tuple[str, int, float]  # light, tone in Hz, seconds until the next change (inf)


def _in_steps(steps: tuple[Step, ...], elapsed: float) -> tuple[Step, float] | None:
    start = 0.0
    for step in steps:
        if elapsed < start + step.seconds:
            return step, start + step.seconds - elapsed
        start += step.seconds
    return None


def _resting(pattern: Pattern | None, since: float) -> Frame:
    if pattern is None:
        return "off", 0, math.inf
    if pattern.loop:
        period = sum(s.seconds for s in pattern.loop)
        step, left = _in_steps(pattern.loop, since % period) or (pattern.loop[-1], period)
        return step.light, 0, left
    return pattern.rest or "off", 0, math.inf


def frame_at(pattern: Pattern, elapsed: float, state: Pattern | None = None) -> Frame:
    """What the light and buzzer show ``elapsed`` seconds into ``pattern``.

    ``state`` is the state pattern a transient one returns to. Pure, so the whole
    table is testable without threads or pins.
    """
    hit = _in_steps(pattern.intro, elapsed)
    if hit is not None:
        step, left = hit
        return step.light, step.tone_hz, left
    after = elapsed - sum(s.seconds for s in pattern.intro)
    return _resting(pattern if pattern.is_state else state, after)


# A gpiozero callback later than this after its edge is timed by the edge (Panel._edge).
LATE_CALLBACK_S = 0.010

class _Light:
    """An RGB LED or three separate LEDs, driven with on/off colours."""

    def __init__(self, kind: str, pins: tuple[int, int, int], active_high: bool, factory: Any):
        from gpiozero import LED, RGBLED

        if kind == "rgb":
            self._rgb: Any = RGBLED(*pins, active_high=active_high, pwm=False,
                                    pin_factory=factory)
            self._leds: list[Any] = []
        elif kind == "three":
            self._rgb = None
            self._leds = [LED(p, active_high=active_high, pin_factory=factory) for p in pins]
        else:
            raise ValueError("light must be 'rgb' or 'three'")

    def show(self, colour: str) -> None:
        rgb = COLOURS[colour]
        if self._rgb is not None:
            self._rgb.value = rgb
        for led, on in zip(self._leds, rgb, strict=False):
            led.value = on

    def close(self) -> None:
        for dev in [self._rgb, *self._leds]:
            if dev is not None:
                dev.close()


class _Sounder:
    """An active buzzer (on/off) or a piezo driven with tones (PWM), or nothing."""

    def __init__(self, pin: int | None, kind: str, factory: Any):
        from gpiozero import Buzzer, TonalBuzzer

        if kind not in ("active", "tonal"):
            raise ValueError("buzzer must be 'active' or 'tonal'")
        self._kind = kind
        self._dev: Any = None
        if pin is not None and kind == "tonal":
            from gpiozero.tones import Tone

            # Two octaves around 880 Hz (220-3520 Hz) cover every tone of the table.
            self._dev = TonalBuzzer(pin, mid_tone=Tone.from_frequency(880), octaves=2,
                                    pin_factory=factory)
        elif pin is not None:
            self._dev = Buzzer(pin, pin_factory=factory)

    def sound(self, tone_hz: int) -> None:
        if self._dev is None:
            return
        if self._kind == "active":
            self._dev.value = 1 if tone_hz else 0
        elif tone_hz:
            from gpiozero.tones import Tone

            self._dev.play(Tone.from_frequency(self._clamp(tone_hz)))
        else:
            self._dev.stop()

    def _clamp(self, hz: int) -> float:
        low, high = self._dev.min_tone.frequency, self._dev.max_tone.frequency
        return float(min(max(hz, low), high))

    def close(self) -> None:
        if self._dev is not None:
            self._dev.close()


class Panel:
    """Shutter button, status light and buzzer on one pin factory."""

    def __init__(
        self,
        pin_factory: Any,
        shutter_pin: int = 17,
        *,
        light: str = "rgb",
        red_pin: int = 22,
        green_pin: int = 23,
        blue_pin: int = 24,
        light_active_high: bool = True,
        buzzer_pin: int | None = 18,
        buzzer: str = "active",
        long_press_s: float = 1.5,
        bounce_s: float = 0.05,
        on_press: Callable[[], None] | None = None,
        on_long_press: Callable[[], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
        background: bool = True,
    ) -> None:
        from gpiozero import Button

        if long_press_s <= bounce_s:
            raise ValueError("long_press_s must be longer than bounce_s")
        self._clock, self._long_s, self._bounce_s = clock, long_press_s, bounce_s
        self._on_press, self._on_long = on_press, on_long_press
        self._lock = threading.RLock()
        self._pressed_at: float | None = None
        self._last_edge = -math.inf
        self._long_sent = False
        self._button = Button(shutter_pin, pull_up=True, bounce_time=None,
                              hold_time=long_press_s, pin_factory=pin_factory)
        self._button.when_pressed = self._pressed
        self._button.when_released = self._released
        if background:  # tests drive time by hand: no real-time hold timer then
            self._button.when_held = self._held
        self._light = _Light(light, (red_pin, green_pin, blue_pin), light_active_high,
                             pin_factory)
        self._sounder = _Sounder(buzzer_pin, buzzer, pin_factory)
        self._player = _Player(self._light, self._sounder, clock, background)

    # --- button -------------------------------------------------------------------------

    def _edge(self, since: float | None) -> float:
        """When the line changed, on our clock, not when we heard of it.

        gpiozero runs the callbacks on lgpio's notify thread; a busy interpreter (a JPEG
        encode holds the GIL) or a loaded machine can run a press and its release back
        to back, long after both edges. Debouncing and timing by callback time would
        then drop the press as bounce; the device's ``active_time``/``inactive_time``
        (the pin factory's edge timestamp) say how late we are. Delays under 10 ms are
        scheduling noise and ignored.
        """
        now = self._clock()
        return now - since if since is not None and since > LATE_CALLBACK_S else now

    def _debounced(self, edge: float) -> bool:
        if edge - self._last_edge < self._bounce_s:
            return False
        self._last_edge = edge
        return True

    def _pressed(self) -> None:
        # A press edge outside the bounce window starts a press even if no release was
        # seen: a release lost in chatter must not turn the next press into a long one.
        with self._lock:
            if self._debounced(self._edge(self._button.active_time)):
                self._pressed_at, self._long_sent = self._last_edge, False

    def _held(self) -> None:
        with self._lock:
            if self._pressed_at is None or self._long_sent:
                return
            self._long_sent = True
        self._call(self._on_long)

    def _released(self) -> None:
        with self._lock:
            if self._pressed_at is None or not self._debounced(self._edge(self._button.inactive_time)):
                return
            held = self._last_edge - self._pressed_at
            self._pressed_at = None
            if self._long_sent:
                return
            self._long_sent = held >= self._long_s
            callback = self._on_long if self._long_sent else self._on_press
        self._call(callback)

    @staticmethod
    def _call(callback: Callable[[], None] | None) -> None:
        if callback is not None:
            callback()

    # --- feedback -----------------------------------------------------------------------

    def signal(self, name: str) -> None:
        """Show pattern ``name`` (a key of ``PATTERNS``), replacing the one playing."""
        pattern = PATTERNS.get(name)
        if pattern is None:
            raise ValueError(f"unknown feedback pattern; known: {', '.join(PATTERNS)}")
        self._player.play(pattern)

    def refresh(self) -> None:
        """Apply the current frame now (tests with ``background=False`` call this)."""
        self._player.refresh()

    @property
    def playing(self) -> str | None:
        return self._player.current

    def close(self) -> None:
        """Stop the player, switch light and buzzer off and release the pins."""
        self._player.close()
        self._button.close()
        self._light.close()
        self._sounder.close()


class _Player:
    """Steps through patterns on one thread; ``play`` only swaps the pattern and wakes it."""

    def __init__(self, light: _Light, sounder: _Sounder, clock: Callable[[], float],
                 background: bool):
        self._light, self._sounder, self._clock = light, sounder, clock
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._closed = False
        self._pattern: Pattern | None = None
        self._state: Pattern | None = None
        self._started = 0.0
        self._shown: tuple[str, int] | None = None
        self._thread: threading.Thread | None = None
        if background:
            self._thread = threading.Thread(target=self._run, name="panel", daemon=True)
            self._thread.start()

    @property
    def current(self) -> str | None:
        return None if self._pattern is None else self._pattern.name

    def play(self, pattern: Pattern) -> None:
        with self._lock:
            if self._pattern is not None and self._pattern.is_state:
                self._state = self._pattern
            self._pattern, self._started = pattern, self._clock()
        self.refresh()  # the first frame shows at once, whatever the thread is doing
        self._wake.set()

    def refresh(self) -> float:
        with self._lock:
            if self._closed or self._pattern is None:
                return math.inf
            light, tone, left = frame_at(self._pattern, self._clock() - self._started,
                                         self._state)
            if self._shown != (light, tone):
                self._shown = (light, tone)
                self._light.show(light)
                self._sounder.sound(tone)
            return left

    def _run(self) -> None:
        while not self._closed:
            left = self.refresh()
            self._wake.wait(None if math.isinf(left) else max(left, 0.005))
            self._wake.clear()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._light.show("off")
            self._sounder.sound(0)
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=1.0)
