"""The names ``rsisr.training.common`` held before it was split by concern; kept so that code
importing them from here goes on working. New code imports them from their modules:

- :mod:`rsisr.errors`: ``TrainingInterrupted``, ``TrainingDiverged``;
- :mod:`rsisr.training.state`: seeds and RNG states, the EMA update, training checkpoints, the run directory;
- :mod:`rsisr.training.metrics`: metrics.csv, losses.png, validation scores;
- :mod:`rsisr.training.loop`: :func:`~rsisr.training.loop.fit`.
"""

from __future__ import annotations

from rsisr.errors import TrainingDiverged, TrainingInterrupted
from rsisr.training.loop import fit
from rsisr.training.metrics import VAL_COLUMNS, MetricsLog, plot_losses, read_metrics, score
from rsisr.training.state import (
    CHECKPOINT_FORMAT, CHECKPOINT_VERSION, checkpoint_dir, ema_update, latest_checkpoint, load_checkpoint,
    prepare_run_dir, rng_state, save_checkpoint, seed_everything, set_rng_state,
)

__all__ = [
    "CHECKPOINT_FORMAT", "CHECKPOINT_VERSION", "MetricsLog", "TrainingDiverged", "TrainingInterrupted",
    "VAL_COLUMNS", "checkpoint_dir", "ema_update", "fit", "latest_checkpoint", "load_checkpoint", "plot_losses",
    "prepare_run_dir", "read_metrics", "rng_state", "save_checkpoint", "score", "seed_everything",
    "set_rng_state",
]
