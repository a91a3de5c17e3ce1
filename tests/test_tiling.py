"""Pure window, grid and feather arithmetic (rsisr.tiling)."""

import numpy as np
import pytest

from rsisr.errors import ConfigError
from rsisr.tiling import (
    AxisPlan, alignment, chunks, effective_tiling, lr_span, nearest_up, raised_cosine_rise,
)

SHAPES = [(1, 8, 0), (7, 8, 2), (8, 8, 2), (9, 8, 2), (100, 16, 4), (113, 32, 8), (1000, 128, 16), (257, 64, 0)]


def test_alignment_and_effective_tiling():
    assert alignment(1) == 2 and alignment(4) == 4 and alignment(16) == 16 and alignment(3) == 6
    assert effective_tiling(128, 16, 16) == (128, 16)
    assert effective_tiling(100, 10, 16) == (96, 16)  # tile down, overlap up
    assert effective_tiling(33, 5, 1) == (32, 6)
    assert effective_tiling(5, 0, 4) == (4, 0)


@pytest.mark.parametrize("tile, overlap", [(32, 16), (32, 20), (0, 0), (-4, 0), (16, -1)])
def test_effective_tiling_rejects_bad_values(tile, overlap):
    with pytest.raises(ConfigError):
        effective_tiling(tile, overlap, 4)


def test_effective_tiling_error_after_alignment_names_the_fix():
    with pytest.raises(ConfigError, match="use --tile 48 or more"):
        effective_tiling(40, 9, 16)  # 40 > 18, but aligned: tile 32, overlap 16


def test_rise_is_complementary_and_has_zero_margins():
    for overlap in (1, 4, 16):
        rise = raised_cosine_rise(overlap)
        assert rise.size == 4 * overlap
        np.testing.assert_allclose(rise + rise[::-1], 1.0, atol=1e-15)
        assert np.all(rise[:overlap] == 0) and np.all(rise[-overlap:] == 1)
        assert np.all(np.diff(rise) >= 0)


@pytest.mark.parametrize("length, tile, overlap", SHAPES)
def test_plan_covers_the_axis_and_weights_partition_unity(length, tile, overlap):
    p = AxisPlan(length, tile, overlap)
    starts = [p.start(k) for k in range(p.count)]
    assert starts[0] == 0 and all(b - a == p.stride for a, b in zip(starts, starts[1:]))
    assert p.start(p.count - 1) + p.size(p.count - 1) == length
    if p.count > 1:
        assert p.size(p.count - 1) > overlap  # the last tile is more than its overlap band
        assert p.start(p.count - 2) + tile < length  # and needed
    else:
        assert p.size(0) == length
    np.testing.assert_allclose(p.weight_sum(0, 4 * length), 1.0, atol=1e-12)
    # the scene's own edges are not feathered
    assert p.weights(0)[0] == 1.0 and p.weights(p.count - 1)[-1] == 1.0


@pytest.mark.parametrize("length, tile, overlap", SHAPES)
def test_support_is_where_weights_are_nonzero(length, tile, overlap):
    p = AxisPlan(length, tile, overlap)
    for k in range(p.count):
        w = p.weights(k)
        nz = np.nonzero(w)[0]
        a, b = p.support(k)
        assert (nz[0] + 4 * p.start(k), nz[-1] + 1 + 4 * p.start(k)) == (a, b)


def test_intersecting_is_exact():
    p = AxisPlan(1000, 128, 16)
    for a, b in [(0, 1), (0, 4000), (447, 449), (463, 464), (464, 465), (3990, 4000), (1000, 1800)]:
        expected = [k for k in range(p.count) if p.support(k)[0] < b and p.support(k)[1] > a]
        assert list(p.intersecting(a, b)) == expected
    assert list(p.intersecting(4000, 4001)) == []


def test_chunks_are_block_aligned():
    assert chunks(1000, 256, 512) == [(0, 512), (512, 1000)]
    assert chunks(100, 256, 512) == [(0, 100)]
    assert chunks(1000, 256, 100) == [(0, 256), (256, 512), (512, 768), (768, 1000)]  # at least one block
    assert chunks(1024, 512, 8192) == [(0, 1024)]


def test_lr_span_and_nearest_up():
    assert lr_span(0, 16) == (0, 4, 0)
    assert lr_span(6, 13) == (1, 4, 2)
    a = np.arange(12).reshape(3, 4)
    up = nearest_up(a, (2, 1), (5, 6))
    full = a.repeat(4, 0).repeat(4, 1)
    assert np.array_equal(up, full[2:7, 1:7])
