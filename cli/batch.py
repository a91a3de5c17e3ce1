"""``rsisr batch``."""

from __future__ import annotations

import click

from rsisr.batch import DEFAULT_PATTERN
from rsisr_cli.options import cluster_options, configure_logging, upscale_options, verbosity_options


@click.command()
@click.argument("input_dir", type=click.Path(file_okay=False))
@click.option("-o", "--output", "output_dir", required=True, type=click.Path(file_okay=False),
              help="Output folder; outputs mirror the input's relative paths.")
@click.option("--pattern", default=DEFAULT_PATTERN, show_default=True, help="Glob of the scenes to process.")
@click.option("--recursive", is_flag=True, help="Also look in subfolders.")
@cluster_options("Local worker processes (default: one per GPU, else one per two cores).")
@click.option("--report", type=click.Path(dir_okay=False), default=None, help="Write a JSON report here.")
@click.option("--uncertainty", type=click.Path(file_okay=False), default=None, metavar="DIR",
              help="Also write each scene's uncertainty raster (the samples' standard deviation) into this folder, "
                   "under its output's relative path; needs --ensemble 2 or more.")
@upscale_options
@verbosity_options
def batch(input_dir, output_dir, pattern, recursive, workers, threads_per_worker, scheduler, part_size, report,
          uncertainty, verbose, quiet, **options):
    """Super-resolve every scene of INPUT_DIR into OUTPUT_DIR with Dask.

    Scenes whose output is already complete are skipped, so a rerun does no work. A failing
    scene is retried, then reported; the others go on. Exit status 1 if any scene failed. Once
    fewer scenes are left than workers, the rest are split into parts over all workers.
    """
    from rsisr.batch import format_table, upscale_folder

    configure_logging(verbose, quiet)
    model = options.pop("model_path", None)
    result = upscale_folder(input_dir, output_dir, model, pattern=pattern, recursive=recursive, workers=workers,
                            threads_per_worker=threads_per_worker, scheduler=scheduler, report=report,
                            uncertainty=uncertainty, part_size=part_size, progress=not quiet, **options)
    if not quiet:
        click.echo(format_table(result))
    if result.failed:
        click.get_current_context().exit(1)
