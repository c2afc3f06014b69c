"""Fixtures for driver tests: a fresh gpiozero MockFactory and a hand-driven clock."""

from __future__ import annotations

import pytest
from gpiozero.pins.mock import MockFactory, MockPWMPin


class FakeClock:
    """A monotonic clock the test advances by hand."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def factory():
    """A MockFactory passed explicitly to devices; the global default is never touched."""
    f = MockFactory(pin_class=MockPWMPin)
    yield f
    f.reset()
