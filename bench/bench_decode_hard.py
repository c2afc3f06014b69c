"""Reading wristband, badge and card codes on the *hard* corpus (DESIGN §10, hard frames).

Frames: ``clinicam.drivers.corpus.hard_samples`` at 1280x720 (``--hard-frames N`` per
condition). Three readers on the same frames, in the same run, interleaved frame by
frame so machine load hits them alike:

- **plain zxing-cpp**: one ``read_barcodes`` call with the station's formats (the
  baseline of the time budget);
- **pipeline**: ``clinicam.drivers.pipeline.PipelineReader`` on one frame;
- **pyzbar**: counted on the codes zbar can read at all (not DataMatrix nor PDF417).

Rates count only wristband, badge and card codes; a false decode is any decoded code
that is not in the frame (medication EAN-13 distractors included). Then a presentation:
each of a subset of those codes held in view for 1 s (30 lores frames, fresh sensor
noise and a hand's drift each frame) and the time until it is first read, with the
reader working through frames as fast as it can (frames arriving meanwhile are
dropped, as on the station), the pipeline with its stream additions (next-frame
agreement, still crop from a simulated 2x still stream).
"""

from __future__ import annotations

import collections
import dataclasses
import random
import statistics
import time
from collections.abc import Callable

from clinicam.drivers import corpus
from clinicam.drivers.camera import SimulatedCamera
from clinicam.drivers.pipeline import PipelineReader, StreamReader
from clinicam.drivers.readers import SYMBOLOGIES, PyzbarReader, ZxingReader
from clinicam.firmware.codes.gs1 import plausible
from harness import Context, Figure, Stats

ZBAR_FORMATS = ("code128", "gs1-128", "qr", "gs1-qr", "ean13")
FPS = 30
PRESENTATION_FRAMES = 30


def _p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))]


def _timed(decode: Callable, frame: object, runs: int) -> tuple[float, set]:
    times, codes = [], []
    for _ in range(runs):
        t0 = time.perf_counter()
        codes = decode(frame)
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1000, {(c.symbology, c.text) for c in codes}


def _per_frame(ctx: Context, n: int) -> tuple[list[Figure], list[corpus.HardSample]]:
    readers = {
        "plain zxing-cpp": ZxingReader(SYMBOLOGIES).decode,
        "pipeline": PipelineReader(SYMBOLOGIES, gs1=plausible).decode,
        "pyzbar": PyzbarReader(ZBAR_FORMATS).decode,
    }
    runs = 1 if ctx.quick else 3
    hit: dict[str, collections.Counter] = {k: collections.Counter() for k in readers}
    total: collections.Counter = collections.Counter()
    zbar_by: collections.Counter = collections.Counter()
    false = collections.Counter()
    times: dict[str, list[float]] = {k: [] for k in readers}
    samples = list(corpus.hard_samples(per_condition=n))
    for sample in samples:
        frame = sample.render()
        total[sample.condition] += len(sample.wanted)
        zbar_by[sample.condition] += len(sample.wanted_zbar)
        for name, decode in readers.items():
            ms, found = _timed(decode, frame, runs)
            times[name].append(ms)
            hit[name][sample.condition] += len(found & sample.wanted)
            false[name] += len(found - sample.expected)
    figures = []
    for name in readers:
        got = sum(hit[name].values())
        counts = zbar_by if name == "pyzbar" else total
        denom = sum(counts.values())
        rate = got / denom
        by = {c: round(hit[name][c] / counts[c], 3) for c in counts if counts[c]}
        figures.append(Figure(
            "decode-hard", f"{name}: wristband/badge/card codes read per frame", "ratio",
            Stats(rate, rate, rate, 1), budget=">= 0.92" if name == "pipeline" else None,
            baseline_name="all such codes", baseline=Stats(1.0, 1.0, 1.0, 1),
            higher_is_better=True,
            note=f"{got}/{denom} codes" + (" zbar can read" if name == "pyzbar" else "")
            + f", {false[name]} false decodes, hard corpus {len(samples)} frames",
            extra={"by_condition": by, "false_decodes": false[name]}))
    figures.append(Figure("decode-hard", "pipeline false decodes", "count",
                          Stats(false["pipeline"], false["pipeline"], false["pipeline"], 1),
                          note="must be 0"))
    base, pipe = times["plain zxing-cpp"], times["pipeline"]
    figures.append(Figure("decode-hard", "pipeline vs plain zxing-cpp, median time", "ms",
                          Stats.of(pipe), "plain zxing-cpp", Stats.of(base), "<= 2.0x"))
    p95 = Stats(_p95(pipe), min(pipe), max(pipe), len(pipe))
    figures.append(Figure("decode-hard", "pipeline vs plain zxing-cpp, p95 time", "ms", p95,
                          "plain zxing-cpp p95", Stats(_p95(base), min(base), max(base),
                                                        len(base)), "<= 4.0x"))
    figures.append(Figure("decode-hard", "pyzbar vs plain zxing-cpp, median time", "ms",
                          Stats.of(times["pyzbar"]), "plain zxing-cpp", Stats.of(base)))
    _print_conditions(hit, total, zbar_by)
    return figures, samples


