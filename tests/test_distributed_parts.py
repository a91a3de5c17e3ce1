"""Cutting an output into parts (rsisr.distributed.parts, pure functions): coverage, cuts at tile
starts and at the engine's panel edges, the model runs each part makes, and the automatic size."""

from __future__ import annotations

import pytest

from rsisr.config import SCALE
from rsisr.distributed.job import output_block_width
from rsisr.distributed.parts import (
    _Counter, choose_rows, makespan, panel_columns, rows_for_size, split, submission_order,
)
from rsisr.errors import ConfigError
from rsisr.tiling import AxisPlan, chunks
from rsisr.upscale.engine import PANEL_WIDTH, TiledUpscaler
from rsisr.standins import NearestX4


@pytest.mark.parametrize("shape,window,tile,overlap,rows", [
    ((718, 791), (0, 0, 718, 791), 64, 8, 1),
    ((718, 791), (37, 101, 301, 333), 64, 8, 3),
    ((1024, 5000), (5, 3, 1000, 4990), 128, 16, 2),
    ((40, 40), (0, 0, 40, 40), 128, 16, 1),  # smaller than one tile
    ((300, 9000), (0, 2047, 300, 4100), 96, 24, 4),
])
def test_parts_tile_the_window_and_cut_where_runs_are_unchanged(shape, window, tile, overlap, rows):
    panel = panel_columns(512, PANEL_WIDTH)
    assert panel == 2048
    parts = split(shape, window, tile, overlap, panel, rows)
    r, c, h, w = window
    covered = [[0] * w for _ in range(h)] if h * w <= 400_000 else None
    py = AxisPlan(shape[0], tile, overlap)
    starts = {py.start(k) for k in range(py.count)}
    engine = TiledUpscaler(NearestX4(), tile=tile, overlap=overlap, device="cpu")
    for k, p in enumerate(parts):
        assert p.index == k
        assert r <= p.row_off and p.row_off + p.height <= r + h and c <= p.col_off and p.col_off + p.width <= c + w
        assert p.row_off == r or p.row_off in starts  # rows cut at tile starts
        assert (p.col_off - c) % panel == 0  # columns cut at the engine's panel edges
        assert p.width <= panel
        # the model runs of the part are the engine's own count for that window
        assert p.tiles == engine.count_tiles(shape, p.lr_window, (512, 512))
        if covered is not None:
            for y in range(p.row_off - r, p.row_off - r + p.height):
                row = covered[y]
                for x in range(p.col_off - c, p.col_off - c + p.width):
                    row[x] += 1
    if covered is not None:
        assert all(v == 1 for row in covered for v in row)  # every pixel in exactly one part
    else:
        assert sum(p.height * p.width for p in parts) == h * w
    # each row cut repeats exactly one tile row (the blending halo), no more
    n_row_parts = len({p.row_off for p in parts})
    whole_rows = len(py.intersecting(SCALE * r, SCALE * (r + h)))
    assert sum(len(py.intersecting(SCALE * a, SCALE * (a + p.height))) for a, p in
               {p.row_off: p for p in parts}.items()) == whole_rows + n_row_parts - 1


def test_part_tiles_add_up_to_the_single_run_plus_the_halo():
    shape, window = (1000, 3000), (0, 0, 1000, 3000)
    engine = TiledUpscaler(NearestX4(), tile=128, overlap=16, device="cpu")
    single = engine.count_tiles(shape, window, (512, 512))
    one_row_band = split(shape, window, 128, 16, 2048, 1000)
    assert sum(p.tiles for p in one_row_band) == single  # panels alone repeat nothing new
    parts = split(shape, window, 128, 16, 2048, 3)
    px = AxisPlan(shape[1], 128, 16)
    tiles_per_row = sum(len(px.intersecting(a, b)) for a, b in chunks(4 * 3000, 512, PANEL_WIDTH))
    cuts = len({p.row_off for p in parts}) - 1
    assert sum(p.tiles for p in parts) == single + cuts * tiles_per_row


@pytest.mark.parametrize("length,tile,overlap", [(1, 8, 2), (100, 16, 4), (1000, 128, 16), (517, 64, 0)])
def test_counter_matches_the_axis_plan(length, tile, overlap):
    plan = AxisPlan(length, tile, overlap)
    count = _Counter(plan)
    for a in range(0, length, 7):
        for b in range(a + 1, length + 1, 11):
            assert count(a, b) == len(plan.intersecting(SCALE * a, SCALE * b)), (a, b)


def test_panel_columns_follow_the_output_blocks():
    assert panel_columns(512, 8192) == 2048
    assert panel_columns(256, 8192) == 2048
    assert panel_columns(384, 8192) == 21 * 384 // 4  # 8192 rounded down to whole blocks
    assert panel_columns(20000, 8192) == 5000  # strips: the panel is the whole width
    assert panel_columns(12006, 8192) is None  # not whole input pixels: no column cuts
    assert output_block_width({"TILED": "YES", "BLOCKXSIZE": "512", "width": 9000}) == 512
    assert output_block_width({"TILED": "YES", "width": 9000}) == 256  # GDAL's default
    assert output_block_width({"TILED": "NO", "BLOCKXSIZE": "512", "width": 9000}) == 9000


def test_automatic_size_balances_the_workers():
    shape, window = (10980, 10980), (0, 0, 10980, 10980)  # a Sentinel-2 tile, 43,920 px out
    sizes = {w: choose_rows(shape, window, 128, 16, 2048, w) for w in (1, 2, 8, 64)}
    parts = {w: split(shape, window, 128, 16, 2048, r) for w, r in sizes.items()}
    for w in (2, 8, 64):
        assert len(parts[w]) >= 2 * w  # at least two parts per worker
    # more workers, smaller parts; and the estimated finish time falls with the workers
    assert sizes[1] >= sizes[2] >= sizes[8] >= sizes[64]
    spans = [makespan([p.tiles + 4 for p in parts[w]], w) for w in (1, 2, 8, 64)]
    assert spans == sorted(spans, reverse=True)
    # and with 64 workers it is within 30 % of a perfect share of the work
    total = sum(p.tiles + 4 for p in parts[64])
    assert spans[-1] < 1.3 * total / 64
    # one tile row: one part per panel, whatever the workers
    assert choose_rows((100, 5000), (0, 0, 100, 5000), 128, 16, 2048, 8) == 1
    assert len(split((100, 5000), (0, 0, 100, 5000), 128, 16, 2048, 1)) == 3


def test_makespan_and_order():
    # largest first onto the least loaded worker: 5+3 and 4+3+3
    assert makespan([3, 5, 3, 4, 3], 2) == 10
    assert makespan([3, 5, 3, 4, 3], 1) == 18
    assert makespan([3, 5], 8) == 5
    parts = split((1000, 100), (0, 0, 1000, 100), 128, 16, 2048, 3)
    order = submission_order(parts)
    assert [p.tiles for p in order] == sorted((p.tiles for p in parts), reverse=True)
    assert sorted(p.index for p in order) == list(range(len(parts)))


def test_part_size_option():
    assert rows_for_size(112, 128, 16) == 1
    assert rows_for_size(1000, 128, 16) == 9  # 8.9 tile steps
    assert rows_for_size(10, 128, 16) == 1
    for bad in (0, -5, 2.5, True, "64"):
        with pytest.raises(ConfigError, match="--part-size"):
            rows_for_size(bad, 128, 16)
    with pytest.raises(ConfigError, match="tile row"):
        split((100, 100), (0, 0, 100, 100), 32, 8, 2048, 0)
