"""What both stages share: the run directory, training checkpoints, RNG states, metrics.csv,
losses.png, EMA and the training loop.

Run directory::

    config.yaml                  the resolved configuration (``--resume`` checks it)
    checkpoints/step_00000500.pt training state: models, EMA, optimisers, step, RNG states
    metrics.csv                  step, epoch, losses, lr, samples/s, validation PSNR/SSIM
    losses.png                   the curves of metrics.csv, redrawn at every checkpoint
    train.log                    the log (skipped images, checkpoints, validation)
    model.safetensors            at the end: the stage's model (``rsisr.load_model`` / ``load_autoencoder``)

Training checkpoints are read with ``torch.load(weights_only=True)``: they hold only tensors and
plain Python values.
"""

from __future__ import annotations

import csv
import logging
import math
import os
import random
import signal
import threading
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Protocol

import numpy as np
import torch
from torch import nn

from rsisr.atomic import atomic_open, atomic_path, write_error
from rsisr.errors import InputError, OutputError, RsisrError

log = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "rsisr-train"
CHECKPOINT_VERSION = 1


class TrainingInterrupted(RsisrError, KeyboardInterrupt):
    """Ctrl-C during training: a resumable checkpoint was written first."""


class TrainingDiverged(RsisrError, ArithmeticError):
    """A loss became NaN or infinite."""


class StageTrainer(Protocol):
    """One training stage: ``train_step`` on a (B, 3, crop, crop) HR batch in [-1, 1]."""

    loss_names: tuple[str, ...]
    device: torch.device

    def train_step(self, hr: torch.Tensor, step: int) -> dict[str, torch.Tensor]: ...

    def validate(self, hr: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]: ...

    def learning_rate(self) -> float: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: Mapping[str, Any]) -> None: ...

    def export(self, path: Path) -> Path: ...


