"""The client's side of a split upscale before any part runs: the checks and the plan of a
single-process run (:func:`draft`), then the part grid and the :class:`PartJob` once the
cluster is known (:func:`finish`)."""

from __future__ import annotations

import dataclasses
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from rsisr.defaults import DEFAULT_BATCH_SIZE, DEFAULT_OVERLAP, DEFAULT_TILE
from rsisr.distributed.job import PartJob, job_key, output_block_width, parts_folder
from rsisr.distributed.parts import choose_rows, panel_columns, rows_for_size, split
from rsisr.errors import ConfigError, OutputError


@dataclass(frozen=True)
class ModelInfo:
    """The model as the client knows it: a file for the workers to load (``path``; None with
    ``obj`` or for the default), or an object to send them; sha256 and name (the output's tags),
    the LR multiple, and ``identity``, what a rerun compares (None: parts are never kept)."""

    path: str | None
    obj: object
    sha: str | None
    name: str
    multiple: int
    identity: str | None


def model_info(model) -> ModelInfo:
    """Identify ``model`` (a file, None for the default, or a model object) without loading a
    file's weights."""
    from rsisr.checkpoint import file_sha256, read_metadata
    from rsisr.config import ModelConfig
    from rsisr.upscale.engine import model_multiple
    from rsisr.upscale.plan import load_model

    if model is None or isinstance(model, (str, os.PathLike)):
        from rsisr.api import require_default_model

        path = Path(model) if model is not None else require_default_model()
        multiple = ModelConfig.from_json(read_metadata(path)["config"]).lr_multiple  # checks the file
        sha = file_sha256(path)
        return ModelInfo(None if model is None else str(path), None, sha, path.name, multiple, sha)
    obj, sha, name = load_model(model)
    return ModelInfo(None, obj, sha, name, model_multiple(obj), sha or _state_hash(obj))


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
    """Everything resolved before a cluster is needed."""

    src: str
    dst: Path
    plan: object
    model: ModelInfo
    shape: tuple[int, int]
    engine: dict  # tile, overlap (aligned), batch_size, steps, seed, device, precision (as given)


def draft(src, dst, model=None, *, tile: int = DEFAULT_TILE, overlap: int = DEFAULT_OVERLAP,
          batch_size: int = DEFAULT_BATCH_SIZE, steps: int = 1, seed: int = 0, device="auto",
          precision: str = "auto", bands=None, bounds=None, bounds_crs=None, aoi=None, scale="auto", co=None,
          cog: bool = False, overwrite: bool = False) -> Draft:
    """The checks and the plan that :func:`rsisr.upscale.upscale_file` makes, on the client; the
    precision tag is filled in once a worker has resolved it."""
    from rsisr.device import resolve_precision
    from rsisr.gdal_env import gdal_env
    from rsisr.tiling import effective_tiling
    from rsisr.upscale.output import check_output
    from rsisr.upscale.plan import make_plan, parse_options
    from rsisr.upscale.source import open_source

    spec, bands = parse_options(scale, bands, bounds, bounds_crs, aoi)
    if hasattr(dst, "write") and hasattr(dst, "mode"):
        raise OutputError("a split upscale (--workers, --scheduler) writes to a path, not an open dataset")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"--batch-size must be a positive integer, got {batch_size!r}")
    if isinstance(steps, bool) or not isinstance(steps, int) or not 1 <= steps <= 4:
        raise ConfigError(f"--steps must be 1, 2, 3 or 4, got {steps!r}")
    if precision != "auto":
        resolve_precision(precision, None)  # checks the name
    with gdal_env():
        src, owned = open_source(src)
        try:
            dst = check_output(dst, src.name, overwrite)
            info = model_info(model)
            tile, overlap = effective_tiling(tile, overlap, info.multiple)
            run = dict(model_name=info.name, sha=info.sha, steps=steps, seed=seed, tile=tile, overlap=overlap,
                       precision=precision)
            plan = make_plan(src, spec=spec, bands=bands, bounds=bounds, bounds_crs=bounds_crs, aoi=aoi, co=co,
                             cog=cog, dst_path=dst, run=run)
            shape = (src.height, src.width)
            name = src.name
        finally:
            if owned:
                src.close()
    engine = dict(tile=tile, overlap=overlap, batch_size=batch_size, steps=int(steps), seed=int(seed),
                  device=str(device), precision=precision)
    return Draft(str(name), dst, plan, info, shape, engine)


def finish(d: Draft, *, workers: int, device_type: str, precision: str, part_size: int | None,
           threads: int | None, quiet: bool) -> PartJob:
    """The :class:`PartJob` of ``d`` for ``workers`` workers that resolve the device to
    ``device_type`` and the precision to ``precision``."""
    from rsisr import __version__
    from rsisr.upscale.engine import PANEL_WIDTH

    e = d.engine
    plan = dataclasses.replace(d.plan, tags={**d.plan.tags, "RSISR_PRECISION": precision})
    block_width = output_block_width({**plan.profile, "width": plan.profile["width"]})
    panel = panel_columns(block_width, PANEL_WIDTH)
    window = plan.lr_window
    if part_size is not None:
        rows = rows_for_size(part_size, e["tile"], e["overlap"])
    else:
        rows = choose_rows(d.shape, window, e["tile"], e["overlap"], panel, workers)
    parts = tuple(split(d.shape, window, e["tile"], e["overlap"], panel, rows))
    run = {**e, "precision": precision, "device_type": device_type, "model": d.model.identity or os.urandom(8).hex(),
           "threads": threads, "version": __version__}
    grid = {"rows_per_part": rows, "panel": panel, "block_width": block_width}
    key = job_key(d.src, plan, run, grid)
    return PartJob(src=d.src, folder=str(parts_folder(d.dst)), plan=plan, key=key, parts=parts, model=d.model.path,
                   device=e["device"], precision=precision, tile=e["tile"], overlap=e["overlap"],
                   batch_size=e["batch_size"], steps=e["steps"], seed=e["seed"], block_width=block_width,
                   threads=threads, quiet=quiet)
