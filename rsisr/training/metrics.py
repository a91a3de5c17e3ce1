"""What a run records: ``metrics.csv`` (one row per logged step), ``losses.png`` (its curves) and
the validation scores, with the functions ``rsisr evaluate`` uses."""

from __future__ import annotations

import csv
import logging
import math
import os
from pathlib import Path
from typing import Any, Mapping

import torch

from rsisr.atomic import atomic_open, atomic_path, write_error
from rsisr.imageops import bicubic_up, degrade, to_8bit

log = logging.getLogger(__name__)

VAL_COLUMNS = ("val_psnr", "val_ssim", "bicubic_psnr", "bicubic_ssim", "val_lpips", "bicubic_lpips")


def metric_columns(loss_names: tuple[str, ...]) -> list[str]:
    """The columns of a stage's metrics.csv."""
    return ["step", "epoch", *loss_names, "lr", "samples_per_s", *VAL_COLUMNS]


# ----------------------------------------------------------------------------------------------
# metrics.csv and losses.png


class MetricsLog:
    """Append rows to ``metrics.csv``; on resume, rows after the checkpoint's step are dropped."""

    def __init__(self, path: Path, columns: list[str], resume_step: int | None = None):
        self.path = Path(path)
        self.columns = columns
        rows: list[dict[str, str]] = []
        if resume_step is not None and self.path.is_file():
            with open(self.path, newline="") as f:
                rows = [r for r in csv.DictReader(f) if int(r["step"]) <= resume_step]
        with atomic_open(self.path, "w", "metrics file", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows)

    def write(self, row: Mapping[str, Any]) -> None:
        """Append a row; a failed append is an OutputError, with the file cut back to its rows."""
        size = self.path.stat().st_size
        try:
            with open(self.path, "a", newline="") as f:
                writer = csv.DictWriter(f, fieldnames=self.columns, extrasaction="ignore")
                writer.writerow({k: _fmt(row.get(k)) for k in self.columns})
        except OSError as exc:
            try:
                os.truncate(self.path, size)
            except OSError:
                pass
            raise write_error(self.path, exc, "metrics file") from None


def _fmt(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value)  # full precision: resumed runs are compared against these numbers
    return str(value)


def read_metrics(path: Path) -> list[dict[str, float | None]]:
    """metrics.csv as a list of rows of floats (None where empty)."""
    with open(path, newline="") as f:
        return [{k: (float(v) if v not in ("", None) else None) for k, v in r.items()} for r in csv.DictReader(f)]


def plot_losses(csv_path: Path, png_path: Path, loss_names: tuple[str, ...]) -> None:
    """Draw every loss (log scale where positive) and the validation PSNR (and LPIPS) against the step."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    rows = read_metrics(csv_path)
    if not rows:
        return
    n, cols = len(loss_names) + 1, 3
    fig = Figure(figsize=(10, 4 + 2 * math.ceil(len(loss_names) / 3)), layout="constrained")
    axes = fig.subplots(math.ceil(n / cols), cols, squeeze=False).ravel()
    for ax, name in zip(axes, loss_names):
        xs, ys = _curve(rows, name)
        if xs:
            ax.plot(xs, ys, lw=1)
            if all(y > 0 for y in ys):
                ax.set_yscale("log")
        ax.set_title(name)
        ax.set_xlabel("step")
    _plot_validation(axes[len(loss_names)], rows)
    for extra in axes[n:]:
        extra.set_visible(False)
    with atomic_path(png_path, "plot") as tmp:
        fig.savefig(tmp, dpi=90, format="png")


def _curve(rows: list[dict[str, float | None]], name: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(steps, values) of the rows where column ``name`` has a value."""
    pts = [(r["step"], r[name]) for r in rows if r.get(name) is not None]
    return tuple(zip(*pts)) if pts else ((), ())


def _plot_validation(ax, rows: list[dict[str, float | None]]) -> None:
    """Validation PSNR of the model and bicubic; LPIPS on a second axis where logged."""
    for name, style in (("val_psnr", "-o"), ("bicubic_psnr", "--")):
        xs, ys = _curve(rows, name)
        if xs:
            ax.plot(xs, ys, style, ms=3, label=name)
    ax.set_title("validation PSNR (dB)")
    ax.set_xlabel("step")
    if ax.lines:
        ax.legend()
    if _curve(rows, "val_lpips")[0]:
        twin = ax.twinx()
        for name, style in (("val_lpips", ":s"), ("bicubic_lpips", ":")):
            xs, ys = _curve(rows, name)
            if xs:
                twin.plot(xs, ys, style, ms=3, color="tab:red", label=name)
        twin.set_ylabel("LPIPS (red)")
        twin.legend(loc="lower right")


# ----------------------------------------------------------------------------------------------
# Validation


def score(sr: torch.Tensor, hr: torch.Tensor, lpips_net=None, rgb=None) -> tuple[float, float, float | None]:
    """Mean PSNR, SSIM and (with ``lpips_net``) LPIPS of (N, C, H, W) images in [-1, 1], rounded
    to 8-bit values first (:func:`rsisr.imageops.to_8bit`): the functions ``rsisr evaluate`` uses.
    PSNR and SSIM cover every band; LPIPS the ``rgb`` bands (1-based; None: the first three)."""
    from rsisr.evaluation.metrics import psnr, ssim

    a, b = to_8bit(sr), to_8bit(hr)
    s_psnr, s_ssim = float(psnr(a, b).mean()), float(ssim(a, b).mean())
    lp = None
    if lpips_net is not None:
        from rsisr.evaluation.perceptual import lpips_distance

        if a.shape[1] != 3 or tuple(rgb or (1, 2, 3)) != (1, 2, 3):
            index = [c - 1 for c in (rgb or (1, 2, 3))]
            a, b = a[:, index], b[:, index]

        lp = float(torch.cat([lpips_distance(lpips_net, a[k:k + 8], b[k:k + 8]) for k in range(0, len(a), 8)]).mean())
    return s_psnr, s_ssim, lp


class Validation:
    """Scores of a stage's single-step SR of the validation crops ``hr`` (N, C, crop, crop) in
    [-1, 1] next to bicubic's (computed once): PSNR and SSIM, and LPIPS(AlexNet), the evaluation
    metric, on the model's ``rgb`` bands when the ``metric_weights`` folder is given (none
    without RGB bands)."""

    def __init__(self, hr: torch.Tensor, metric_weights: Path | None = None, rgb=(1, 2, 3)):
        self.hr = hr
        self.rgb = rgb
        self.lpips_net = None
        if metric_weights is not None and rgb is not None:
            from rsisr.evaluation.perceptual import build_lpips_local

            self.lpips_net = build_lpips_local(metric_weights, "alex")
        self.bicubic = score(bicubic_up(degrade(hr)), hr, self.lpips_net, rgb)

    def __call__(self, trainer, step: int) -> dict[str, float | None]:
        """The validation columns of metrics.csv at ``step``."""
        val, bic = score(*trainer.validate(self.hr), self.lpips_net, self.rgb), self.bicubic
        log.info("step %d: validation PSNR %.3f dB SSIM %.4f (bicubic %.3f dB %.4f)%s", step, val[0], val[1],
                 bic[0], bic[1], "" if val[2] is None else f" LPIPS {val[2]:.4f} (bicubic {bic[2]:.4f})")
        return dict(zip(VAL_COLUMNS, (val[0], val[1], bic[0], bic[1], val[2], bic[2])))