# ----------------------------------------------------------------------------------------------
# Seeds and RNG states


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> dict[str, Any]:
    """torch (CPU and CUDA), numpy and Python RNG states as tensors and plain values."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached": float(cached)},
        "python": random.getstate(),
    }


def set_rng_state(state: Mapping[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))


# ----------------------------------------------------------------------------------------------
# EMA


@torch.no_grad()
def ema_update(ema: nn.Module, online: nn.Module, decay: float, updates: int) -> float:
    """theta_ema <- d theta_ema + (1 - d) theta with d = min(decay, (1 + n) / (10 + n))
    (the reference's warm-up; n = updates done before this one). Returns d."""
    d = min(decay, (1.0 + updates) / (10.0 + updates))
    for e, p in zip(ema.parameters(), online.parameters()):
        e.lerp_(p.detach(), 1.0 - d)
    for e, b in zip(ema.buffers(), online.buffers()):
        e.copy_(b)
    return d


# ----------------------------------------------------------------------------------------------
# Training checkpoints


def checkpoint_dir(run_dir: Path) -> Path:
    return Path(run_dir) / "checkpoints"


def latest_checkpoint(run_dir: Path) -> Path | None:
    files = sorted(checkpoint_dir(run_dir).glob("step_*.pt"))
    return files[-1] if files else None


def save_checkpoint(run_dir: Path, step: int, trainer: StageTrainer, config_yaml: str, keep: int) -> Path:
    """Write ``checkpoints/step_NNNNNNNN.pt`` atomically (a failed write is an OutputError and
    leaves the older checkpoints as they were) and delete all but the newest ``keep``."""
    folder = checkpoint_dir(run_dir)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"step_{step:08d}.pt"
    state = {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "step": step,
        "config": config_yaml,
        "trainer": trainer.state_dict(),
        "rng": rng_state(),
    }
    with atomic_open(path, "wb", "training checkpoint") as f:
        torch.save(state, f)
    for old in sorted(folder.glob("step_*.pt"))[:-keep]:
        old.unlink(missing_ok=True)
    log.info("checkpoint %s", path)
    return path


def load_checkpoint(path: Path) -> dict[str, Any]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise InputError(f"training checkpoint {path} cannot be read ({exc}); delete it to resume from an older one") from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise InputError(f"{path} is not an rsisr training checkpoint")
    if state.get("version") != CHECKPOINT_VERSION:
        raise InputError(f"{path} has training checkpoint version {state.get('version')}; this rsisr reads {CHECKPOINT_VERSION}")
    return state


# ----------------------------------------------------------------------------------------------
# metrics.csv and losses.png

VAL_COLUMNS = ("val_psnr", "val_ssim", "bicubic_psnr", "bicubic_ssim", "val_lpips", "bicubic_lpips")


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
    """Draw every loss (log scale where positive) and the validation PSNR against the step."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    rows = read_metrics(csv_path)
    if not rows:
        return
    fig = Figure(figsize=(10, 4 + 2 * math.ceil(len(loss_names) / 3)), layout="constrained")
    n = len(loss_names) + 1
    cols = 3
    axes = fig.subplots(math.ceil(n / cols), cols, squeeze=False).ravel()
    for ax, name in zip(axes, loss_names):
        pts = [(r["step"], r[name]) for r in rows if r.get(name) is not None]
        if pts:
            xs, ys = zip(*pts)
            ax.plot(xs, ys, lw=1)
            if all(y > 0 for y in ys):
                ax.set_yscale("log")
        ax.set_title(name)
        ax.set_xlabel("step")
    ax = axes[len(loss_names)]
    for name, style in (("val_psnr", "-o"), ("bicubic_psnr", "--")):
        pts = [(r["step"], r[name]) for r in rows if r.get(name) is not None]
        if pts:
            xs, ys = zip(*pts)
            ax.plot(xs, ys, style, ms=3, label=name)
    ax.set_title("validation PSNR (dB)")
    ax.set_xlabel("step")
    if ax.lines:
        ax.legend()
    lpips_pts = {name: [(r["step"], r[name]) for r in rows if r.get(name) is not None]
                 for name in ("val_lpips", "bicubic_lpips")}
    if lpips_pts["val_lpips"]:
        twin = ax.twinx()
        for (name, pts), style in zip(lpips_pts.items(), (":s", ":")):
            if pts:
                xs, ys = zip(*pts)
                twin.plot(xs, ys, style, ms=3, color="tab:red", label=name)
        twin.set_ylabel("LPIPS (red)")
        twin.legend(loc="lower right")
    for extra in axes[n:]:
        extra.set_visible(False)
    with atomic_path(png_path, "plot") as tmp:
        fig.savefig(tmp, dpi=90, format="png")


# ----------------------------------------------------------------------------------------------
# Validation metrics


def _to_255(x: torch.Tensor) -> torch.Tensor:
    """[-1, 1] -> [0, 255], rounded like an 8-bit output file."""
    return torch.round(((x.float() + 1.0) * 127.5).clamp(0.0, 255.0))


def score(sr: torch.Tensor, hr: torch.Tensor, lpips_net=None) -> tuple[float, float, float | None]:
    """Mean PSNR, SSIM and (with ``lpips_net``) LPIPS: the functions ``rsisr evaluate`` uses."""
    from rsisr.evaluation.metrics import psnr, ssim

    a, b = _to_255(sr).cpu(), _to_255(hr).cpu()
    lp = None
    if lpips_net is not None:
        from rsisr.evaluation.perceptual import lpips_distance

        lp = float(torch.cat([lpips_distance(lpips_net, a[k:k + 8], b[k:k + 8]) for k in range(0, len(a), 8)]).mean())
    return float(psnr(a, b).mean()), float(ssim(a, b).mean()), lp


# ----------------------------------------------------------------------------------------------
# Ctrl-C


class _StopFlag:
    """First SIGINT: finish the current step, write a checkpoint, stop. Second: stop at once."""

    def __init__(self) -> None:
        self.set = False
        self._previous = None
        self._installed = False

    def __enter__(self) -> "_StopFlag":
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
            self._installed = True
        return self

    def _handle(self, signum, frame) -> None:
        if self.set:
            raise KeyboardInterrupt
        self.set = True
        log.warning("interrupt: stopping after this step and writing a checkpoint (Ctrl-C again to abort)")

    def __exit__(self, *exc) -> None:
        if self._installed:
            signal.signal(signal.SIGINT, self._previous)


# ----------------------------------------------------------------------------------------------
# The loop


def fit(
    trainer: StageTrainer,
    *,
    run_dir: Path,
    loader,
    start_step: int,
    total_steps: int,
    batch_size: int,
    n_train: int,
    val_hr: torch.Tensor | None,
    config_yaml: str,
    train_cfg,
    progress: bool = True,
    callback: Callable[[int, dict[str, float]], None] | None = None,
    metric_weights: Path | None = None,
) -> Path:
    """Run steps ``start_step`` .. ``total_steps`` - 1, logging, validating and checkpointing;
    export ``model.safetensors`` at the end. Returns its path.

    Validation: PSNR and SSIM, and LPIPS(AlexNet) (the evaluation metric) when the
    ``metric_weights`` folder is given."""
    from tqdm.auto import tqdm

    run_dir = Path(run_dir)
    columns = ["step", "epoch", *trainer.loss_names, "lr", "samples_per_s", *VAL_COLUMNS]
    metrics = MetricsLog(run_dir / "metrics.csv", columns, resume_step=start_step)
    bicubic = None
    lpips_net = None
    if val_hr is not None:
        from rsisr.imageops import bicubic_up
        from rsisr.training.data import make_lr

        if metric_weights is not None:
            from rsisr.evaluation.perceptual import build_lpips_local

            lpips_net = build_lpips_local(metric_weights, "alex")
        bicubic = score(bicubic_up(make_lr(val_hr)), val_hr, lpips_net)

    def checkpoint(step: int) -> None:
        save_checkpoint(run_dir, step, trainer, config_yaml, train_cfg.keep_checkpoints)
        try:
            plot_losses(run_dir / "metrics.csv", run_dir / "losses.png", trainer.loss_names)
        except Exception as exc:  # a plot must never stop training
            log.warning("could not draw losses.png: %s", exc)

    step = start_step
    sums: dict[str, torch.Tensor] = {}
    counts: dict[str, int] = {}
    count = 0
    last_saved = start_step if start_step > 0 else -1
    window_start = time.perf_counter()
    bar = tqdm(total=total_steps, initial=start_step, disable=not progress, unit="step", dynamic_ncols=True,
               desc=f"train {getattr(trainer, 'stage', '')}")
    try:
        with _StopFlag() as stop:
            while step < total_steps and not stop.set:
                try:
                    hr = next(loader)
                except Exception:
                    if stop.set:  # loader workers get the SIGINT too
                        break
                    raise
                hr = trainer.prepare(hr)
                losses = trainer.train_step(hr, step)
                step += 1
                count += 1
                for k, v in losses.items():
                    sums[k] = sums[k] + v.detach().float() if k in sums else v.detach().float().clone()
                    counts[k] = counts.get(k, 0) + 1
                do_val = val_hr is not None and (step % train_cfg.val_every == 0 or step == total_steps)
                do_ckpt = step % train_cfg.checkpoint_every == 0 or step == total_steps
                if step % train_cfg.log_every == 0 or do_val or do_ckpt or step == total_steps or stop.set:
                    elapsed = time.perf_counter() - window_start
                    means = {k: float(v) / counts[k] for k, v in sums.items()}
                    bad = [k for k, v in means.items() if not math.isfinite(v)]
                    if bad:
                        raise TrainingDiverged(
                            f"loss {bad[0]} became {means[bad[0]]} at step {step}; lower the learning rate "
                            "(--lr) or use fp32, then resume from the last checkpoint with --resume"
                        )
                    row: dict[str, Any] = {
                        "step": step, "epoch": step * batch_size / n_train, **means,
                        "lr": trainer.learning_rate(), "samples_per_s": count * batch_size / max(elapsed, 1e-9),
                    }
                    if do_val:
                        val = score(*trainer.validate(val_hr), lpips_net)
                        row.update(val_psnr=val[0], val_ssim=val[1], bicubic_psnr=bicubic[0], bicubic_ssim=bicubic[1],
                                   val_lpips=val[2], bicubic_lpips=bicubic[2])
                        log.info("step %d: validation PSNR %.3f dB SSIM %.4f (bicubic %.3f dB %.4f)%s",
                                 step, val[0], val[1], bicubic[0], bicubic[1],
                                 "" if val[2] is None else f" LPIPS {val[2]:.4f} (bicubic {bicubic[2]:.4f})")
                    metrics.write(row)
                    bar.set_postfix({k: f"{means[k]:.4g}" for k in trainer.loss_names[:4] if k in means}
                                    | {"samples/s": f"{row['samples_per_s']:.2f}"}, refresh=False)
                    if callback is not None:
                        callback(step, row)
                    sums, counts, count = {}, {}, 0
                    window_start = time.perf_counter()
                bar.update(1)
                if do_ckpt:
                    checkpoint(step)
                    last_saved = step
            if stop.set:
                if last_saved != step:
                    checkpoint(step)
                raise TrainingInterrupted(
                    f"interrupted at step {step}: checkpoint written to {checkpoint_dir(run_dir)}; "
                    f"continue with the same command and --resume"
                )
    finally:
        bar.close()
    if last_saved != step:
        checkpoint(step)
    path = trainer.export(run_dir / "model.safetensors")
    log.info("model written to %s", path)
    return path


def prepare_run_dir(out: Path, resume: bool) -> None:
    """A fresh run needs an empty or missing ``out``; a resumed one needs its config and a checkpoint."""
    out = Path(out)
    if resume:
        if not (out / "config.yaml").is_file():
            raise InputError(f"--resume: {out} is not a training run directory (no config.yaml); drop --resume to start one")
        if latest_checkpoint(out) is None:
            raise InputError(f"--resume: {out} holds no training checkpoint yet; drop --resume to start again")
        return
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise OutputError(
            f"output folder {out} already exists and is not empty; pass --resume to continue that run, "
            "or choose another --out"
        )
