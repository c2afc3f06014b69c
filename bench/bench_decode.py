"""Decode time per frame and decode rate: zxing-cpp vs pyzbar on the same seeded corpus.

Frames come from the *easy* corpus, ``clinicam.drivers.corpus.samples`` (decodable by
construction: a regression floor, not the real world; the hard corpus is
``bench_decode_hard.py``), at 640x480 and 1280x720. The pipeline reader is shown too,
to check it loses nothing a plain call reads. Each frame is
decoded ``ctx.runs`` times per reader and its median kept; the figures are the median
and p95 over frames. zxing-cpp is measured twice: with the station's default formats
(which include DataMatrix, zbar cannot read it) and restricted to zbar's formats, so the
speed comparison with pyzbar is like for like. Rates count only the codes each engine
can read at all.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

from clinicam.drivers import corpus
from clinicam.drivers.pipeline import PipelineReader
from clinicam.drivers.readers import DEFAULT_FORMATS, PyzbarReader, ZxingReader
from clinicam.firmware.codes.gs1 import plausible
from harness import Context, Figure, Stats

ZBAR_FORMATS = ("code128", "gs1-128", "qr", "gs1-qr", "ean13")


def _readers() -> dict[str, tuple[Callable, frozenset[str]]]:
    all_formats = (*DEFAULT_FORMATS, "pdf417", "ean13")
    return {
        "zxing (station formats)": (ZxingReader(all_formats).decode, frozenset(all_formats)),
        "pipeline (station formats)": (PipelineReader(all_formats, gs1=plausible).decode,
                                       frozenset(all_formats)),
        "zxing (zbar formats)": (ZxingReader(ZBAR_FORMATS).decode, frozenset(ZBAR_FORMATS)),
        "pyzbar": (PyzbarReader(ZBAR_FORMATS).decode, frozenset(ZBAR_FORMATS)),
    }


def _p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))]


def _time_frame(decode: Callable, frame: object, runs: int) -> tuple[float, list]:
    samples, codes = [], []
    for _ in range(runs):
        t0 = time.perf_counter()
        codes = decode(frame)
        samples.append(time.perf_counter() - t0)
    return statistics.median(samples), codes


def _one_size(ctx: Context, size: tuple[int, int]) -> list[Figure]:
    frames = [(s, s.render()) for s in corpus.samples(seed=11, sizes=(size,))]
    runs = 1 if ctx.quick else ctx.runs
    label = f"{size[0]}x{size[1]}"
    figures, times = [], {}
    for name, (decode, formats) in _readers().items():
        per_frame, hit, total = [], 0, 0
        for sample, frame in frames:
            seconds, codes = _time_frame(decode, frame, runs)
            per_frame.append(seconds * 1000)
            expected = {c for c in sample.expected if c[0] in formats}
            hit += len({(c.symbology, c.text) for c in codes} & expected)
            total += len(expected)
        stats = Stats(statistics.median(per_frame), min(per_frame), max(per_frame),
                      len(per_frame))
        times[name] = stats
        figures.append(Figure("decode", f"{name} {label} per frame", "ms", stats,
                              note=f"p95 {_p95(per_frame):.1f} ms over {len(frames)} frames",
                              extra={"p95_ms": _p95(per_frame), "frames": len(frames)}))
        rate = hit / total if total else 0.0
        figures.append(Figure("decode", f"{name} {label} decode rate (easy corpus)", "ratio",
                              Stats(rate, rate, rate, 1), "all codes", Stats(1.0, 1.0, 1.0, 1),
                              budget=">= 0.95" if name.startswith("zxing (station") else None,
                              higher_is_better=True, note=f"{hit}/{total} codes"))
    figures.append(Figure("decode", f"zxing vs pyzbar {label} (zbar formats)", "ms",
                          times["zxing (zbar formats)"], "pyzbar", times["pyzbar"],
                          note="ratio < 1: zxing-cpp faster"))
    return figures


def run(ctx: Context) -> list[Figure]:
    figures: list[Figure] = []
    for size in corpus.SIZES[::-1]:
        figures.extend(_one_size(ctx, size))
    return figures
