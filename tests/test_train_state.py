"""Training state without training: checkpoints (their format, damaged ones), RNG states, the EMA,
metrics.csv on resume, and the names kept importable from ``rsisr.training.common``."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from rsisr.errors import CheckpointError
from rsisr.training.state import (
    CHECKPOINT_FORMAT, CHECKPOINT_VERSION, ema_update, latest_checkpoint, load_checkpoint, rng_state,
    save_checkpoint, set_rng_state,
)


class _State:
    def __init__(self, value: float):
        self.value = value

    def state_dict(self):
        return {"w": torch.full((3,), self.value)}


def test_checkpoints_round_trip_and_only_the_newest_are_kept(tmp_path):
    for step in (2, 4, 6):
        save_checkpoint(tmp_path, step, _State(step), "a: 1\n", keep=2)
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["step_00000004.pt", "step_00000006.pt"]
    state = load_checkpoint(latest_checkpoint(tmp_path))
    assert set(state) == {"format", "version", "step", "config", "trainer", "rng"}
    assert (state["format"], state["version"], state["step"], state["config"]) == (CHECKPOINT_FORMAT, 1, 6, "a: 1\n")
    assert torch.equal(state["trainer"]["w"], torch.full((3,), 6.0))


def test_damaged_foreign_or_newer_checkpoints_are_checkpoint_errors(tmp_path):
    path = save_checkpoint(tmp_path, 1, _State(1), "", keep=1)
    cut = tmp_path / "cut.pt"
    cut.write_bytes(path.read_bytes()[:200])
    foreign, newer = tmp_path / "foreign.pt", tmp_path / "newer.pt"
    torch.save({"step": 1}, foreign)
    torch.save({"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION + 1}, newer)
    for bad, match in ((cut, "cannot be read"), (foreign, "not an rsisr training checkpoint"),
                       (newer, f"version {CHECKPOINT_VERSION + 1}")):
        with pytest.raises(CheckpointError, match=match) as caught:
            load_checkpoint(bad)
        assert isinstance(caught.value, ValueError)  # as every CheckpointError


def _trainers():
    from rsisr.api import build_autoencoder
    from rsisr.training.ae import AETrainer
    from rsisr.training.config import resolve
    from rsisr.training.lcm import LCMTrainer

    cpu = torch.device("cpu")
    sets = {"data.crop": 32, "ae.disc_channels": 8, "ae.max_steps": 1, "lcm.max_steps": 1}
    ae = AETrainer(resolve("ae", preset="tiny", sets=sets), cpu, total_steps=1)
    lcm = LCMTrainer(resolve("lcm", preset="tiny", sets=sets), cpu, build_autoencoder("tiny"))
    return ae, lcm


def test_trainer_state_keeps_the_checkpoint_format(one_thread):
    """The ``trainer`` entry of a checkpoint: runs written by earlier versions resume, so its keys stay."""
    ae, lcm = _trainers()
    a, b = ae.state_dict(), lcm.state_dict()
    assert list(a) == ["models", "optimizers", "scaler", "generator"]
    assert list(a["models"]) == ["ae", "disc"] and list(a["optimizers"]) == ["ae", "disc"]
    assert list(b) == ["models", "optimizers", "scaler", "generator", "ema_updates", "ae_sha256"]
    assert list(b["models"]) == ["model", "ema"] and list(b["optimizers"]) == ["model"]
    # and a state loads back into a fresh trainer
    b["ema_updates"] = 7
    fresh = _trainers()[1]
    fresh.load_state_dict(b)
    assert fresh.ema_updates == 7 and torch.equal(fresh.generator.get_state(), lcm.generator.get_state())


def test_rng_states_round_trip():
    torch.manual_seed(1)
    np.random.seed(1)
    random.seed(1)
    state = rng_state()
    first = (torch.rand(3), np.random.rand(3), random.random())
    set_rng_state(state)
    again = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(first[0], again[0]) and np.array_equal(first[1], again[1]) and first[2] == again[2]


def test_ema_warm_up_follows_the_reference():
    """d = min(decay, (1 + n) / (10 + n)): 0.1 at the first update, then the decay once reached."""
    online, ema = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)
    before = ema.weight.detach().clone()
    assert ema_update(ema, online, 0.9999, 0) == pytest.approx(0.1)
    assert torch.allclose(ema.weight, 0.1 * before + 0.9 * online.weight)
    assert ema_update(ema, online, 0.5, 100) == 0.5


def test_metrics_on_resume_keep_the_rows_up_to_the_checkpoint(tmp_path):
    from rsisr.training.metrics import MetricsLog, read_metrics

    path = tmp_path / "metrics.csv"
    log = MetricsLog(path, ["step", "loss"])
    for step in range(1, 5):
        log.write({"step": step, "loss": step / 10})
    MetricsLog(path, ["step", "loss"], resume_step=2).write({"step": 3, "loss": 0.7})
    assert read_metrics(path) == [{"step": 1.0, "loss": 0.1}, {"step": 2.0, "loss": 0.2}, {"step": 3.0, "loss": 0.7}]


def test_names_of_the_former_common_module_still_import():
    import rsisr.errors
    from rsisr.training import common, loop, state

    assert common.TrainingInterrupted is rsisr.errors.TrainingInterrupted
    assert common.TrainingDiverged is rsisr.errors.TrainingDiverged
    assert common.load_checkpoint is state.load_checkpoint and common.fit is loop.fit
