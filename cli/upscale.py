"""``rsisr upscale``."""

from __future__ import annotations

import click

from rsisr_cli.options import TileProgress, cluster_options, configure_logging, upscale_options, verbosity_options


@click.command()
@click.argument("input_path", metavar="INPUT", type=click.Path(dir_okay=False))
@click.option("-o", "--output", "output_path", required=True, type=click.Path(dir_okay=False),
              help="Output GeoTIFF (written atomically).")
@click.option("--uncertainty", type=click.Path(dir_okay=False), default=None, metavar="FILE",
              help="Also write the samples' per-pixel standard deviation here (float32 GeoTIFF in the output's units, "
                   "same grid and mask); needs --ensemble 2 or more.")
@upscale_options
@cluster_options("Split the scene over this many local Dask worker processes (default: one process, no Dask).")
@verbosity_options
def upscale(input_path: str, output_path: str, model_path: str | None, workers: int | None,
            threads_per_worker: int | None, scheduler: str | None, part_size: int | None, verbose: int, quiet: bool,
            **options) -> None:
    """Super-resolve the raster INPUT by 4x into the GeoTIFF OUTPUT.

    INPUT may also be a URL (https://, s3://, gs://) or a GDAL /vsi... path: it is read by byte
    ranges, only the blocks the output needs.

    The raster is read window by window and run in overlapping tiles that are blended without
    seams; the output keeps the CRS, the extent (or the --bounds / --aoi window), nodata and
    masks, band descriptions and colour interpretation. Memory does not grow with the scene.
    With --workers or --scheduler the scene is split into parts over a Dask cluster, and the
    output is the same, bit for bit, at the same precision and threads.
    """
    configure_logging(verbose, quiet, hold=True)
    split = workers is not None or scheduler is not None
    if not split and (threads_per_worker is not None or part_size is not None):
        given = "--threads-per-worker" if threads_per_worker is not None else "--part-size"
        raise click.UsageError(f"{given} needs --workers N or --scheduler ADDRESS")
    progress = TileProgress(show=not quiet, unit="part" if split else "tile")
    try:
        if split:
            from rsisr.distributed import upscale_distributed

            upscale_distributed(input_path, output_path, model=model_path, workers=workers,
                                threads_per_worker=threads_per_worker, scheduler=scheduler, part_size=part_size,
                                progress=progress, **options)
        else:
            from rsisr.upscale import upscale_file

            upscale_file(input_path, output_path, model=model_path, progress=progress, **options)
    finally:
        progress.close()
