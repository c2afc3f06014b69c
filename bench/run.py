"""Run every ``bench/bench_*.py`` and write ``bench/results.json`` plus a table.

Usage: ``python bench/run.py [--quick] [--only AREA]``. No figure here is asserted:
budgets are reported as within/over so a human decides (timed tests flake here).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import tempfile
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from harness import Context, Figure  # noqa: E402


def _load(path: Path):  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _fmt(x: float | None) -> str:
    if x is None:
        return "-"
    return f"{x:.4g}"


def table(figures: list[Figure]) -> str:
    head = (
        f"{'area':10} {'figure':44} {'median':>10} {'min':>10} {'max':>10} {'unit':8} "
        f"{'baseline':>10} {'ratio':>7} {'budget':>8} ok"
    )
    lines = [head, "-" * len(head)]
    for f in figures:
        ok = {True: "yes", False: "NO", None: ""}[f.within_budget()]
        lines.append(
            f"{f.area:10} {f.name[:44]:44} {_fmt(f.value.median):>10} {_fmt(f.value.min):>10} "
            f"{_fmt(f.value.max):>10} {f.unit:8} "
            f"{_fmt(f.baseline.median if f.baseline else None):>10} {_fmt(f.ratio):>7} "
            f"{f.budget or '':>8} {ok}"
        )
        if f.note:
            lines.append(f"{'':10}   {f.note}")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="fewer runs, smaller inputs")
    ap.add_argument("--only", help="run only bench_<ONLY>.py")
    ap.add_argument("--out", type=Path, default=HERE / "results.json")
    ap.add_argument("--hard-frames", type=int, default=None, metavar="N",
                    help="hard decode corpus: N frames per condition (default 24, quick 6)")
    args = ap.parse_args()
    figures: list[Figure] = []
    failures: list[str] = []
    with tempfile.TemporaryDirectory(prefix="clinicam-bench-") as tmp:
        ctx = Context(workdir=Path(tmp), runs=3 if args.quick else 5, quick=args.quick)
        if args.hard_frames is not None:
            ctx.state["hard_frames"] = args.hard_frames
        for path in sorted(HERE.glob("bench_*.py")):
            area = path.stem.removeprefix("bench_")
            if args.only and area != args.only:
                continue
            print(f"== {area}", flush=True)
            try:
                figures.extend(_load(path).run(ctx))
            except Exception:  # a broken benchmark must not hide the others
                failures.append(area)
                traceback.print_exc()
    args.out.write_text(json.dumps([f.as_dict() for f in figures], indent=2) + "\n")
    print(table(figures))
    print(f"\nwrote {args.out}")
    if failures:
        print(f"benchmarks that failed: {', '.join(failures)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
