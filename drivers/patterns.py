"""The one table of feedback patterns: what the light and the buzzer do for each outcome.

An OR nurse has no screen and a gloved hand on the button, so every outcome the station
reports has a pattern of its own, told apart by colour *and* by sound. The README's table
is generated from this one (``describe_patterns``), so they cannot drift apart.

A pattern plays its ``intro`` once, then either loops ``loop`` (a condition that
persists, like *offline*) or rests on the ``rest`` colour (a state, like *patient bound*).
A pattern with neither is transient (*captured*): when it ends, the panel goes back to
the last state pattern's resting display. Loops are silent: a station that beeps for
as long as Wi-Fi is down gets unplugged.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from types import MappingProxyType

# Light colours as (red, green, blue) on/off, so they work on an RGB LED or three LEDs.
COLOURS: MappingProxyType[str, tuple[int, int, int]] = MappingProxyType(
    {
        "off": (0, 0, 0),
        "red": (1, 0, 0),
        "green": (0, 1, 0),
        "blue": (0, 0, 1),
        "amber": (1, 1, 0),
        "cyan": (0, 1, 1),
        "magenta": (1, 0, 1),
        "white": (1, 1, 1),
    }
)


class PatternName(StrEnum):
    """The name of every pattern: what the workflow asks the panel to show (mypy checks it)."""

    READY = "ready"
    OPERATOR_BOUND = "operator_bound"
    PATIENT_BOUND = "patient_bound"
    PATIENT_SWITCHED = "patient_switched"
    CAPTURED = "captured"
    DELIVERED = "delivered"
    REJECTED_CODE = "rejected_code"
    NO_PATIENT = "no_patient"
    CONSENT_NEEDED = "consent_needed"
    CLOCK_NOT_SYNCED = "clock_not_synced"
    VAULT_FULL = "vault_full"
    OFFLINE = "offline"
    VOIDED = "voided"
    WIPING = "wiping"
    FAULT = "fault"


@dataclass(frozen=True)
class Step:
    seconds: float
    light: str  # a key of COLOURS
    tone_hz: int = 0  # 0 = silent; an active buzzer just sounds for any tone


@dataclass(frozen=True)
class Pattern:
    name: PatternName
    meaning: str
    intro: tuple[Step, ...]
    loop: tuple[Step, ...] = ()
    rest: str | None = None

    @property
    def is_state(self) -> bool:
        """A state pattern stays shown until replaced; a transient one reverts."""
        return bool(self.loop) or self.rest is not None


def _s(seconds: float, light: str, tone_hz: int = 0) -> Step:
    return Step(seconds, light, tone_hz)


_OFF = _s(0.1, "off")

_TABLE: tuple[Pattern, ...] = (
    Pattern(PatternName.READY, "idle, scan a wristband", (_s(0.15, "blue", 1000),), rest="blue"),
    Pattern(
        PatternName.OPERATOR_BOUND,
        "badge accepted, now the wristband",
        (_s(0.1, "cyan", 1500), _OFF, _s(0.1, "cyan", 1500)),
        rest="cyan",
    ),
    Pattern(PatternName.PATIENT_BOUND, "session open for this patient", (_s(0.4, "green", 1500),),
            rest="green"),
    Pattern(
        PatternName.PATIENT_SWITCHED,
        "a different wristband: new session",
        (_s(0.1, "amber", 1500), _OFF, _s(0.1, "amber", 1500), _OFF, _s(0.4, "green", 2000)),
        rest="green",
    ),
    Pattern(PatternName.CAPTURED, "photo taken and sealed", (_s(0.08, "white", 2500),)),
    Pattern(PatternName.DELIVERED, "photo filed in the record", (_s(0.3, "green"), _OFF, _s(0.3, "green"))),
    Pattern(PatternName.REJECTED_CODE, "code not accepted", (_s(0.5, "red", 400),)),
    Pattern(PatternName.NO_PATIENT, "scan a wristband first",
            (_s(0.15, "red", 400), _OFF, _s(0.15, "red", 400))),
    Pattern(
        PatternName.CONSENT_NEEDED,
        "scan a consent card first",
        (_s(0.2, "amber", 800), _OFF, _s(0.2, "amber", 800), _OFF, _s(0.2, "amber", 800)),
    ),
    Pattern(PatternName.CLOCK_NOT_SYNCED, "no capture until the clock is synchronised",
            (_s(0.3, "amber", 600),), loop=(_s(1.0, "amber"), _s(1.0, "off"))),
    Pattern(PatternName.VAULT_FULL, "no room for photos: wait for delivery",
            (_s(0.6, "red", 300),), loop=(_s(0.3, "red"), _s(0.3, "off"))),
    Pattern(PatternName.OFFLINE, "relay unreachable: photos wait in RAM",
            (), loop=(_s(0.1, "blue"), _s(1.9, "off"))),
    Pattern(PatternName.VOIDED, "last photo voided",
            (_s(0.15, "magenta", 1200), _OFF, _s(0.15, "magenta", 900))),
    Pattern(PatternName.WIPING, "erasing everything in RAM",
            (_s(1.0, "red", 2000),), loop=(_s(0.1, "red"), _s(0.1, "white"))),
    Pattern(
        PatternName.FAULT,
        "station fault: call engineering",
        (_s(0.5, "red", 300), _s(0.2, "off"), _s(0.5, "red", 300)),
        loop=(_s(0.1, "red"), _s(0.9, "off")),
    ),
)

# Keyed by the plain name, so a driver or tool may look up any string it was given.
PATTERNS: MappingProxyType[str, Pattern] = MappingProxyType({p.name.value: p for p in _TABLE})


def _describe_steps(steps: tuple[Step, ...]) -> str:
    return ", ".join(
        f"{s.light} {int(s.seconds * 1000)} ms" + (f" + {s.tone_hz} Hz" if s.tone_hz else "")
        for s in steps
    )


def describe_patterns() -> str:
    """The pattern table as markdown, for the README and the installer's sheet."""
    lines = [
        "| pattern | means | first | then |",
        "|---|---|---|---|",
    ]
    for p in _TABLE:
        if p.loop:
            then = "repeats " + _describe_steps(p.loop)
        elif p.rest:
            then = f"steady {p.rest}"
        else:
            then = "back to the current state"
        lines.append(f"| `{p.name}` | {p.meaning} | {_describe_steps(p.intro) or '—'} | {then} |")
    return "\n".join(lines) + "\n"
