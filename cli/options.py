"""Options shared by several commands (rasterio's ``rio/options.py`` style)."""

from __future__ import annotations

import logging
import sys
import warnings

import click

from rsisr.defaults import DEFAULT_BATCH_SIZE, DEFAULT_OVERLAP, DEFAULT_SCALE, DEFAULT_TILE, PRECISIONS

device_option = click.option(
    "--device", default="auto", show_default=True, metavar="auto|cpu|cuda|cuda:N",
    help="Where to run the model: CUDA when present with auto.",
)
precision_option = click.option(
    "--precision", type=click.Choice(("auto", *PRECISIONS)), default="auto", show_default=True,
    help="Numeric precision of the model (autocast); auto: bf16 where the device runs it natively "
         "(checked at run time), else fp32.",
)
model_option = click.option(
    "--model", "model_path", type=click.Path(dir_okay=False), default=None,
    help="Model file (.safetensors). Default: the bundled default model.",
)
seed_option = click.option("--seed", type=int, default=0, show_default=True, help="Random seed of the latent noise.")
steps_option = click.option(
    "--steps", type=click.IntRange(1, 4), default=1, show_default=True, help="Consistency sampling steps (1-4)."
)
overwrite_option = click.option("--overwrite", is_flag=True, help="Replace OUTPUT if it exists.")
ensemble_option = click.option(
    "--ensemble", type=click.IntRange(min=1), default=1, show_default=True, metavar="N",
    help="Run N samples per tile (noise fields derived from --seed) and keep their mean: closer to the truth on "
         "average, smoother, N times the model time. 1: a single sample.",
)


def upscale_options(f):
    """Every option of ``rsisr upscale`` (model, tiling, device, bands, area, radiometry, output).

    Their parameter names are :func:`rsisr.upscale.upscale_file`'s keywords, except ``--model``
    whose value arrives as ``model_path``; commands that upscale pass them through unchanged.
    The defaults shown come from :mod:`rsisr.defaults`, which the library uses too.
    """
    options = [
        model_option,
        click.option("--tile", type=click.IntRange(min=1), default=DEFAULT_TILE, show_default=True,
                     help="Tile side in input pixels (aligned to the model's multiple)."),
        click.option("--overlap", type=click.IntRange(min=0), default=DEFAULT_OVERLAP, show_default=True,
                     help="Overlap of neighbouring tiles in input pixels; --tile must exceed twice it."),
        click.option("--batch-size", type=click.IntRange(min=1), default=DEFAULT_BATCH_SIZE,
                     help="Tiles per model call (default: 1 on a CPU, where it is fastest; 4 on a GPU); with "
                          "--ensemble N, samples (each tile's N in one call). Halved automatically when the GPU "
                          "runs out of memory."),
        steps_option,
        seed_option,
        ensemble_option,
        device_option,
        precision_option,
        click.option("--compile", "compile", is_flag=True,
                     help="torch.compile the model. Off by default: on a CPU its warm-up (minutes) took longer "
                          "than a 1024x1024 scene (README, Speed); it may pay back on long GPU runs."),
        click.option("--bands", default=None, metavar="R,G,B",
                     help="1-based input bands the model reads, in its order: red, green, blue (or one band) "
                          "for an RGB model, N bands for an N-band model. Default: the first N."),
        click.option("--other-bands", type=click.Choice(("drop", "bicubic")), default=None,
                     help="Input bands the model does not read: drop them (default; a warning names them) or "
                          "write every input band, in the input's order, those bicubic x4."),
        click.option("--bounds", nargs=4, type=float, default=None, metavar="XMIN YMIN XMAX YMAX",
                     help="Only upscale this area (in --bounds-crs)."),
        click.option("--bounds-crs", default=None, metavar="CRS",
                     help="CRS of --bounds, e.g. EPSG:4326. Default: the raster's CRS."),
        click.option("--aoi", type=click.Path(dir_okay=False), default=None,
                     help="Only upscale the bounding box of the polygons in this vector file (GeoJSON, GPKG, ...)."),
        click.option("--scale", default=DEFAULT_SCALE, show_default=True, metavar="auto|none|MIN,MAX",
                     help="Value scaling of non-uint8 rasters: per-band percentiles of the whole scene, the dtype's "
                          "range, MIN,MAX, MIN,MAX per band, or an output's RSISR_SCALING tag (JSON)."),
        click.option("--co", "co", multiple=True, metavar="KEY=VALUE",
                     help="GDAL creation option (repeatable), e.g. --co COMPRESS=ZSTD."),
        click.option("--cog", is_flag=True, help="Write a Cloud Optimized GeoTIFF with overviews."),
        overwrite_option,
    ]
    for option in reversed(options):
        f = option(f)
    return f


