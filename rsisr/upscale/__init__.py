"""Tiled, georeferenced x4 super-resolution of rasters with bounded memory (``rsisr upscale``).

:func:`upscale_file` is a short sequence of steps, one module each:

- :mod:`~rsisr.upscale.source`: open and check the input; bands, mask mode, the ``--scale auto``
  sample; :class:`~rsisr.upscale.source.RasterSource` reads tiles and each block's inputs;
- :mod:`~rsisr.upscale.plan`: the frozen :class:`~rsisr.upscale.plan.UpscalePlan` (bands, window,
  scaling, profile, tags), resolved before any pixel is read;
- :mod:`~rsisr.upscale.engine`: :class:`TiledUpscaler` (torch only) runs the model
  (:class:`~rsisr.upscale.engine.SRModel`) on overlapping tiles and blends them;
- :mod:`~rsisr.upscale.sink`: back to the raster's values, with masks and nodata;
- :mod:`~rsisr.upscale.output`: the atomic, checked GeoTIFF / COG write;
- :mod:`~rsisr.upscale.ensemble` and :mod:`~rsisr.upscale.uncertainty`: ``--ensemble N`` (the
  mean of N samples) and its ``--uncertainty`` raster (their standard deviation).

:mod:`~rsisr.upscale.memory` has in-memory sources and sinks (tests, :func:`upscale_array`); user
arrays go through :func:`rsisr.array_io.upscale_image` (``model.upscale``). Georeferenced arrays
(:func:`rsisr.upscale_dataarray`) go through the steps above as they are:
:mod:`~rsisr.upscale.arrayraster` reads and writes them like rasterio datasets, and
:mod:`~rsisr.upscale.chunked` computes each chunk of a lazy result from the region it needs.

Nodata and masks. Invalid input pixels (GDAL's dataset mask: nodata, an internal or external
mask, or an alpha band; non-finite floats) are filled before inference: the valid edge grows
inwards by up to ``FILL_GROW`` pixels (mean of the valid 3x3 neighbours, repeated), the rest gets
mid-grey, so nodata values never reach the model. Output pixels whose input pixel (nearest x4)
was invalid are written as nodata, masked in an internal mask, or get the alpha band's value,
as the input did. With a nodata value, a valid output pixel that would equal nodata in every
band is moved one step away from it, so that the output's mask is exactly the input's mask x4.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

from rsisr.upscale.engine import (
    DEFAULT_BATCH_SIZE, DEFAULT_OVERLAP, DEFAULT_TILE, FILL_GROW, SRModel, TiledUpscaler, fill_invalid, model_multiple,
)
from rsisr.upscale.ensemble import EnsembleUpscaler, make_engine
from rsisr.upscale.memory import ArraySink, ArraySource, upscale_array
from rsisr.upscale.source import parse_bands, select_bands

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class UpscaleResult:
    """What :func:`upscale_file` did."""

    path: Path
    width: int
    height: int
    count: int
    tiles: int
    seconds: float
    scaling: str
    uncertainty: Path | None = None  # the uncertainty raster, where one was written


def _progress(progress, total: int):
    """(per-tile callback or None, closer) for ``progress``: False, True (a tqdm bar, silent
    when stderr is not a terminal) or a callable(done, total)."""
    if callable(progress):
        state = {"done": 0}

        def tick(n: int) -> None:
            state["done"] += n
            progress(state["done"], total)

        return tick, lambda: None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=total, unit="tile", desc="upscale", disable=None, leave=False)
        return bar.update, bar.close
    return None, lambda: None


def _filler(engine: TiledUpscaler, plan, source, progress, spread=None):
    """``fill(out, writer[, spread_out, spread_writer])``: the plan's metadata into the open
    output (and the uncertainty raster of ``spread``, a SpreadPlan), then the engine's blocks
    through the writers (which check every write), with progress."""
    from rsisr.upscale.plan import write_metadata
    from rsisr.upscale.sink import RasterSink
    from rsisr.upscale.uncertainty import SpreadWriter, write_spread_metadata

    def fill(out, writer, spread_out=None, spread_writer=None) -> None:
        write_metadata(out, plan)
        spread_sink = None
        if spread is not None:
            write_spread_metadata(spread_out, spread)
            spread_sink = SpreadWriter(spread_writer, plan.scaling, plan.mask_mode, plan.choice)
        sink = RasterSink(writer, source, plan.window, len(plan.indexes), spread_sink)
        tick, close = _progress(progress, engine.count_tiles(source.shape, plan.lr_window, sink.block_shape))
        try:
            engine.run(source, sink, plan.lr_window, on_tile=tick)
        finally:
            close()

    return fill


def _plans(src, net, engine, model: tuple, spread_path, target: Path, **options):
    """The output's UpscalePlan (:func:`rsisr.upscale.plan.make_plan`, with the engine's settings
    and the ensemble's tags; ``model``: (name, sha256)), the uncertainty raster's SpreadPlan
    (None where ``spread_path`` is None) and the RasterSource the engine reads."""
    from dataclasses import replace

    from rsisr.upscale.ensemble import ensemble_tags
    from rsisr.upscale.plan import make_plan, stored_scaling
    from rsisr.upscale.source import RasterSource
    from rsisr.upscale.uncertainty import spread_plan

    run = dict(model_name=model[0], sha=model[1], steps=engine.steps, seed=engine.seed, tile=engine.tile,
               overlap=engine.overlap, precision=engine.precision)
    plan = make_plan(src, run=run, model_bands=engine.bands, stored_scaling=stored_scaling(net), **options)
    tags = ensemble_tags(engine)
    plan = replace(plan, tags={**plan.tags, **tags})
    spread = None if spread_path is None else spread_plan(spread_path, plan, tags, target.name)
    source = RasterSource(src, plan.indexes, plan.scaling, plan.mask_mode, plan.alpha, engine.bands, plan.choice)
    return plan, spread, source


def _write(dataset, dst, plan, spread, cog: bool, overwrite: bool, fill) -> None:
    """Run ``fill`` into the output (a path written atomically, or the open ``dataset``) and
    the uncertainty raster of ``spread`` (None: none), all or nothing."""
    from rsisr.upscale.output import Target, check_dataset_output, write_geotiffs, write_into

    targets = [] if spread is None else [Target(spread.path, spread.profile, spread.cog_options, "uncertainty raster")]
    if dataset is not None:
        check_dataset_output(dataset, plan.profile, cog)
        write_geotiffs(targets, overwrite, lambda opened: write_into(dataset, lambda out, w: fill(out, w, *sum(opened, ()))))
        return
    targets.append(Target(dst, plan.profile, plan.cog_options, "output"))  # last: renamed when the others are
    write_geotiffs(targets, overwrite, lambda opened: fill(*opened[-1], *sum(opened[:-1], ())))


def upscale_file(src, dst, model=None, *, tile: int = DEFAULT_TILE, overlap: int = DEFAULT_OVERLAP,
                 batch_size: int | None = DEFAULT_BATCH_SIZE, steps: int = 1, seed: int = 0, ensemble: int = 1,
                 device="auto", precision: str = "auto", bands=None, bounds=None, bounds_crs=None, aoi=None,
                 scale="auto", co=None, cog: bool = False, uncertainty=None, overwrite: bool = False,
                 progress=False, compile: bool = False, other_bands: str | None = None) -> UpscaleResult:
    """Super-resolve the raster ``src`` by 4x into the GeoTIFF ``dst``.

    ``src``: a path, URL or GDAL ``/vsi`` path, or an open dataset; ``dst``: a ``.tif``/``.tiff`` path (written
    atomically, see :mod:`rsisr.upscale.output`: any write error, a full disk included, is an
    :class:`~rsisr.errors.OutputError`, and nothing is left behind on any error or interrupt),
    or an open writable rasterio dataset of the output's size, band count and dtype (written in
    place: its georeferencing and creation options are the caller's; ``cog`` needs a path).
    ``model``: a model file, None for the bundled default, or a model object
    (:class:`~rsisr.upscale.engine.SRModel`). The other keywords are ``rsisr upscale``'s options:
    ``tile``/``overlap`` (LR pixels), ``batch_size`` (None: 1 on a CPU, 4 on a GPU), ``steps``,
    ``seed``, ``ensemble`` (the mean of that many samples, :mod:`rsisr.upscale.ensemble`),
    ``device``, ``precision`` (auto: bf16 where the device runs it natively, else fp32), ``bands``
    ("4,3,2") and ``other_bands`` (drop | bicubic; :mod:`rsisr.upscale.bands`), ``bounds`` (xmin,
    ymin, xmax, ymax) in ``bounds_crs`` (default the raster's CRS), ``aoi`` (a vector file),
    ``scale`` (auto | none | "MIN,MAX" | per-band ranges | an ``RSISR_SCALING`` tag; a model's
    stored scaling replaces ``auto``), ``co`` (["KEY=VALUE", ...] or a mapping of GDAL creation
    options), ``cog``, ``uncertainty`` (a path: the samples' standard deviation, written with the
    output, :mod:`rsisr.upscale.uncertainty`), ``overwrite``, ``progress`` (bool or
    callable(done, total)) and ``compile`` (torch.compile the model; off by default: its CPU
    warm-up took longer than a 1024 x 1024 scene, README "Speed").
    """
    from rsisr.gdal_env import gdal_env, remote_config
    from rsisr.upscale.ensemble import check_ensemble
    from rsisr.upscale.output import check_output
    from rsisr.upscale.plan import load_model, parse_options
    from rsisr.upscale.source import open_source
    from rsisr.upscale.uncertainty import check_uncertainty

    t0 = time.perf_counter()
    spec, bands, other_bands = parse_options(scale, bands, bounds, bounds_crs, aoi, other_bands)
    ensemble = check_ensemble(ensemble)
    dataset = dst if hasattr(dst, "write") and hasattr(dst, "mode") else None
    with gdal_env(**remote_config(src)):
        src, owned = open_source(src)
        try:
            if dataset is None:
                dst = check_output(dst, src.name, overwrite)
            target = Path(dataset.name) if dataset is not None else dst
            spread_path = check_uncertainty(uncertainty, ensemble, target, src.name, overwrite)
            net, sha, model_name = load_model(model)
            engine = make_engine(net, ensemble=ensemble, tile=tile, overlap=overlap, batch_size=batch_size,
                                 steps=steps, seed=seed, device=device, precision=precision, compile=compile)
            plan, spread, source = _plans(src, net, engine, (model_name, sha), spread_path, target, spec=spec,
                                          bands=bands, bounds=bounds, bounds_crs=bounds_crs, aoi=aoi, co=co, cog=cog,
                                          other_bands=other_bands, dst_path=None if dataset is not None else dst)
            _write(dataset, dst, plan, spread, cog, overwrite, _filler(engine, plan, source, progress, spread))
        finally:
            if owned:
                src.close()
    seconds = time.perf_counter() - t0
    width, height, count = plan.profile["width"], plan.profile["height"], plan.profile["count"]
    log.info("wrote %s (%d x %d, %d bands) from %d tiles in %.1f s", target, width, height, count, engine.tiles_run,
             seconds)
    return UpscaleResult(target, width, height, count, engine.tiles_run, seconds, plan.scaling.to_tag(), spread_path)


__all__ = [
    "upscale_file", "upscale_array", "TiledUpscaler", "EnsembleUpscaler", "make_engine", "UpscaleResult", "fill_invalid", "model_multiple", "SRModel",
    "ArraySource", "ArraySink", "DEFAULT_TILE", "DEFAULT_OVERLAP", "DEFAULT_BATCH_SIZE", "FILL_GROW",
    "parse_bands", "select_bands",
]
