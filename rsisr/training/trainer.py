"""What both training stages share: :class:`Trainer`, the base of :class:`~rsisr.training.ae.AETrainer`
and :class:`~rsisr.training.lcm.LCMTrainer`.

:func:`rsisr.training.loop.fit` drives a trainer through ``prepare`` -> ``train_step`` (losses),
``validate`` (single-step SR of the validation crops), ``learning_rate``, ``state_dict`` /
``load_state_dict`` (the ``trainer`` entry of a training checkpoint) and ``export`` (the
stage's ``model.safetensors``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from rsisr.training.config import TrainingConfig


class Trainer:
    """Device placement, the gradient scaler, the sample generator and the training state.

    A stage fills ``models`` and ``optimizers`` (their keys are those of the checkpoint's
    ``trainer`` entry), sets ``opt`` (the optimiser whose learning rate metrics.csv logs) and
    implements ``train_step``, ``super_resolve`` and ``export``.
    """

    stage: str
    loss_names: tuple[str, ...]

    def __init__(self, cfg: TrainingConfig, device: torch.device):
        self.cfg = cfg
        self.stage_cfg = getattr(cfg, self.stage)
        self.device = device
        self.precision = cfg.run.precision
        self.channels_last = cfg.run.channels_last if cfg.run.channels_last is not None else device.type == "cuda"
        # fp16 on CUDA needs a gradient scaler; otherwise it is disabled (a no-op).
        self.scaler = torch.amp.GradScaler(device.type, enabled=self.precision == "fp16" and device.type == "cuda")
        # Posterior samples (stage 2: also timesteps and noise) come from this generator, saved with the run.
        self.generator = torch.Generator(device).manual_seed(cfg.train.seed + 1)
        self.models: dict[str, nn.Module] = {}
        self.optimizers: dict[str, torch.optim.Optimizer] = {}
        self.opt: torch.optim.Optimizer | None = None
        torch.manual_seed(cfg.train.seed)  # the weights the stage builds next

    def compiled(self, module: nn.Module) -> nn.Module:
        """``module`` through torch.compile with ``run.compile``, else as it is."""
        return torch.compile(module) if self.cfg.run.compile else module

    def prepare(self, hr: torch.Tensor) -> torch.Tensor:
        """A (B, 3, crop, crop) batch on the device, in the stage's memory format."""
        hr = hr.to(self.device, non_blocking=True)
        return hr.contiguous(memory_format=torch.channels_last) if self.channels_last else hr

    def optimise(self, loss: torch.Tensor, opt: torch.optim.Optimizer) -> None:
        """One (scaled) backward pass of ``loss`` and a step of ``opt``; the caller updates the
        scaler once all of a step's optimisers have stepped."""
        opt.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(opt)

    def train_step(self, hr: torch.Tensor, step: int) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def super_resolve(self, hr: torch.Tensor) -> torch.Tensor:
        """Single-step SR of the LR made from ``hr`` (already prepared): (B, 3, H, W)."""
        raise NotImplementedError

    @torch.no_grad()
    def validate(self, hr: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Single-step SR of the validation crops ``hr`` (N, 3, H, W), a batch at a time, on the
        CPU in float32. Returns (sr, hr)."""
        chunks = hr.split(self.stage_cfg.batch_size)
        return torch.cat([self.super_resolve(self.prepare(chunk)).float().cpu() for chunk in chunks]), hr

    def learning_rate(self) -> float:
        return float(self.opt.param_groups[0]["lr"])

    def state_dict(self) -> dict[str, Any]:
        return {
            "models": {name: m.state_dict() for name, m in self.models.items()},
            "optimizers": {name: o.state_dict() for name, o in self.optimizers.items()},
            "scaler": self.scaler.state_dict(),
            "generator": self.generator.get_state(),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        for name, m in self.models.items():
            m.load_state_dict(state["models"][name])
        for name, o in self.optimizers.items():
            o.load_state_dict(state["optimizers"][name])
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self.generator.set_state(state["generator"])

    def export(self, path: Path) -> Path:
        raise NotImplementedError
