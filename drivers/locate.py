"""Where symbols probably are in a frame, and which way their bars run.

A structure tensor (the summed products of the x and y gradients) over blocks of a
subsampled frame says how strong a block's edges are and whether they share one
direction: bars do, 2-D symbols and text do not. NumPy only: the Pi image carries
neither SciPy nor OpenCV (README "Reading codes" has the measurements).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

Box = tuple[int, int, int, int]  # x0, y0, x1, y1 in frame pixels


@dataclass(frozen=True)
class Region:
    """Where a symbol probably is: a box, and for bars the angle of the bars' normal
    (degrees, 0 = bars upright)."""

    box: Box
    linear: bool
    angle: float = 0.0
    score: float = 0.0
    quad: tuple[tuple[float, float], ...] | None = None  # corners zxing located (2-D)

    def scaled(self, factor: float) -> Region:
        x0, y0, x1, y1 = self.box
        box = (int(x0 * factor), int(y0 * factor), int(x1 * factor), int(y1 * factor))
        return Region(box, self.linear, self.angle, self.score)


_STEP = 2  # subsample: the tensor at half resolution
_BLOCK = 8  # block side at that resolution (16 frame pixels)


def locate(frame: np.ndarray, max_regions: int = 8) -> list[Region]:
    """Candidate symbol regions, strongest first (see the module doc)."""
    small = frame[::_STEP, ::_STEP].astype(np.float32)
    gx = small[1:-1, 2:] - small[1:-1, :-2]
    gy = small[2:, 1:-1] - small[:-2, 1:-1]
    h, w = gx.shape
    h, w = h - h % _BLOCK, w - w % _BLOCK

    def blocks(a: np.ndarray) -> np.ndarray:
        return a[:h, :w].reshape(h // _BLOCK, _BLOCK, w // _BLOCK, _BLOCK).sum(axis=(1, 3))

    jxx, jyy, jxy = blocks(gx * gx), blocks(gy * gy), blocks(gx * gy)
    energy = jxx + jyy
    coherence = np.sqrt((jxx - jyy) ** 2 + 4 * jxy**2) / np.maximum(energy, 1e-6)
    # Edges of a symbol are strong against the frame's own texture, not absolutely:
    # low contrast symbols count, a uniformly busy background does not.
    threshold = max(float(np.percentile(energy, 75)) * 4, 400.0 * _BLOCK * _BLOCK)
    strong = energy > threshold
    regions = []
    for cells in _components(strong):
        region = _region(cells, jxx, jyy, jxy, coherence, energy)
        if region is not None:
            regions.append(region)
    regions.sort(key=lambda r: -r.score)
    return regions[:max_regions]


def _components(mask: np.ndarray) -> list[list[tuple[int, int]]]:
    """8-connected components of a small boolean grid (no SciPy on the Pi image)."""
    seen = np.zeros_like(mask)
    out = []
    rows, cols = mask.shape
    for start in zip(*np.nonzero(mask), strict=True):
        if seen[start]:
            continue
        stack, cells = [start], []
        seen[start] = True
        while stack:
            y, x = stack.pop()
            cells.append((int(y), int(x)))
            for dy in (-1, 0, 1):
                for dx in (-1, 0, 1):
                    ny, nx = y + dy, x + dx
                    if 0 <= ny < rows and 0 <= nx < cols and mask[ny, nx] and not seen[ny, nx]:
                        seen[ny, nx] = True
                        stack.append((ny, nx))
        out.append(cells)
    return out


def _region(cells: list[tuple[int, int]], jxx: np.ndarray, jyy: np.ndarray, jxy: np.ndarray,
            coherence: np.ndarray, energy: np.ndarray) -> Region | None:
    if len(cells) < 3:  # smaller than 3 blocks (~48x48 px): no symbol worth a pass
        return None
    ys, xs = zip(*cells, strict=True)
    sel = (np.array(ys), np.array(xs))
    coh = coherence[sel]
    txx, tyy, txy = float(jxx[sel].sum()), float(jyy[sel].sum()), float(jxy[sel].sum())
    whole = math.sqrt((txx - tyy) ** 2 + 4 * txy**2) / max(txx + tyy, 1e-6)
    linear = whole > 0.5 and float(np.median(coh)) > 0.6
    # The bars' direction from the coherent blocks only: a label's own border would
    # pull it towards the label's axis by several degrees.
    w = np.where(coh > 0.7, coh * coh, 0.0) if linear else np.ones_like(coh)
    sxx, syy = float((jxx[sel] * w).sum()), float((jyy[sel] * w).sum())
    sxy = float((jxy[sel] * w).sum())
    angle = math.degrees(0.5 * math.atan2(2 * sxy, sxx - syy))  # gradient direction
    cell = _STEP * _BLOCK
    box = (min(xs) * cell, min(ys) * cell, (max(xs) + 1) * cell + _STEP,
           (max(ys) + 1) * cell + _STEP)
    return Region(box, linear, angle, float(energy[sel].sum()))


def bars(crop: np.ndarray, rough: float, near_only: bool = True) -> tuple[float, float]:
    """The bars' angle measured again at full resolution on the crop, and the share of
    the crop's strong blocks that are bars: the subsampled locator aliases fine bars
    and can be 10° out, more than a scan line tolerates. With ``near_only`` only bars
    within 15° of ``rough`` count (not a striped gown around the band)."""
    a = crop.astype(np.float32)
    gx = a[1:-1, 2:] - a[1:-1, :-2]
    gy = a[2:, 1:-1] - a[:-2, 1:-1]
    b = 8
    h, w = gx.shape[0] - gx.shape[0] % b, gx.shape[1] - gx.shape[1] % b
    if h < b or w < b:
        return rough, 0.0

    def blocks(m: np.ndarray) -> np.ndarray:
        return m[:h, :w].reshape(h // b, b, w // b, b).sum(axis=(1, 3))

    jxx, jyy, jxy = blocks(gx * gx), blocks(gy * gy), blocks(gx * gy)
    energy = jxx + jyy
    coh = np.sqrt((jxx - jyy) ** 2 + 4 * jxy**2) / np.maximum(energy, 1e-6)
    own = np.degrees(0.5 * np.arctan2(2 * jxy, jxx - jyy))
    strong = energy > np.percentile(energy, 50)
    keep = (coh > 0.8) & strong
    if near_only:
        keep &= np.abs((own - rough + 90) % 180 - 90) < 15
    if not keep.any():
        return rough, 0.0
    sxx, syy, sxy = float(jxx[keep].sum()), float(jyy[keep].sum()), float(jxy[keep].sum())
    angle = math.degrees(0.5 * math.atan2(2 * sxy, sxx - syy))
    if not near_only:  # one direction must dominate for the crop to be bars
        keep &= np.abs((own - angle + 90) % 180 - 90) < 15
    return angle, float(keep.sum()) / max(1, int(strong.sum()))


def edges_angle(crop: np.ndarray) -> float:
    """The direction of the strongest edges of the whole crop (gradient direction)."""
    a = crop.astype(np.float32)
    gx = a[1:-1, 2:] - a[1:-1, :-2]
    gy = a[2:, 1:-1] - a[:-2, 1:-1]
    sxx, syy, sxy = float((gx * gx).sum()), float((gy * gy).sum()), float((gx * gy).sum())
    return math.degrees(0.5 * math.atan2(2 * sxy, sxx - syy))


def quad_size(quad: tuple[tuple[float, float], ...]) -> float:
    return max(math.dist(quad[i], quad[(i + 1) % 4]) for i in range(4))


def overlap(a: Box, b: Box) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]

