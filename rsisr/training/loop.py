"""The training loop, :func:`fit`, and its Ctrl-C handling."""

from __future__ import annotations

import logging
import math
import signal
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import torch

from rsisr.errors import TrainingDiverged, TrainingInterrupted
from rsisr.training.metrics import MetricsLog, Validation, metric_columns, plot_losses
from rsisr.training.state import checkpoint_dir, save_checkpoint
from rsisr.training.trainer import Trainer

log = logging.getLogger(__name__)


class StopFlag:
    """First SIGINT: finish the current step, write a checkpoint, stop. Second: stop at once."""

    def __init__(self) -> None:
        self.set = False
        self._previous = None
        self._installed = False

    def __enter__(self) -> "StopFlag":
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


class _LossWindow:
    """The losses of the steps since the last logged row, and how long they took."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.sums: dict[str, torch.Tensor] = {}
        self.counts: dict[str, int] = {}
        self.steps = 0
        self.start = time.perf_counter()

    def add(self, losses: dict[str, torch.Tensor]) -> None:
        for k, v in losses.items():
            self.sums[k] = self.sums[k] + v.detach().float() if k in self.sums else v.detach().float().clone()
            self.counts[k] = self.counts.get(k, 0) + 1
        self.steps += 1

    def row(self, step: int, batch_size: int, n_train: int, lr: float) -> dict[str, Any]:
        """The metrics.csv row at ``step``; :class:`TrainingDiverged` if a mean loss is not finite."""
        elapsed = time.perf_counter() - self.start
        means = {k: float(v) / self.counts[k] for k, v in self.sums.items()}
        bad = [k for k, v in means.items() if not math.isfinite(v)]
        if bad:
            raise TrainingDiverged(
                f"loss {bad[0]} became {means[bad[0]]} at step {step}; lower the learning rate "
                "(--lr) or use fp32, then resume from the last checkpoint with --resume"
            )
        return {"step": step, "epoch": step * batch_size / n_train, **means, "lr": lr,
                "samples_per_s": self.steps * batch_size / max(elapsed, 1e-9)}


def _next_batch(loader: Iterator[torch.Tensor], stop: StopFlag) -> torch.Tensor | None:
    """The next batch; None when the loader fails after Ctrl-C (its workers get the SIGINT too)."""
    try:
        return next(loader)
    except Exception:
        if stop.set:
            return None
        raise


def fit(trainer: Trainer, *, run_dir: Path, loader: Iterator[torch.Tensor], start_step: int, total_steps: int,
        batch_size: int, n_train: int, val_hr: torch.Tensor | None, config_yaml: str, train_cfg,
        progress: bool = True, callback: Callable[[int, dict[str, float]], None] | None = None,
        metric_weights: Path | None = None) -> Path:
    """Run steps ``start_step`` .. ``total_steps`` - 1, logging, validating (:class:`Validation`)
    and checkpointing; export ``model.safetensors`` at the end. Returns its path."""
    from tqdm.auto import tqdm

    run_dir = Path(run_dir)
    metrics = MetricsLog(run_dir / "metrics.csv", metric_columns(trainer.loss_names), resume_step=start_step)
    validation = Validation(val_hr, metric_weights, trainer.cfg.model.rgb) if val_hr is not None else None
    window = _LossWindow()
    step, saved = start_step, start_step if start_step > 0 else -1
    bar = tqdm(total=total_steps, initial=start_step, disable=not progress, unit="step", dynamic_ncols=True,
               desc=f"train {trainer.stage}")
    try:
        with StopFlag() as stop:
            while step < total_steps and not stop.set:
                hr = _next_batch(loader, stop)
                if hr is None:
                    break
                window.add(trainer.train_step(trainer.prepare(hr), step))
                step += 1
                do_val = validation is not None and (step % train_cfg.val_every == 0 or step == total_steps)
                do_ckpt = step % train_cfg.checkpoint_every == 0 or step == total_steps
                if step % train_cfg.log_every == 0 or do_val or do_ckpt or stop.set:
                    row = window.row(step, batch_size, n_train, trainer.learning_rate())
                    if do_val:
                        row.update(validation(trainer, step))
                    metrics.write(row)
                    bar.set_postfix({k: f"{row[k]:.4g}" for k in trainer.loss_names[:4] if k in row}
                                    | {"samples/s": f"{row['samples_per_s']:.2f}"}, refresh=False)
                    if callback is not None:
                        callback(step, row)
                    window.reset()
                bar.update(1)
                if do_ckpt:
                    _checkpoint(run_dir, step, trainer, config_yaml, train_cfg.keep_checkpoints)
                    saved = step
            if stop.set:
                if saved != step:
                    _checkpoint(run_dir, step, trainer, config_yaml, train_cfg.keep_checkpoints)
                raise TrainingInterrupted(
                    f"interrupted at step {step}: checkpoint written to {checkpoint_dir(run_dir)}; "
                    f"continue with the same command and --resume"
                )
    finally:
        bar.close()
    if saved != step:
        _checkpoint(run_dir, step, trainer, config_yaml, train_cfg.keep_checkpoints)
    path = trainer.export(run_dir / "model.safetensors")
    log.info("model written to %s", path)
    return path


def _checkpoint(run_dir: Path, step: int, trainer: Trainer, config_yaml: str, keep: int) -> None:
    """Write the training checkpoint of ``step`` and redraw losses.png."""
    save_checkpoint(run_dir, step, trainer, config_yaml, keep)
    try:
        plot_losses(run_dir / "metrics.csv", run_dir / "losses.png", trainer.loss_names)
    except Exception as exc:  # a plot must never stop training
        log.warning("could not draw losses.png: %s", exc)
