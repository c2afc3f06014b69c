"""Benchmark harness: each figure is a median of repeated runs beside a baseline
measured in the same run, because these machines are too noisy for absolute numbers.

A benchmark module is ``bench/bench_<area>.py`` exposing ``run(ctx: Context) ->
list[Figure]``; ``bench/run.py`` discovers and runs them all.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Stats:
    median: float
    min: float
    max: float
    runs: int

    @classmethod
    def of(cls, samples: list[float]) -> Stats:
        return cls(statistics.median(samples), min(samples), max(samples), len(samples))


@dataclass(frozen=True)
class Figure:
    """One reported number. ``ratio`` = value / baseline (time) unless said otherwise."""

    area: str
    name: str
    unit: str
    value: Stats
    baseline_name: str | None = None
    baseline: Stats | None = None
    budget: str | None = None  # e.g. "<= 2.0x", ">= 0.8x"; None = report only
    higher_is_better: bool = False
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ratio(self) -> float | None:
        if self.baseline is None or self.baseline.median == 0:
            return None
        return self.value.median / self.baseline.median

    def within_budget(self) -> bool | None:
        if self.budget is None or self.ratio is None:
            return None
        op, _, num = self.budget.partition(" ")
        limit = float(num.rstrip("x"))
        return self.ratio <= limit if op == "<=" else self.ratio >= limit

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["ratio"] = self.ratio
        d["within_budget"] = self.within_budget()
        return d


@dataclass
class Context:
    """Shared by all benchmarks of one run: scratch space and the repeat count."""

    workdir: Path
    runs: int = 5
    quick: bool = False
    state: dict[str, Any] = field(default_factory=dict)


def measure(fn: Callable[[], Any], runs: int = 5, warmup: int = 1) -> Stats:
    """Wall time of ``fn`` in seconds over ``runs`` runs after ``warmup`` discarded ones."""
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t0)
    return Stats.of(samples)
