"""``rsisr train ae`` and ``rsisr train lcm``: the two LCMSR training stages."""

from __future__ import annotations

from pathlib import Path

import click

from rsisr.config import PRESETS
from rsisr.training.config import DEFAULT_PRESET
from rsisr.training.sections import GPU_WORKERS, PAPER_EPOCHS, PRECISIONS, RunConfig
from rsisr_cli.options import configure_logging, device_option, verbosity_options

_PRESET_NAMES = ", ".join(PRESETS)


def _common_options(f):
    """Options both stages take (in the order ``--help`` shows them)."""
    options = [
        click.option("--data", type=click.Path(file_okay=False), default=None,
                     help="Folder of training images (PNG, JPEG, TIFF, GeoTIFF). Required unless --resume."),
        click.option("--out", type=click.Path(file_okay=False), required=True,
                     help="Run directory: config, checkpoints, metrics.csv, losses.png, model.safetensors."),
        click.option("--val", type=click.Path(file_okay=False), default=None,
                     help="Validation folder. Default: a fixed held-out share of --data."),
        click.option("--preset", default=None,
                     help=f"Model preset: {_PRESET_NAMES} (ae default: {DEFAULT_PRESET}; lcm default: the autoencoder's)."),
        click.option("--config", "config_files", multiple=True, type=click.Path(dir_okay=False),
                     help="Training config, YAML or JSON (repeatable; later files win)."),
        click.option("--set", "sets", multiple=True, metavar="KEY=VALUE",
                     help="Override one config key, e.g. --set data.crop=128 (repeatable)."),
        click.option("--max-steps", type=click.IntRange(min=1), default=None, help="Train for this many steps."),
        click.option("--epochs", type=click.FloatRange(min=0, min_open=True), default=None,
                     help=f"Train for this many passes over the data (default {PAPER_EPOCHS:g}, the paper's)."),
        click.option("--batch-size", type=click.IntRange(min=1), default=None, help="Batch size."),
        click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=None, help="Learning rate."),
        device_option,
        click.option("--precision", type=click.Choice(PRECISIONS), default=None,
                     help=f"Autocast precision (default {RunConfig.precision}; fp16 only on CUDA; auto: bf16 where "
                          "the device runs it natively, checked at run time, else fp32)."),
        click.option("--workers", type=click.IntRange(min=0), default=None,
                     help=f"Data loader processes (default: 0 on the CPU, up to {GPU_WORKERS} on a GPU)."),
        click.option("--compile", "compile_", is_flag=True, default=None, help="torch.compile the training passes."),
        click.option("--metric-weights", type=click.Path(file_okay=False), default=None,
                     help="Folder written by ../shared/tools/metric-weights (default: $RSISR_METRIC_WEIGHTS): "
                          "validation LPIPS in metrics.csv, and the LPIPS(VGG) loss of ae.perceptual_weight."),
        click.option("--resume", is_flag=True, help="Continue the run in --out from its last checkpoint."),
        click.option("--strict-data", is_flag=True,
                     help="Stop on the first unreadable image (default: skip it with a warning, count it in train.log)."),
        verbosity_options,
    ]
    for option in reversed(options):
        f = option(f)
    return f


def _run(stage: str, *, data, out, val, preset, config_files, sets, max_steps, epochs, batch_size, lr, device,
         precision, workers, compile_, metric_weights, resume, strict_data, verbose, quiet, ae=None, init=None, extra=None) -> None:
    from rsisr.training import train

    if max_steps is not None and epochs is not None:
        raise click.UsageError("give --max-steps or --epochs, not both")
    configure_logging(verbose, quiet)
    flags = {
        f"{stage}.max_steps": max_steps, f"{stage}.epochs": epochs, f"{stage}.batch_size": batch_size,
        f"{stage}.lr": lr, "run.precision": precision, "run.workers": workers, "run.compile": compile_,
        "run.metric_weights": None if metric_weights is None else str(Path(metric_weights).resolve()),
        **(extra or {}),
    }
    if device != "auto" or not resume:
        flags["run.device"] = device
    path = train(stage, out, data=data, val=val, ae=ae, init=init, preset=preset, config_files=config_files, sets=sets,
                 flags=flags, resume=resume, strict_data=strict_data, progress=not quiet)
    click.echo(f"model written to {path}", err=True)


@click.group()
def train() -> None:
    """Train LCMSR on your own imagery: `ae` (stage 1), then `lcm` (stage 2)."""


@train.command("ae")
@click.option("--init", "init", type=click.Path(), default=None,
              help="Start from this autoencoder (RUN_DIR/model.safetensors of `rsisr train ae`, or that RUN_DIR) "
                   "instead of random weights.")
@click.option("--decoder-only", is_flag=True,
              help="With --init: freeze the encoder and fine-tune only the decoder (ae.train_encoder=false); "
                   "the latent space stays the same.")
@click.option("--lcm", "lcm", type=click.Path(), default=None,
              help="Fine-tune the decoder of this stage-2 model (RUN_DIR/model.safetensors of `rsisr train lcm`, "
                   "or that RUN_DIR) on the latents it predicts in one step; writes that model with the new decoder.")
@_common_options
def train_ae(init, decoder_only, lcm, **kwargs) -> None:
    """Stage 1: train the residual autoencoder.

    Loss: L1, then L1 + KL + PatchGAN (DESIGN.md). Writes RUN_DIR/model.safetensors, the input of `rsisr train lcm --ae`.
    With --lcm: fine-tunes a stage-2 model's decoder on that model's own latents instead.
    """
    extra = {"ae.train_encoder": False if decoder_only else None, "ae.lcm": lcm}
    _run("ae", init=init, extra=extra, **kwargs)


@train.command("lcm")
@click.option("--ae", "ae", type=click.Path(), default=None,
              help="The stage-1 autoencoder: RUN_DIR/model.safetensors of `rsisr train ae` (or that RUN_DIR).")
@click.option("--no-kd", is_flag=True, help="Drop the KD loss (ablation 'w/o KD', paper Table III).")
@click.option("--no-consistency", is_flag=True,
              help="Replace L_CT by L1(f(z_t), z0) (ablation 'w/o consistency', paper Table III).")
@_common_options
def train_lcm(ae, no_kd, no_consistency, **kwargs) -> None:
    """Stage 2: train the latent consistency model (CondNet + UNet).

    Loss: consistency (paper Eq. 9) + KD (Eq. 5) on the frozen autoencoder's latents. Writes RUN_DIR/model.safetensors (EMA weights), the model `rsisr upscale --model` takes.
    """
    extra = {"lcm.kd": False if no_kd else None, "lcm.consistency": False if no_consistency else None}
    _run("lcm", ae=ae, extra=extra, **kwargs)
