"""Fixtures shared by the appliance checks (helpers live in appliance_support)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from appliance_support import HOST_UNITS, need, unit_root


@pytest.fixture(scope="module")
def analyze_root(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """One unit root per test module (copying the host's units takes a few ms)."""
    need("systemd-analyze", "systemd")
    if not HOST_UNITS.is_dir():
        pytest.skip(f"{HOST_UNITS} missing: systemd's stock units are needed for verify")
    yield unit_root(tmp_path_factory.mktemp("unitroot"))
