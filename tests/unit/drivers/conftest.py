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


@pytest.fixture(params=["vc4", "pisp"])
def picamera2_sim(request):
    """Real picamera2 (PyPI, the pinned version) over the simulated libcamera.

    Parametrised over the two Raspberry Pi ISPs: VC4 (Pi 4) and PiSP (Pi 5). Frames
    run at a fifth of the sensor's timing. Skips (naming the reason) only where
    picamera2 is not installed: ``scripts/bootstrap.sh`` installs it for ``make test``.
    """
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parents[2]))  # tests/ for picamera2_sim
    import picamera2_sim

    try:
        sim = picamera2_sim.install(request.param, time_scale=0.2)
    except ImportError as exc:  # picamera2 or one of its dependencies missing
        pytest.skip(f"picamera2 fixture not installed ({exc}): run scripts/bootstrap.sh base")
    yield sim
    picamera2_sim.uninstall()
