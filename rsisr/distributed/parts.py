"""Cutting an output into parts that compute alone exactly as in a whole-scene run. Pure functions.

Why the cuts fall where they do (:mod:`rsisr.upscale.engine`, :mod:`rsisr.tiling`):

- **Columns** are cut where the engine's own panels end: a single-process run already processes
  the output in panels of :func:`panel_columns` input columns and runs the tiles that straddle a
  panel edge once for each panel. A part that spans whole panels therefore makes exactly the
  model calls (same tiles, same batches) that the whole run makes for those panels. Cutting
  anywhere else would change which tiles share a batch, and batched kernels are not bit-exact
  across batch compositions in fp32 (about 1e-6 here).
- **Rows** are cut at tile-row starts. Batches never span tile rows, so any row cut keeps the
  model calls; at a tile start only one tile row has to run in both parts (the blending halo):
  the part above stops before the next tile's weight begins, the part below needs that row's
  ramp.

Every output pixel is then the same sum of the same tiles with the same weights, and the sink's
conversion (scaling, the clipped-value carry, masks) is a function of scene coordinates, so the
assembled parts are bit-identical to the single-process output at the same precision and threads.
"""

from __future__ import annotations

import bisect
import heapq
import math
from dataclasses import dataclass

from rsisr.config import SCALE
from rsisr.errors import ConfigError
from rsisr.tiling import AxisPlan, align_down

#: Fixed cost of one part (opening the input and the model's device, creating, checking and
#: renaming the part file) in tiles' worth of model time, used to choose the part size. A guess,
#: not measured: benchmarks/split_scene.py measures the rest of a part's overhead (reading,
#: blending, converting, writing: 7-8 % of the model time on the CPU), which grows with the part's
#: area and so does not depend on how the scene is cut; the repeated halo tile rows do, and the
#: estimate counts them exactly.
PART_OVERHEAD_TILES = 4.0
#: Parts per worker that the automatic size aims for at least (load balance, retry granularity).
MIN_PARTS_PER_WORKER = 2


@dataclass(frozen=True)
class Part:
    """One part: LR rows [row_off, row_off + height) and cols [col_off, col_off + width) of the
    scene, and ``tiles``, the model runs it makes (its halo included)."""

    index: int
    row_off: int
    col_off: int
    height: int
    width: int
    tiles: int

    @property
    def lr_window(self) -> tuple[int, int, int, int]:
        return self.row_off, self.col_off, self.height, self.width


def panel_columns(block_width: int, panel_width: int) -> int | None:
    """LR columns of the engine's panels for an output of ``block_width``-wide blocks
    (:func:`rsisr.tiling.chunks` with :data:`rsisr.upscale.engine.PANEL_WIDTH`); None when a
    panel is not a whole number of LR pixels (then a part spans the full width)."""
    size = max(block_width, align_down(panel_width, block_width))
    return size // SCALE if size % SCALE == 0 else None


def _column_spans(col_off: int, width: int, panel: int | None) -> list[tuple[int, int]]:
    if panel is None:
        return [(col_off, col_off + width)]
    return [(col_off + a, col_off + min(a + panel, width)) for a in range(0, width, panel)]


def _row_cuts(py: AxisPlan, row_off: int, height: int) -> list[int]:
    """LR rows where a part may start: tile starts strictly inside the window."""
    return [py.start(k) for k in range(py.count) if row_off < py.start(k) < row_off + height]


class _Counter:
    """Tiles of an axis whose blending support meets LR [a, b): ``len(plan.intersecting(4a, 4b))``
    by bisection (supports are ordered), for scenes of thousands of tiles."""

    def __init__(self, plan: AxisPlan) -> None:
        supports = [plan.support(k) for k in range(plan.count)]
        self.starts = [s for s, _ in supports]
        self.ends = [e for _, e in supports]

    def __call__(self, a: int, b: int) -> int:
        return max(0, bisect.bisect_left(self.starts, SCALE * b) - bisect.bisect_right(self.ends, SCALE * a))


