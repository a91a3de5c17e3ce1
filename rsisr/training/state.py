"""Training state: seeds and RNG states, the EMA update, training checkpoints and the run directory.

Run directory::

    config.yaml                  the resolved configuration (``--resume`` checks it)
    checkpoints/step_00000500.pt training state: models, EMA, optimisers, step, RNG states
    metrics.csv                  step, epoch, losses, lr, samples/s, validation PSNR/SSIM
    losses.png                   the curves of metrics.csv, redrawn at every checkpoint
    train.log                    the log (skipped images, checkpoints, validation)
    model.safetensors            at the end: the stage's model (``rsisr.load_model`` / ``load_autoencoder``)

Training checkpoints are read with ``torch.load(weights_only=True)``: they hold only tensors and
plain Python values. Their keys (``format``, ``version``, ``step``, ``config``, ``trainer``,
``rng``) are a fixed format: runs started by an older rsisr resume.
"""

from __future__ import annotations

import logging
import random
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
from torch import nn

from rsisr.atomic import atomic_open
from rsisr.errors import CheckpointError, InputError, OutputError

log = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "rsisr-train"
CHECKPOINT_VERSION = 1


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


def save_checkpoint(run_dir: Path, step: int, trainer, config_yaml: str, keep: int) -> Path:
    """Write ``checkpoints/step_NNNNNNNN.pt`` atomically (a failed write is an OutputError and
    leaves the older checkpoints as they were) and delete all but the newest ``keep``.

    ``trainer``: anything with a ``state_dict()`` of tensors and plain values."""
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
    """A training checkpoint; a :class:`CheckpointError` if it is damaged, foreign or of another
    format version."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(f"training checkpoint {path} cannot be read ({exc}); "
                              "delete it to resume from an older one") from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path} is not an rsisr training checkpoint")
    if state.get("version") != CHECKPOINT_VERSION:
        raise CheckpointError(f"{path} has training checkpoint version {state.get('version')}; "
                              f"this rsisr reads {CHECKPOINT_VERSION}")
    return state


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
