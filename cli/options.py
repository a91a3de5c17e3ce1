"""Options shared by several commands (rasterio's ``rio/options.py`` style)."""

from __future__ import annotations

import logging
import warnings

import click

device_option = click.option(
    "--device", default="auto", show_default=True, metavar="auto|cpu|cuda|cuda:N",
    help="Where to run the model: CUDA when present with auto.",
)
precision_option = click.option(
    "--precision", type=click.Choice(["fp32", "bf16", "fp16"]), default="fp32", show_default=True,
    help="Numeric precision of the model (autocast).",
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


def upscale_options(f):
    """Every option of ``rsisr upscale`` (model, tiling, device, bands, area, radiometry, output).

    Their parameter names are :func:`rsisr.upscale.upscale_file`'s keywords, except ``--model``
    whose value arrives as ``model_path``; commands that upscale pass them through unchanged.
    The defaults shown come from :mod:`rsisr.upscale` (kept in sync by ``tests/test_upscale_cli.py``).
    """
    options = [
        model_option,
        click.option("--tile", type=click.IntRange(min=1), default=128, show_default=True,
                     help="Tile side in input pixels (aligned to the model's multiple)."),
        click.option("--overlap", type=click.IntRange(min=0), default=16, show_default=True,
                     help="Overlap of neighbouring tiles in input pixels; --tile must exceed twice it."),
        click.option("--batch-size", type=click.IntRange(min=1), default=4, show_default=True,
                     help="Tiles per model call (halved automatically when the GPU runs out of memory)."),
        steps_option,
        seed_option,
        device_option,
        precision_option,
        click.option("--bands", default=None, metavar="R,G,B",
                     help="1-based bands to use as red, green, blue (or one band). Default: 1,2,3."),
        click.option("--bounds", nargs=4, type=float, default=None, metavar="XMIN YMIN XMAX YMAX",
                     help="Only upscale this area (in --bounds-crs)."),
        click.option("--bounds-crs", default=None, metavar="CRS",
                     help="CRS of --bounds, e.g. EPSG:4326. Default: the raster's CRS."),
        click.option("--aoi", type=click.Path(dir_okay=False), default=None,
                     help="Only upscale the bounding box of the polygons in this vector file (GeoJSON, GPKG, ...)."),
        click.option("--scale", default="auto", show_default=True, metavar="auto|none|MIN,MAX",
                     help="Value scaling of non-uint8 rasters: per-band percentiles, the dtype's range, or MIN,MAX."),
        click.option("--co", "co", multiple=True, metavar="KEY=VALUE",
                     help="GDAL creation option (repeatable), e.g. --co COMPRESS=ZSTD."),
        click.option("--cog", is_flag=True, help="Write a Cloud Optimized GeoTIFF with overviews."),
        overwrite_option,
    ]
    for option in reversed(options):
        f = option(f)
    return f



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


def configure_logging(verbose: int = 0, quiet: bool = False) -> None:
    level = logging.ERROR if quiet else (logging.WARNING, logging.INFO, logging.DEBUG)[min(verbose, 2)]
    logging.basicConfig(format="%(levelname)s: %(message)s", level=level)
    logging.getLogger("rsisr").setLevel(level)
    logging.captureWarnings(True)
    warnings.formatwarning = _formatwarning