def _print_conditions(hit: dict[str, collections.Counter], total: collections.Counter,
                      zbar_by: collections.Counter) -> None:
    print(f"  {'condition':14s} {'codes':>5s}  " + "  ".join(f"{k:>15s}" for k in hit)
          + "  (pyzbar: of the codes zbar can read)")
    for cond in total:
        if total[cond]:
            rates = "  ".join(
                f"{hit[k][cond] / (zbar_by if k == 'pyzbar' else total)[cond]:15.0%}"
                if (zbar_by if k == "pyzbar" else total)[cond] else f"{'-':>15s}"
                for k in hit)
            print(f"  {cond:14s} {total[cond]:5d}  {rates}")


def _presentation(sample: corpus.HardSample, rng: random.Random) -> list:
    """30 frames of one code in a hand: fresh noise, a little drift."""
    frames = []
    for _ in range(PRESENTATION_FRAMES):
        symbols = tuple(dataclasses.replace(
            s, center=(s.center[0] + rng.uniform(-0.01, 0.01),
                       s.center[1] + rng.uniform(-0.01, 0.01)),
            angle=s.angle + rng.uniform(-1.5, 1.5)) for s in sample.scene.symbols)
        frames.append(dataclasses.replace(sample.scene, symbols=symbols,
                                          seed=rng.randrange(2**31)))
    return frames


def _first_read(decode: Callable, scenes: list, camera: SimulatedCamera | None,
                wanted: frozenset) -> float | None:
    """Simulated time (s) until a wanted code is first reported (frames arrive at 30 fps;
    a slow decode delays the next and skips frames), or None if none of the 30 frames
    of the presentation gave it."""
    now, index = 0.0, 0
    while index < len(scenes):
        scene = scenes[index]
        if camera is not None:
            camera.show(scene)
        frame = scene.render(*corpus.HARD_SIZE)
        t0 = time.perf_counter()
        found = {(c.symbology, c.text) for c in decode(frame)}
        now = max(now, index / FPS) + (time.perf_counter() - t0)
        if found & wanted:
            return now
        index = max(index + 1, int(now * FPS))  # frames that arrived meanwhile: dropped
    return None


def _ttfr(samples: list[corpus.HardSample], n: int) -> list[Figure]:
    rng = random.Random(30)
    chosen = [s for s in samples if s.wanted and s.condition not in ("nominal", "multi")]
    chosen = rng.sample(chosen, min(n, len(chosen)))
    results: dict[str, list[float | None]] = {"plain zxing-cpp": [], "pipeline (stream)": []}
    for sample in chosen:
        scenes = _presentation(sample, rng)
        camera = SimulatedCamera(corpus.HARD_SIZE, (2560, 1440))
        stream = StreamReader(PipelineReader(SYMBOLOGIES, gs1=plausible), camera,
                              clock=time.perf_counter)
        plain = ZxingReader(SYMBOLOGIES).decode
        results["plain zxing-cpp"].append(_first_read(plain, scenes, None, sample.wanted))
        results["pipeline (stream)"].append(_first_read(stream.decode, scenes, camera,
                                                        sample.wanted))
    figures = []
    for name, values in results.items():
        read = sorted(v * 1000 for v in values if v is not None)
        share = len(read) / len(values)
        figures.append(Figure(
            "decode-hard", f"{name}: time to first read, 1 s presentation", "ms",
            Stats(statistics.median(read) if read else 0.0, min(read, default=0.0),
                  max(read, default=0.0), len(read)),
            note=f"read from one of its 30 frames: {len(read)}/{len(values)} ({share:.0%}); "
                 f"p95 of reads {_p95(read) if read else 0:.0f} ms",
            extra={"read_in_presentation": share}))
    return figures


def run(ctx: Context) -> list[Figure]:
    n = int(ctx.state.get("hard_frames", 6 if ctx.quick else 24))
    figures, samples = _per_frame(ctx, n)
    figures.extend(_ttfr(samples, 8 if ctx.quick else 24))
    return figures
