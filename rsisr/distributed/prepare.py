"""The client's side of a split upscale before any part runs: the checks and the plans of a
single-process run (:func:`draft`, through :func:`rsisr.upscale.upscale_file`'s own steps), then
the part grid and the :class:`PartJob` once the cluster is known (:func:`finish`)."""

from __future__ import annotations

import dataclasses
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from rsisr.defaults import DEFAULT_BATCH_SIZE, DEFAULT_OVERLAP, DEFAULT_TILE
from rsisr.distributed.job import PartJob, job_key, output_block_width, parts_folder
from rsisr.distributed.parts import choose_rows, panel_columns, rows_for_size, split
from rsisr.errors import OutputError


@dataclass(frozen=True)
class ModelInfo:
    """The model as the client knows it: a file for the workers to load (``path``; None with
    ``obj`` or for the default), or an object to send them (``obj``); and ``identity``, what a
    rerun compares before it keeps parts (None: never)."""

    path: str | None
    obj: object
    identity: str | None


def _state_hash(model) -> str | None:
    """sha256 of a module's class and tensors, so that a rerun with the same object keeps parts."""
    state = getattr(model, "state_dict", None)
    if state is None:
        return None
    h = hashlib.sha256(f"{type(model).__module__}.{type(model).__qualname__}".encode())
    for name, tensor in sorted(state().items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


@dataclass(frozen=True)
class Draft:
    """Everything resolved before the cluster is needed: the plans with the precision still to be
    filled in by a worker (``RSISR_PRECISION``), and the engine's options for the workers."""

    src: str
    dst: Path
    plan: object  # rsisr.upscale.plan.UpscalePlan
    spread: object  # rsisr.upscale.uncertainty.SpreadPlan or None
    model: ModelInfo
    shape: tuple[int, int]
    engine: dict  # make_engine's options: ensemble, tile, overlap (aligned), batch_size, steps, seed, compile
    device: str
    precision: str


def draft(src, dst, model=None, *, tile: int = DEFAULT_TILE, overlap: int = DEFAULT_OVERLAP,
          batch_size: int | None = DEFAULT_BATCH_SIZE, steps: int = 1, seed: int = 0, ensemble: int = 1,
          device="auto", precision: str = "auto", bands=None, bounds=None, bounds_crs=None, aoi=None, scale="auto",
          co=None, cog: bool = False, uncertainty=None, overwrite: bool = False, compile: bool = False,
          other_bands: str | None = None) -> Draft:
    """The checks and plans of :func:`rsisr.upscale.upscale_file` (same keywords), on the client.
    The model is loaded here on the CPU for its configuration (bands, multiple, stored scaling);
    a model file is loaded again by each worker."""
    from rsisr.device import resolve_precision
    from rsisr.gdal_env import gdal_env, remote_config
    from rsisr.upscale import _plans
    from rsisr.upscale.ensemble import check_ensemble, make_engine
    from rsisr.upscale.output import check_output
    from rsisr.upscale.plan import load_model, parse_options
    from rsisr.upscale.source import open_source
    from rsisr.upscale.uncertainty import check_uncertainty

    spec, bands, other_bands = parse_options(scale, bands, bounds, bounds_crs, aoi, other_bands)
    ensemble = check_ensemble(ensemble)
    if hasattr(dst, "write") and hasattr(dst, "mode"):
        raise OutputError("a split upscale (--workers, --scheduler) writes to a path, not an open dataset")
    if precision != "auto":
        resolve_precision(precision, None)  # checks the name
    with gdal_env(**remote_config(src)):
        src, owned = open_source(src)
        try:
            dst = check_output(dst, src.name, overwrite)
            spread_path = check_uncertainty(uncertainty, ensemble, dst, src.name, overwrite)
            net, sha, name = load_model(model)
            # the settings' checks and the tags; fp32 on the CPU leaves the model as it is
            engine = make_engine(net, ensemble=ensemble, tile=tile, overlap=overlap, batch_size=batch_size,
                                 steps=steps, seed=seed, device="cpu", precision="fp32")
            plan, spread, _ = _plans(src, net, engine, (name, sha), spread_path, dst, spec=spec, bands=bands,
                                     bounds=bounds, bounds_crs=bounds_crs, aoi=aoi, co=co, cog=cog,
                                     other_bands=other_bands, dst_path=dst)
            shape, src_name = (src.height, src.width), src.name
        finally:
            if owned:
                src.close()
    if model is None or isinstance(model, (str, os.PathLike)):
        info = ModelInfo(None if model is None else str(model), None, sha)
    else:
        info = ModelInfo(None, net, sha or _state_hash(net))
    options = dict(ensemble=ensemble, tile=engine.tile, overlap=engine.overlap, batch_size=batch_size,
                   steps=int(steps), seed=int(seed), compile=bool(compile))
    return Draft(str(src_name), dst, plan, spread, info, shape, options, str(device), precision)


def _with_precision(plan, precision: str):
    return None if plan is None else dataclasses.replace(plan, tags={**plan.tags, "RSISR_PRECISION": precision})


def finish(d: Draft, *, workers: int, device_type: str, precision: str, part_size: int | None,
           threads: int | None, quiet: bool) -> PartJob:
    """The :class:`PartJob` of ``d`` for ``workers`` workers that resolve the device to
    ``device_type`` and the precision to ``precision`` (:func:`rsisr.distributed.worker.probe`)."""
    from rsisr import __version__
    from rsisr.upscale.engine import PANEL_WIDTH

    e = d.engine
    plan, spread = _with_precision(d.plan, precision), _with_precision(d.spread, precision)
    block_width = output_block_width(plan.profile)
    panel = panel_columns(block_width, PANEL_WIDTH)
    window = plan.lr_window
    if part_size is not None:
        rows = rows_for_size(part_size, e["tile"], e["overlap"])
    else:
        rows = choose_rows(d.shape, window, e["tile"], e["overlap"], panel, workers)
    parts = tuple(split(d.shape, window, e["tile"], e["overlap"], panel, rows))
    run = {**e, "precision": precision, "device_type": device_type, "model": d.model.identity or os.urandom(8).hex(),
           "threads": threads, "version": __version__, "uncertainty": spread is not None}
    grid = {"rows_per_part": rows, "panel": panel, "block_width": block_width}
    return PartJob(src=d.src, folder=str(parts_folder(d.dst)), plan=plan, spread=spread,
                   key=job_key(d.src, plan, run, grid), parts=parts, model=d.model.path, device=d.device,
                   precision=precision, engine=e, block_width=block_width, threads=threads, quiet=quiet)
