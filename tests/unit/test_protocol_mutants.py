"""Each of the protocol's builders and parsers has a test on the other side (issue 14).

``scripts/protocol_mutants.py --quick`` as tests: one mutant at a time (the function's
code replaced by ``raise NotImplementedError`` in a fresh process; nothing on disk is
edited), the other side's targeted test files must fail. The positive control runs the
same files with nothing broken. About 0.5 s of CPU a mutant (pytest's start in a fresh
process); the script without ``--quick`` runs each against the other side's whole test
folder (about 4 min).
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

pytestmark = pytest.mark.slow


def _load() -> ModuleType:
    path = Path(__file__).resolve().parents[2] / "scripts" / "protocol_mutants.py"
    spec = importlib.util.spec_from_file_location("protocol_mutants", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


mutants = _load()


def test_the_targeted_tests_pass_with_nothing_broken() -> None:
    green, tail = mutants.baseline(quick=True, timeout_s=300)
    assert green, tail


@pytest.mark.parametrize("mutant", mutants.TARGETS, ids=lambda m: m.name)
def test_the_other_side_catches_a_broken_builder_or_parser(mutant: object) -> None:
    caught, tail = mutants.run(mutant, quick=True, timeout_s=300)
    assert caught, f"{mutant.target} broken, yet {' '.join(mutant.quick)} stay green: {tail}"  # type: ignore[attr-defined]
