"""Window, grid and feather arithmetic for tiled x4 inference (DESIGN.md, Tiling). Pure functions.

Coordinates: LR = input pixels, HR = output pixels (``SCALE`` x LR). Along one axis of a scene of
``length`` LR pixels, tiles of ``tile`` LR pixels start every ``stride = tile - overlap`` pixels,
so neighbours share ``overlap`` LR pixels (``4 * overlap`` HR pixels, "the band").

Feathering inside a band of ``4 * overlap`` HR pixels::

    tile k:     1 ... 1 | 1 .. 1 | raised cosine 1 -> 0 | 0 .. 0 |
    tile k+1:           | 0 .. 0 | raised cosine 0 -> 1 | 1 .. 1 | 1 ...
                          margin      ramp (2 * overlap)   margin
                        (overlap)                         (overlap)

The outer quarter of the band on each side (``overlap`` HR pixels = ``overlap / 4`` LR pixels
next to a tile's edge) gets weight 0: that is where a model's border effects are strongest, so it
is dropped rather than down-weighted. A model whose receptive field reaches at most
``overlap / 4`` LR pixels therefore gives exactly the untiled result. The two ramps are
complementary (they add up to 1), and the scene's own edges get no feathering at all.

The grid is defined on the whole scene: tile ``k`` starts at ``k * stride``, whatever part of
the scene is being written, so the output of a window is the same as that window cut from the
output of the whole scene.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from rsisr.config import SCALE
from rsisr.errors import ConfigError


def align_down(n: int, a: int) -> int:
    return n // a * a


def align_up(n: int, a: int) -> int:
    return -(-n // a) * a


def alignment(lr_multiple: int) -> int:
    """Tile origins are multiples of this: the model's own multiple (so the UNet's downsampling
    grid lines up between tiles) and even (the latent grid is LR/2, so a tile's latent origin,
    which selects its scene-coordinate noise, is a whole latent pixel)."""
    return math.lcm(max(1, int(lr_multiple)), 2)


def effective_tiling(tile: int, overlap: int, lr_multiple: int = 1) -> tuple[int, int]:
    """Check ``tile``/``overlap`` (LR pixels) and align them to the model: the tile is rounded
    down and the overlap up to a multiple of :func:`alignment`. Returns (tile, overlap)."""
    if isinstance(tile, bool) or not isinstance(tile, int) or tile < 1:
        raise ConfigError(f"--tile must be a positive number of input pixels, got {tile!r}")
    if isinstance(overlap, bool) or not isinstance(overlap, int) or overlap < 0:
        raise ConfigError(f"--overlap must be zero or a positive number of input pixels, got {overlap!r}")
    if tile <= 2 * overlap:
        raise ConfigError(
            f"--tile {tile} must be larger than twice --overlap {overlap}; "
            f"use a larger --tile or a smaller --overlap"
        )
    a = alignment(lr_multiple)
    t, o = max(a, align_down(tile, a)), align_up(overlap, a)
    if t <= 2 * o:
        raise ConfigError(
            f"this model needs tile and overlap in multiples of {a} input pixels: --tile {tile} and "
            f"--overlap {overlap} become {t} and {o}, and the tile must be larger than twice the "
            f"overlap; use --tile {2 * o + a} or more"
        )
    return t, o


def raised_cosine_rise(overlap: int) -> np.ndarray:
    """Weights (float64, length ``SCALE * overlap``) of the tile on the far side of a band:
    0 over the first ``overlap`` HR pixels, a raised cosine 0 -> 1 over the next ``2 * overlap``,
    1 over the last ``overlap``. Sampled at pixel centres, so ``rise + rise[::-1] == 1``."""
    if overlap <= 0:
        return np.ones(0)
    u = np.arange(SCALE * overlap) + 0.5
    v = np.clip((u - overlap) / (2.0 * overlap), 0.0, 1.0)
    return 0.5 - 0.5 * np.cos(np.pi * v)


@dataclass(frozen=True)
class AxisPlan:
    """The tiles along one axis of a scene of ``length`` LR pixels (see the module docstring).

    ``count = 1`` when the scene is no longer than one tile; otherwise the smallest count that
    covers the scene, so the last tile (which ends at the scene's edge) is longer than the overlap.
    """

    length: int
    tile: int
    overlap: int

    def __post_init__(self) -> None:
        if self.length < 1:
            raise ValueError(f"length must be positive, got {self.length}")
        if self.tile <= 2 * self.overlap or self.overlap < 0:
            raise ValueError(f"need tile > 2 * overlap >= 0, got tile={self.tile}, overlap={self.overlap}")

    @property
    def stride(self) -> int:
        return self.tile - self.overlap

    @cached_property
    def count(self) -> int:
        if self.length <= self.tile:
            return 1
        return -(-(self.length - self.tile) // self.stride) + 1

    def start(self, k: int) -> int:
        """LR start of tile k."""
        return k * self.stride

    def size(self, k: int) -> int:
        """LR size of tile k (the last one may be shorter)."""
        return min(self.tile, self.length - self.start(k))

    def support(self, k: int) -> tuple[int, int]:
        """HR range [a, b) where tile k's weight is non-zero (its edges less the margins)."""
        a = SCALE * self.start(k) + (self.overlap if k > 0 else 0)
        end = SCALE * (self.start(k) + self.size(k))
        b = end - (self.overlap if k < self.count - 1 else 0)
        return a, b

    def weights(self, k: int) -> np.ndarray:
        """Feather weights (float64) over tile k's HR extent: ramps only where a neighbour is."""
        w = np.ones(SCALE * self.size(k))
        band = SCALE * self.overlap
        if band:
            rise = raised_cosine_rise(self.overlap)
            if k > 0:
                w[:band] *= rise
            if k < self.count - 1:
                w[-band:] *= rise[::-1]
        return w

    def intersecting(self, a: int, b: int) -> range:
        """Tiles whose support meets the HR range [a, b) (supports are ordered, so a range)."""
        first = next((k for k in range(self.count) if self.support(k)[1] > a), self.count)
        last = first
        while last < self.count and self.support(last)[0] < b:
            last += 1
        return range(first, last)

    def weight_sum(self, a: int, b: int) -> np.ndarray:
        """Sum over tiles of their weights on the HR range [a, b): the normaliser of the
        overlap-add (1 up to rounding, since the ramps are complementary)."""
        total = np.zeros(b - a)
        for k in self.intersecting(a, b):
            s = SCALE * self.start(k)
            w = self.weights(k)
            lo, hi = max(a, s), min(b, s + w.size)
            total[lo - a: hi - a] += w[lo - s: hi - s]
        return total


def chunks(length: int, block: int, max_size: int) -> list[tuple[int, int]]:
    """Split [0, length) into consecutive ranges whose edges are multiples of ``block`` (except
    the final end), each at most ``max(block, max_size rounded down to block)`` long."""
    size = max(block, align_down(max_size, block))
    return [(a, min(a + size, length)) for a in range(0, length, size)]


def lr_span(a: int, b: int) -> tuple[int, int, int]:
    """The LR range covering HR [a, b): (lr_start, lr_stop, offset of a inside the first LR pixel's
    4x4 block), for nearest-neighbour x4 of masks."""
    lo = a // SCALE
    return lo, -(-b // SCALE), a - lo * SCALE


def nearest_up(a: np.ndarray, offset: tuple[int, int], shape: tuple[int, int]) -> np.ndarray:
    """Nearest x4 of the last two axes of ``a``, cut to ``shape`` starting at ``offset`` (HR)."""
    up = a.repeat(SCALE, axis=-2).repeat(SCALE, axis=-1)
    return up[..., offset[0]: offset[0] + shape[0], offset[1]: offset[1] + shape[1]]
