"""``rsisr evaluate``."""

from __future__ import annotations

import click

from rsisr.evaluation import BASELINES, DEFAULT_FIGURES, IMAGE_SUFFIXES, METRICS
from rsisr_cli.options import (
    configure_logging, device_option, ensemble_option, model_option, seed_option, steps_option, verbosity_options,
)


@click.command()
@click.option("--data", "data", required=True, type=click.Path(file_okay=False),
              help=f"Folder of HR images ({', '.join(x[1:].upper() for x in IMAGE_SUFFIXES)}), subfolders included; "
                   "LR = bicubic /4 of each.")
@click.option("--out", "out", required=True, type=click.Path(dir_okay=False), help="Report file to write (JSON).")
@model_option
@click.option("--baselines", default=",".join(BASELINES), show_default=True,
              help=f"Comma-separated baselines to evaluate beside the model ({', '.join(BASELINES)}), or none.")
@click.option("--metrics", default=",".join(METRICS), show_default=True,
              help="Comma-separated metrics; those left out are null in the report.")
@click.option("--metric-weights", type=click.Path(file_okay=False), default=None,
              help="Folder of LPIPS/FID weights written by `metric-weights DIR` "
                   "(default: $RSISR_METRIC_WEIGHTS, else the packages' download).")
@click.option("--figures", type=click.Path(file_okay=False), default=None,
              help="Folder for comparison panels (LR bicubic | model | HR) and summary.md.")
@click.option("--n-figures", type=click.IntRange(0), default=DEFAULT_FIGURES, show_default=True,
              help="How many of the first images get a panel with --figures.")
@steps_option
@seed_option
@ensemble_option
@device_option
@click.option("--limit", type=click.IntRange(1), default=None, help="Evaluate only the first N images (by path).")
@click.option("--overwrite", is_flag=True, help="Replace the report and summary.md if they exist.")
@verbosity_options
def evaluate(data, out, model_path, baselines, metrics, metric_weights, figures, n_figures, steps, seed, ensemble,
             device, limit, overwrite, verbose, quiet) -> None:
    """Evaluate a model against bicubic on a folder of HR images: PSNR, SSIM, LPIPS, FID and runtime.

    Writes the report to OUT (JSON) and prints the metrics table. With --ensemble N the model's
    output is the mean of N samples, and the report adds how well their standard deviation
    tracks the error (Spearman correlation; reliability.png with --figures).
    """
    from tqdm import tqdm

    from rsisr.evaluation.evaluate import evaluate as run

    configure_logging(verbose, quiet)
    bar = None

    def progress(done: int, total: int) -> None:
        nonlocal bar
        if bar is None:  # created on the first image, so that errors before it print on a clean line
            bar = tqdm(total=total, desc="evaluate", unit="image", disable=quiet, leave=False)
        bar.update(done - bar.n)

    try:
        report = run(
            data, model_path, out=out, baselines=baselines, metrics=metrics, metric_weights=metric_weights,
            figures=figures, n_figures=n_figures, steps=steps, seed=seed, device=device, limit=limit,
            overwrite=overwrite, progress=progress, ensemble=ensemble,
        )
    finally:
        if bar is not None:
            bar.close()
    if quiet:
        return
    click.echo(f"{report['data']['n_images']} images, {report['device']}, model {report['model']['preset']} "
               f"({report['model']['inference_params']:,} params) -> {out}")
    click.echo(f"{'method':<10}{'PSNR':>9}{'SSIM':>9}{'LPIPS':>9}{'FID':>10}{'s/image':>10}")
    for method, values in report["metrics"].items():
        cells = [_fmt(values[k], w, d) for k, w, d in (("psnr", 9, 3), ("ssim", 9, 4), ("lpips", 9, 4), ("fid", 10, 3))]
        click.echo(f"{method:<10}" + "".join(cells) + _fmt(report["runtime_s_per_image"][method], 10, 4))
    if "ensemble" in report:
        rho = report["ensemble"]["calibration"]["spearman"]
        click.echo(f"model: mean of {report['ensemble']['n']} samples; Spearman(std, |error|) = "
                   f"{'n/a' if rho is None else f'{rho:.3f}'} over "
                   f"{report['ensemble']['calibration']['n_values']:,} pixel values")


def _fmt(value, width: int, digits: int) -> str:
    return f"{'n/a':>{width}}" if value is None else f"{value:>{width}.{digits}f}"
