"""What a Dask worker runs: :func:`run_part` computes one part into its part file, and
:func:`probe` tells the client what device and precision the workers resolve.

A worker keeps its model between parts: a model file is loaded once per process
(:func:`rsisr.batch.run._cached_model`, shared with ``rsisr batch``; with several GPUs, worker N
of a LocalCluster takes GPU N), and a model object arrives once per worker from the client's
scatter. A part reads its window plus the tiles around it that its blending needs (the engine
does that, :class:`~rsisr.upscale.engine.TiledUpscaler`), and its memory is the engine's: tiles,
one panel's accumulator and one block row, whatever the part's or the scene's size.
"""

from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass

from rsisr.config import SCALE
from rsisr.distributed.job import PART_TAG, PartJob, running
from rsisr.distributed.parts import Part


class PartCancelled(RuntimeError):
    """The job of a part was cancelled (its folder's token is gone): the part stops."""


@dataclass(frozen=True)
class PartStats:
    """One computed part: model runs, seconds in all and in the model's forward passes (the
    rest is reading, filling, blending, converting and writing the part), where it ran, and the
    CPU seconds of its thread (less sensitive than wall time to a busy machine)."""

    index: int
    tiles: int
    seconds: float
    model_seconds: float
    worker: str
    cpu_seconds: float = 0.0  # CPU time of the task's thread (all of it with one torch thread)


def probe(device: str, precision: str) -> tuple[str, str]:
    """(device type, precision) as a worker resolves ``device`` and ``precision`` (``auto``)."""
    from rsisr.batch.run import _worker_device
    from rsisr.device import resolve_device, resolve_precision

    dev = resolve_device(_worker_device(device))
    return dev.type, resolve_precision(precision, dev)


def _timed(engine) -> dict:
    """Add up the seconds of ``engine``'s model calls into the returned dict (``seconds``)."""
    import torch

    timing = {"seconds": 0.0}
    call = engine._call

    def timed_call(*args, **kwargs):
        t0 = time.perf_counter()
        y = call(*args, **kwargs)
        if engine.device.type == "cuda":
            torch.cuda.synchronize(engine.device)
        timing["seconds"] += time.perf_counter() - t0
        return y

    engine._call = timed_call
    return timing


def _model(job: PartJob, model):
    """(model, device) on this worker."""
    from rsisr.batch.run import _cached_model, _worker_device
    from rsisr.device import resolve_device

    if model is not None:
        return model, resolve_device(_worker_device(job.device))
    return _cached_model(job.model, job.device)


def part_profiles(job: PartJob, part: Part) -> list[dict]:
    """The part's files (:meth:`PartJob.paths`): the output's (and the uncertainty raster's) grid,
    dtype, bands and nodata over the part's window, tiled and losslessly compressed whatever the
    final files' creation options (JPEG, say) will be."""
    from affine import Affine

    from rsisr.gdal_env import gtiff_defaults
    from rsisr.geo import compose

    r, c = job.plan.lr_window[:2]
    shift = Affine.translation(SCALE * (part.col_off - c), SCALE * (part.row_off - r))
    profiles = []
    for p in ([job.spread.profile] if job.spread is not None else []) + [job.plan.profile]:
        profiles.append(dict(driver="GTiff", width=SCALE * part.width, height=SCALE * part.height, count=p["count"],
                             dtype=p["dtype"], crs=p["crs"], transform=compose(p["transform"], shift),
                             nodata=p["nodata"], **{**gtiff_defaults(p["dtype"]), "ZLEVEL": "1"}))
    return profiles


def run_part(job: PartJob, index: int, model=None) -> PartStats:
    """Compute part ``index`` of ``job`` into its part files (atomic, together). ``model``: the
    client's model object, or None to use ``job.model`` (a file, or the default)."""
    from rsisr import malloc
    from rsisr.batch.run import _quiet
    from rsisr.gdal_env import gdal_env, remote_config
    from rsisr.rasterio_io import open_raster, undecodable_gdal_messages
    from rsisr.upscale.ensemble import make_engine
    from rsisr.upscale.output import Target, write_geotiffs
    from rsisr.upscale.source import RasterSource

    t0, c0 = time.perf_counter(), time.thread_time()
    malloc.keep_freed_memory_in_dask_worker()
    part, plan = job.parts[index], job.plan
    with _quiet(job.quiet), undecodable_gdal_messages(), gdal_env(**remote_config(job.src)):
        if job.threads:
            import torch

            torch.set_num_threads(job.threads)
        net, device = _model(job, model)
        engine = make_engine(net, **job.engine, device=device, precision=job.precision)
        timing = _timed(engine)
        src = open_raster(job.src, check=False)
        try:
            source = RasterSource(src, plan.indexes, plan.scaling, plan.mask_mode, plan.alpha, engine.bands,
                                  plan.choice)
            targets = [Target(path, profile, None, "part") for path, profile in
                       zip(job.paths(part), part_profiles(job, part))]
            write_geotiffs(targets, True, lambda opened: _fill(job, part, engine, source, opened))
        finally:
            src.close()
    return PartStats(index, engine.tiles_run, time.perf_counter() - t0, timing["seconds"],
                     f"{socket.gethostname()}:{os.getpid()}", time.thread_time() - c0)


def _fill(job: PartJob, part: Part, engine, source, opened) -> None:
    """The engine's blocks of ``part`` into the open part files (``opened``: [(out, writer)])."""
    from rasterio.windows import Window

    from rsisr.upscale.sink import RasterSink
    from rsisr.upscale.uncertainty import SpreadWriter

    plan = job.plan
    for out, _ in opened:
        out.update_tags(**{PART_TAG: job.tag(part)})
    spread = None
    if job.spread is not None:
        spread = SpreadWriter(opened[0][1], plan.scaling, plan.mask_mode, plan.choice)
    sink = RasterSink(opened[-1][1], source, Window(part.col_off, part.row_off, part.width, part.height),
                      len(plan.indexes), spread)
    # the panels of a single-process run, whose output blocks may be other than the part's
    sink.block_shape = (sink.block_shape[0], job.block_width)

    def check(_: int = 0) -> None:
        if not running(job.folder):
            raise PartCancelled(f"part {part.index} of {job.src}: the job was cancelled")

    check()
    engine.run(source, sink, part.lr_window, on_tile=check)
    check()
