"""A split upscale, as the client sees it: the :class:`PartJob` every part task gets, where the
parts live, which of them an interrupted run left that can be kept, the assembly of the parts
into the output, and their removal.

Parts are GeoTIFFs in a hidden folder beside the target (``.NAME.rsisr-parts/part-NNNNN.tif``),
each written atomically by its worker (:mod:`rsisr.atomic`), so a part file that exists is
complete. Each records in its ``RSISR_PART`` tag the job's key (a hash of everything its pixels
depend on: the input file's identity, the plan, the model, the engine settings and the part
grid) and its window. A rerun keeps exactly the parts whose tag matches and recomputes the rest.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from rsisr.config import SCALE
from rsisr.distributed.parts import Part

log = logging.getLogger(__name__)

#: Folder of a job's parts, beside its target.
FOLDER_SUFFIX = ".rsisr-parts"
#: Tag of a part file: the job's key and the part's window.
PART_TAG = "RSISR_PART"
#: File in a job's folder while the job runs; a part task stops when it is gone (cancelled).
TOKEN = "job"
#: Longest wait for the tasks of a cancelled job to notice (they check the token at every tile).
DISCARD_WAIT = 60.0
#: Largest block of the output assembled at once (HR columns), bounding the client's memory.
ASSEMBLY_WIDTH = 8192


@dataclass(frozen=True)
class PartJob:
    """What every part task of one split upscale needs (sent to the workers).

    ``plan``/``spread``: the output's UpscalePlan and the uncertainty raster's SpreadPlan (None:
    none); ``model``: the model file (None: the bundled default) when no model object travels
    with the tasks; ``device``: the option as given (each worker resolves it, one GPU per
    worker); ``precision``: as a worker resolved it; ``engine``: the options of
    :func:`rsisr.upscale.ensemble.make_engine`; ``block_width``: the width of the blocks a
    single-process run writes, which sets the engine's panels (:func:`panel_columns`).
    """

    src: str
    folder: str
    plan: object
    spread: object
    key: str
    parts: tuple[Part, ...]
    model: str | None
    device: str
    precision: str
    engine: dict
    block_width: int
    threads: int | None = None
    quiet: bool = False

    def paths(self, part: Part) -> list[Path]:
        """The part's files: the uncertainty raster's (with ``--uncertainty``), then the output's."""
        stem = Path(self.folder) / f"part-{part.index:05d}"
        return ([Path(f"{stem}.std.tif")] if self.spread is not None else []) + [Path(f"{stem}.tif")]

    def tag(self, part: Part) -> str:
        return json.dumps({"key": self.key, "window": list(part.lr_window)})


def parts_folder(dst: str | os.PathLike) -> Path:
    dst = Path(os.path.abspath(dst))
    return dst.parent / f".{dst.name}{FOLDER_SUFFIX}"


def output_block_width(profile: dict) -> int:
    """Width of the blocks GDAL gives a single-process run's output (the first file it writes:
    a tiled GeoTIFF even for ``--cog``): BLOCKXSIZE when tiled (GDAL's default 256), else the
    full width (strips)."""
    tiled = str(profile.get("TILED", profile.get("tiled", "NO"))).upper() in ("YES", "TRUE", "ON", "1")
    if not tiled:
        return int(profile["width"])
    return int(profile.get("BLOCKXSIZE", 256))


