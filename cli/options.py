"""Options shared by several commands (rasterio's ``rio/options.py`` style)."""

from __future__ import annotations

import logging

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



def verbosity_options(f):
    """``-v``/``-q``: log level of the ``rsisr`` logger (warnings by default)."""
    f = click.option("-q", "--quiet", is_flag=True, help="Only errors; no progress bar.")(f)
    f = click.option("-v", "--verbose", count=True, help="More log output (-vv for debug).")(f)
    return f


def configure_logging(verbose: int = 0, quiet: bool = False) -> None:
    level = logging.ERROR if quiet else (logging.WARNING, logging.INFO, logging.DEBUG)[min(verbose, 2)]
    logging.basicConfig(format="%(levelname)s: %(message)s", level=level)
    logging.getLogger("rsisr").setLevel(level)
    logging.captureWarnings(True)