def cluster_options(workers_help: str):
    """``--workers``, ``--threads-per-worker``, ``--scheduler`` and ``--part-size`` (Dask), with
    the command's own words for ``--workers``."""

    def decorate(f):
        options = [
            click.option("--workers", type=click.IntRange(min=1), default=None, help=workers_help),
            click.option("--threads-per-worker", type=click.IntRange(min=1), default=None,
                         help="Torch threads per worker (default: cores / workers for local workers, the workers' own "
                              "setting with --scheduler)."),
            click.option("--scheduler", default=None, metavar="ADDRESS",
                         help="Run on an existing Dask cluster, e.g. tcp://host:8786."),
            click.option("--part-size", type=click.IntRange(min=1), default=None, metavar="ROWS",
                         help="Input rows per part of a split scene, rounded to whole tile rows (default: "
                              "chosen from the scene, the tile and the workers)."),
        ]
        for option in reversed(options):
            f = option(f)
        return f

    return decorate


def verbosity_options(f):
    """``-v``/``-q``: log level of the ``rsisr`` logger (warnings by default)."""
    f = click.option("-q", "--quiet", is_flag=True, help="Only errors; no progress bar.")(f)
    f = click.option("-v", "--verbose", count=True, help="More log output (-vv for debug).")(f)
    return f


_plain_formatwarning = warnings.formatwarning


def _formatwarning(message, category, *args, **kwargs) -> str:
    """rsisr's own warnings as their message alone ("WARNING: ..." through logging), not
    Python's "file:line: Category: message" plus a line of rsisr's source."""
    from rsisr.errors import RsisrWarning

    if issubclass(category, RsisrWarning):
        return str(message)
    return _plain_formatwarning(message, category, *args, **kwargs)


class _Console(logging.StreamHandler):
    """The CLI's log handler: "LEVEL: message" on the current ``sys.stderr``.

    While holding (:func:`configure_logging` with ``hold=True``), records below ERROR wait:
    :func:`release_warnings` prints them once the command is under way (its first tile, or its
    end), :func:`drop_warnings` forgets them when it fails first, so that a failing command
    prints its one error line and nothing else.
    """

    def __init__(self) -> None:
        super().__init__()
        self.setFormatter(logging.Formatter("%(levelname)s: %(message)s"))
        self.held: list[logging.LogRecord] | None = None

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:  # StreamHandler.__init__ sets it; the current sys.stderr is used
        pass

    def emit(self, record: logging.LogRecord) -> None:
        if self.held is not None and record.levelno < logging.ERROR:
            self.held.append(record)
        else:
            super().emit(record)

    def release_held(self) -> None:
        held, self.held = self.held or [], None
        for record in held:
            super().emit(record)

    def drop_held(self) -> None:
        self.held = None


_console = _Console()


def release_warnings() -> None:
    """Print the warnings held back so far and stop holding."""
    _console.release_held()


def drop_warnings() -> None:
    """Forget the warnings held back so far (the command failed) and stop holding."""
    _console.drop_held()


def configure_logging(verbose: int = 0, quiet: bool = False, hold: bool = False) -> None:
    """Log level from ``-v``/``-q`` and the console handler (in a process that has no logging
    set up yet; an application or a test runner that has one keeps it).

    ``hold``: keep warnings back until :func:`release_warnings` (``-v`` never holds). Commands
    that fail during their checks then print only their error line; those that get going print
    the warnings as soon as they do.
    """
    level = logging.ERROR if quiet else (logging.WARNING, logging.INFO, logging.DEBUG)[min(verbose, 2)]
    root = logging.getLogger()
    if _console in root.handlers or not root.handlers:
        if _console not in root.handlers:
            root.addHandler(_console)
        root.setLevel(level)
    _console.held = [] if hold and level >= logging.WARNING else None
    logging.getLogger("rsisr").setLevel(level)
    logging.captureWarnings(True)
    warnings.formatwarning = _formatwarning


class TileProgress:
    """``progress(done, total)`` for :func:`rsisr.upscale.upscale_file`: at the first tile the
    held warnings are printed (the run is under way), then a tqdm bar counts the tiles (silent
    when stderr is not a terminal); ``unit="part"`` for a split upscale. :meth:`close` when the
    run ends."""

    def __init__(self, show: bool = True, unit: str = "tile") -> None:
        self.show = show
        self.unit = unit
        self.bar = None

    def __call__(self, done: int, total: int) -> None:
        if self.bar is None:
            release_warnings()
            if not self.show:
                self.bar = False
                return
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, unit=self.unit, desc="upscale", disable=None, leave=False)
        if self.bar:
            self.bar.update(done - self.bar.n)

    def close(self) -> None:
        if self.bar:
            self.bar.close()