def input_identity(path: str | os.PathLike) -> dict:
    """The input as far as a rerun can tell it apart: a local file's resolved path, size and
    mtime; a URL or GDAL path as written (a changed remote file is not noticed: rerun with
    --overwrite after deleting the parts folder, or let the parts finish)."""
    p = Path(path)
    if not p.is_file():
        return {"path": str(path)}
    st = p.stat()
    return {"path": str(p.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def job_key(src, plan, run: dict, grid: dict) -> str:
    """A hash of what the parts' pixels depend on (``run``: model identity and engine settings;
    ``grid``: the part grid)."""
    profile = plan.profile
    described = {
        "input": input_identity(src), "indexes": list(plan.indexes), "alpha": plan.alpha,
        "window": list(plan.lr_window), "mask_mode": plan.mask_mode, "scaling": plan.scaling.to_tag(),
        "dtype": np.dtype(profile["dtype"]).name, "count": profile["count"], "nodata": repr(profile["nodata"]),
        "run": run, "grid": grid,
    }
    return hashlib.sha256(json.dumps(described, sort_keys=True, default=str).encode()).hexdigest()[:32]


def open_folder(job: PartJob) -> list[Part]:
    """Create the job's folder, or take over the one an interrupted run left: temporaries of
    dead writers and parts of another plan go; returns the parts that are kept (complete, and
    made for this very job)."""
    from rsisr.atomic import remove_stale

    folder = Path(job.folder)
    folder.mkdir(exist_ok=True)
    remove_stale(folder)
    (folder / TOKEN).write_text(job.key + "\n")
    kept = [p for p in job.parts if all(_matches(job, p, path) for path in job.paths(p))]
    keep = {path.name for p in kept for path in job.paths(p)}
    for entry in os.scandir(folder):
        if entry.name.startswith("part-") and entry.name.endswith(".tif") and entry.name not in keep:
            os.unlink(entry.path)  # another plan's, unreadable, or one file of a part missing the other
    if kept:
        log.info("keeping %d of %d parts that an interrupted run left in %s", len(kept), len(job.parts), folder)
    return kept


def _matches(job: PartJob, part: Part, path: Path) -> bool:
    import rasterio
    from rasterio._err import CPLE_BaseError
    from rasterio.errors import RasterioError

    if not path.is_file():
        return False
    try:
        with rasterio.open(path) as ds:
            return ds.tags().get(PART_TAG) == job.tag(part) and (ds.width, ds.height) == (
                SCALE * part.width, SCALE * part.height)
    except (RasterioError, CPLE_BaseError, OSError):
        return False


def running(folder: str | os.PathLike) -> bool:
    """Whether the job of ``folder`` still runs (its token is there); part tasks check it."""
    return os.path.exists(os.path.join(folder, TOKEN))


def discard(folder: str | os.PathLike) -> None:
    """Remove a job's folder and everything in it. The token goes first, so that tasks still
    running on a cluster that is not ours stop at their next tile (removing their temporary
    files); until they have, the folder is emptied again."""
    try:
        os.unlink(os.path.join(folder, TOKEN))
    except FileNotFoundError:
        pass
    deadline = time.monotonic() + DISCARD_WAIT
    while os.path.lexists(folder):
        try:
            shutil.rmtree(folder)
        except OSError:  # a file a task removed or added meanwhile (FileNotFoundError, ENOTEMPTY)
            if time.monotonic() > deadline:
                log.warning("could not remove %s; delete it by hand", folder)
                return
            time.sleep(0.1)


def assemble(job: PartJob, dst: Path, overwrite: bool) -> float:
    """Write the output ``dst`` (and the uncertainty raster) from the finished parts, as a
    single-process run writes them (profiles, creation options, COG, metadata, tags, masks):
    atomically, both files or neither. Returns seconds."""
    from rsisr.upscale.output import Target, write_geotiffs
    from rsisr.upscale.plan import write_metadata
    from rsisr.upscale.uncertainty import write_spread_metadata

    t0 = time.perf_counter()
    plan, spread = job.plan, job.spread
    targets = [Target(dst, plan.profile, plan.cog_options, "output")]
    masked = [plan.mask_mode == "mask"]  # how each file's mask is written: as the sinks write it
    if spread is not None:
        targets.insert(0, Target(spread.path, spread.profile, spread.cog_options, "uncertainty raster"))
        masked.insert(0, plan.mask_mode in ("mask", "alpha"))

    def fill(opened) -> None:
        write_metadata(opened[-1][0], plan)
        if spread is not None:
            write_spread_metadata(opened[0][0], spread)
        for layer, ((out, writer), mask) in enumerate(zip(opened, masked)):
            _copy_parts(job, layer, out, writer, mask)

    write_geotiffs(targets, overwrite, fill)
    return time.perf_counter() - t0


def _copy_parts(job: PartJob, layer: int, out, writer, mask: bool) -> None:
    """Copy file ``layer`` of every part into the open ``out``: whole output blocks with all
    bands (and the mask), block row by block row."""
    from rasterio.windows import Window

    from rsisr.tiling import chunks

    r, c = job.plan.lr_window[:2]
    bh, bw = out.block_shapes[0]
    with _PartReader(job, layer) as reader:
        for a in range(0, out.height, bh):
            b = min(a + bh, out.height)
            for ca, cb in chunks(out.width, bw, ASSEMBLY_WIDTH):
                values = np.empty((out.count, b - a, cb - ca), np.dtype(out.dtypes[0]))
                valid = np.empty((b - a, cb - ca), np.uint8) if mask else None
                for part in job.parts:
                    y, x = SCALE * (part.row_off - r), SCALE * (part.col_off - c)
                    ya, yb = max(a, y), min(b, y + SCALE * part.height)
                    xa, xb = max(ca, x), min(cb, x + SCALE * part.width)
                    if ya < yb and xa < xb:
                        window = Window(xa - x, ya - y, xb - xa, yb - ya)
                        cut = (slice(ya - a, yb - a), slice(xa - ca, xb - ca))
                        reader.read(part, window, values[(slice(None), *cut)], None if valid is None else valid[cut])
                writer.write(values, window=Window(ca, a, cb - ca, b - a))
                if valid is not None:
                    writer.write_mask(valid, window=Window(ca, a, cb - ca, b - a))
            reader.close_above(r + b // SCALE)


class _PartReader:
    """Opens the parts' file ``layer`` as the assembly reaches them, closes those it has passed."""

    def __init__(self, job: PartJob, layer: int) -> None:
        self.job = job
        self.layer = layer
        self.open: dict[int, object] = {}

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        for ds in self.open.values():
            ds.close()

    def read(self, part: Part, window, values: np.ndarray, valid: np.ndarray | None) -> None:
        import rasterio

        from rsisr.rasterio_io import describe_window, reading

        path = self.job.paths(part)[self.layer]
        with reading(path, f"the part ({describe_window(window)})"):
            ds = self.open.get(part.index)
            if ds is None:
                ds = self.open[part.index] = rasterio.open(path)
            values[...] = ds.read(window=window)
            if valid is not None:
                valid[...] = ds.dataset_mask(window=window)

    def close_above(self, row: int) -> None:
        """Close the parts that end at or above LR row ``row`` (the assembly is past them)."""
        for index in [i for i in self.open if self.job.parts[i].row_off + self.job.parts[i].height <= row]:
            self.open.pop(index).close()