def split(shape: tuple[int, int], window: tuple[int, int, int, int], tile: int, overlap: int,
          panel: int | None, rows_per_part: int) -> list[Part]:
    """The parts of the LR ``window`` (row_off, col_off, height, width) of a scene of ``shape``
    (H, W): whole panels of ``panel`` columns by ``rows_per_part`` tile rows, row-major."""
    if rows_per_part < 1:
        raise ConfigError(f"a part needs at least one tile row, got {rows_per_part}")
    py, px = AxisPlan(shape[0], tile, overlap), AxisPlan(shape[1], tile, overlap)
    return _split(py, _Counter(py), _Counter(px), window, panel, rows_per_part)


def _split(py: AxisPlan, count_rows, count_cols, window, panel, rows_per_part: int) -> list[Part]:
    r, c, h, w = window
    cuts = _row_cuts(py, r, h)[rows_per_part - 1::rows_per_part]
    edges = [r, *cuts, r + h]
    columns = [(c0, c1, count_cols(c0, c1)) for c0, c1 in _column_spans(c, w, panel)]
    parts = []
    for r0, r1 in zip(edges, edges[1:]):
        rows = count_rows(r0, r1)
        for c0, c1, cols in columns:
            parts.append(Part(len(parts), r0, c0, r1 - r0, c1 - c0, rows * cols))
    return parts


def makespan(costs: list[float], workers: int) -> float:
    """Finish time of ``costs`` on ``workers`` when each free worker takes the largest waiting
    part (the order :func:`submission_order` gives the scheduler)."""
    loads = [0.0] * max(1, min(workers, len(costs)))
    for cost in sorted(costs, reverse=True):
        heapq.heapreplace(loads, loads[0] + cost)
    return max(loads)


def submission_order(parts: list[Part]) -> list[Part]:
    """Largest parts first, so that the small ones fill the gaps at the end."""
    return sorted(parts, key=lambda p: (-p.tiles, p.index))


def choose_rows(shape, window, tile: int, overlap: int, panel: int | None, workers: int,
                overhead: float = PART_OVERHEAD_TILES) -> int:
    """Tile rows per part for ``workers``: the smallest estimated finish time (model runs plus
    ``overhead`` per part, see :func:`makespan`) among sizes that give every worker at least
    :data:`MIN_PARTS_PER_WORKER` parts where the scene allows; ties go to fewer parts."""
    py, px = AxisPlan(shape[0], tile, overlap), AxisPlan(shape[1], tile, overlap)
    count_rows, count_cols = _Counter(py), _Counter(px)
    n_rows = len(_row_cuts(py, window[0], window[2])) + 1
    best = None
    for rows in _candidates(n_rows):
        parts = _split(py, count_rows, count_cols, window, panel, rows)
        if rows > 1 and len(parts) < MIN_PARTS_PER_WORKER * workers:
            break  # larger sizes only give fewer parts
        score = makespan([p.tiles + overhead for p in parts], workers)
        if best is None or score <= best[0]:
            best = (score, rows)
    return best[1]


def _candidates(n: int) -> list[int]:
    """1 to ``n``, every size up to 16, then about 6 % apart (a few dozen sizes for any scene)."""
    out, k = [], 1
    while k < n:
        out.append(k)
        k = k + 1 if k < 16 else int(k * 1.0625) + 1
    return out + [n]


def rows_for_size(part_size: int, tile: int, overlap: int) -> int:
    """Tile rows per part for ``--part-size`` (LR rows): the nearest whole number of tile steps."""
    if isinstance(part_size, bool) or not isinstance(part_size, int) or part_size < 1:
        raise ConfigError(f"--part-size must be a positive number of input rows, got {part_size!r}")
    return max(1, math.floor(part_size / (tile - overlap) + 0.5))
