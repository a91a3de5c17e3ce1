"""Chunked x4 super-resolution of an array scene (:func:`rsisr.upscale_dataarray`).

Each output chunk is the x4 of one input chunk. It is computed from the input region its output
needs (:func:`needed_region`): the tiles whose blending support reaches into the chunk, with the
halo that the nodata fill reads, and the bicubic taps of the values the scaling carries over. The
tile grid and the latent noise are the scene's (the engine runs on the chunk's window of the whole
scene), so a chunk's pixels are those of a whole-scene run: chunking changes which tiles run where
(tiles on chunk edges run once for each chunk they reach), never the result beyond what the
engine's window runs already allow.

:func:`lazy_upscale` builds the dask graph: one task per output chunk, reading its region from the
input's chunks, and one graph key holding the model. It runs on any dask scheduler.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from rsisr.config import SCALE
from rsisr.imageops import bicubic_support
from rsisr.radiometry import Scaling
from rsisr.tiling import AxisPlan
from rsisr.upscale.arrayraster import ArrayOutput, ArrayRaster, RasterMeta
from rsisr.upscale.bands import BandChoice
from rsisr.upscale.engine import FILL_GROW, TiledUpscaler


@dataclass(frozen=True)
class RegionJob:
    """What every piece of a chunked run shares, besides its pixels (picklable): the raster's
    header, the plan's model bands, scaling, mask mode and band choice (the bands written), the
    model's band count, and the engine's keywords (tile and overlap already aligned to the model)."""

    meta: RasterMeta
    indexes: tuple[int, ...]
    scaling: Scaling
    mask_mode: str
    engine: tuple[tuple[str, object], ...]
    choice: BandChoice | None = None
    model_bands: int = 3

    @property
    def out_bands(self) -> tuple[int, ...]:
        """The input bands written, in output order."""
        return self.choice.out if self.choice is not None else self.indexes

    @property
    def out_dtype(self) -> np.dtype:
        return np.dtype(self.meta.decoded or self.meta.dtype)

    @property
    def engine_options(self) -> dict:
        return dict(self.engine)


def needed_region(window: tuple[int, int, int, int], shape: tuple[int, int], tile: int,
                  overlap: int) -> tuple[int, int, int, int]:
    """The LR rows and columns (r0, r1, c0, c1) of a scene of ``shape`` that the output of LR
    ``window`` = (row, col, height, width) reads: the tiles whose support meets the window's
    output with :data:`FILL_GROW` around them, and the bicubic taps of the window's output."""

    def axis(start: int, size: int, length: int) -> tuple[int, int]:
        plan = AxisPlan(length, tile, overlap)
        a, b = SCALE * start, SCALE * (start + size)
        tiles = plan.intersecting(a, b)
        lo, hi, _, _ = bicubic_support(a, b, length, SCALE)
        if len(tiles):
            lo = min(lo, plan.start(tiles[0]) - FILL_GROW)
            hi = max(hi, plan.start(tiles[-1]) + plan.size(tiles[-1]) + FILL_GROW)
        return max(0, lo), min(length, hi)

    r, c, h, w = window
    (r0, r1), (c0, c1) = axis(r, h, shape[0]), axis(c, w, shape[1])
    return r0, r1, c0, c1


def run_region(engine: TiledUpscaler, region, origin: tuple[int, int], window: tuple[int, int, int, int],
               job: RegionJob, on_tile=None) -> np.ndarray:
    """The x4 output (bands, 4 h, 4 w) of LR ``window`` (scene coordinates) from ``region``, the
    (C, h', w') input whose first pixel is scene pixel ``origin``, in the raster's dtype (or the
    decoded floats, NaN where nodata)."""
    from rasterio.windows import Window

    from rsisr.upscale.sink import RasterSink
    from rsisr.upscale.source import RasterSource

    raster = ArrayRaster(region, job.meta, origin)
    source = RasterSource(raster, job.indexes, job.scaling, job.mask_mode, None, job.model_bands, job.choice)
    r, c, h, w = window
    out = ArrayOutput(len(job.out_bands), SCALE * h, SCALE * w, job.meta.dtype, raster.nodata)
    engine.run(source, RasterSink(out, source, Window(c, r, w, h), len(job.indexes)), window, on_tile=on_tile)
    values = out.array
    if job.meta.decoded is not None:  # back to the array's floats, NaN where the output is nodata
        decoded = values.astype(job.out_dtype)
        decoded[values == np.array(raster.nodata).astype(values.dtype)] = np.nan
        values = decoded
    return values


class ModelRef:
    """The model under one graph key: not callable, so dask passes it to tasks as data."""

    def __init__(self, model) -> None:
        self.model = model


def _region_task(region, origin, window, job: RegionJob, ref: ModelRef) -> np.ndarray:
    engine = TiledUpscaler(ref.model, **job.engine_options)
    return run_region(engine, np.asarray(region), origin, window, job)


def chunk_edges(chunks: tuple[int, ...], start: int, stop: int) -> list[tuple[int, int]]:
    """The ranges of the chunks of an axis (``chunks``: their sizes) cut to [start, stop)."""
    edges = np.concatenate([[0], np.cumsum(chunks)])
    out = []
    for a, b in zip(edges[:-1], edges[1:]):
        a, b = max(int(a), start), min(int(b), stop)
        if a < b:
            out.append((a, b))
    return out


def lazy_upscale(data, job: RegionJob, model, window: tuple[int, int, int, int]):
    """A dask array (bands, 4 h, 4 w): the x4 of LR ``window`` of the dask array ``data``
    (C, H, W), one chunk per input chunk (cut to the window), each computed from its region."""
    import dask
    import dask.array as da
    from dask.base import tokenize

    opts = job.engine_options
    shape = tuple(data.shape[-2:])
    r, c, h, w = window
    token = tokenize(data.name, repr(job), window, id(model))
    ref = dask.delayed(ModelRef(model), name=f"rsisr-model-{token}", pure=True)
    task = dask.delayed(_region_task, pure=True)
    rows = []
    for i, (ra, rb) in enumerate(chunk_edges(data.chunks[-2], r, r + h)):
        row = []
        for j, (ca, cb) in enumerate(chunk_edges(data.chunks[-1], c, c + w)):
            piece = (ra, ca, rb - ra, cb - ca)
            r0, r1, c0, c1 = needed_region(piece, shape, opts["tile"], opts["overlap"])
            out = task(data[:, r0:r1, c0:c1], (r0, c0), piece, job, ref,
                       dask_key_name=f"rsisr-upscale-{token}-{i}-{j}")
            row.append(da.from_delayed(out, (len(job.out_bands), SCALE * (rb - ra), SCALE * (cb - ca)),
                                       dtype=job.out_dtype))
        rows.append(row)
    return da.block([rows])
