"""``rsisr upscale``."""

from __future__ import annotations

import click

from rsisr_cli.options import TileProgress, configure_logging, upscale_options, verbosity_options


@click.command()
@click.argument("input_path", metavar="INPUT", type=click.Path(dir_okay=False))
@click.option("-o", "--output", "output_path", required=True, type=click.Path(dir_okay=False),
              help="Output GeoTIFF (written atomically).")
@click.option("--uncertainty", type=click.Path(dir_okay=False), default=None, metavar="FILE",
              help="Also write the samples' per-pixel standard deviation here (float32 GeoTIFF in the output's units, "
                   "same grid and mask); needs --ensemble 2 or more.")
@upscale_options
@verbosity_options
def upscale(input_path: str, output_path: str, model_path: str | None, verbose: int, quiet: bool, **options) -> None:
    """Super-resolve the raster INPUT by 4x into the GeoTIFF OUTPUT.

    INPUT may also be a URL (https://, s3://, gs://) or a GDAL /vsi... path: it is read by byte
    ranges, only the blocks the output needs.

    The raster is read window by window and run in overlapping tiles that are blended without
    seams; the output keeps the CRS, the extent (or the --bounds / --aoi window), nodata and
    masks, band descriptions and colour interpretation. Memory does not grow with the scene.
    """
    from rsisr.upscale import upscale_file

    configure_logging(verbose, quiet, hold=True)
    progress = TileProgress(show=not quiet)
    try:
        upscale_file(input_path, output_path, model=model_path, progress=progress, **options)
    finally:
        progress.close()
