"""Stage 1: the residual autoencoder (paper Sec. II-A and III-A, DESIGN.md Stage 1).

Loss (LDM's ``LPIPSWithDiscriminator`` as the reference uses it, on the paper's schedule):

- steps < ``ae.disc_start``: L1 only (paper: the first 50 of 200 epochs);
- afterwards: L1 (+ optional LPIPS) + ``kl_weight`` KL + w_adv * G, where G = -E[D(sr)] and
  w_adv = ``adv_weight`` * ||grad L_rec|| / (||grad G|| + 1e-4) (gradients w.r.t. the decoder's
  last conv), and the PatchGAN D is trained with the hinge loss on the same batch.

``ae.adv_weight = 0`` drops the adversarial term and the discriminator. ``ae.init`` (``--init``)
starts from a trained autoencoder; ``ae.train_encoder = false`` (``--decoder-only``) freezes its
encoder, so the latent space, and any stage-2 model trained on it, stay valid.

Departure from the reference: its KL term is on from the first step (its ``disc_start`` only
gates the GAN); the paper says "only L1" for the first part, which we follow.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Mapping

import torch

from rsisr.checkpoint import save_model
from rsisr.config import SCALE
from rsisr.device import autocast
from rsisr.errors import ConfigError
from rsisr.imageops import bicubic_up
from rsisr.training.config import TrainingConfig
from rsisr.training.data import make_lr
from rsisr.training.discriminator import PatchDiscriminator
from rsisr.training.losses import adaptive_weight, generator_loss, hinge_d_loss, l1_sum

log = logging.getLogger(__name__)


def make_scaler(device: torch.device, precision: str):
    """A gradient scaler for fp16 on CUDA; disabled (a no-op) otherwise."""
    return torch.amp.GradScaler(device.type, enabled=precision == "fp16" and device.type == "cuda")


def use_channels_last(cfg: TrainingConfig, device: torch.device) -> bool:
    return cfg.run.channels_last if cfg.run.channels_last is not None else device.type == "cuda"


class AETrainer:
    """Train a :class:`~rsisr.models.autoencoder.ResidualAutoencoder` and its discriminator."""

    stage = "ae"

    def __init__(self, cfg: TrainingConfig, device: torch.device, total_steps: int,
                 init: torch.nn.Module | None = None, metric_weights=None):
        from rsisr.api import build_autoencoder

        s = cfg.ae
        self.cfg = cfg
        self.device = device
        self.precision = cfg.run.precision
        self.channels_last = use_channels_last(cfg, device)
        self.disc_start = s.disc_start if s.disc_start is not None else total_steps // 4
        torch.manual_seed(cfg.train.seed)
        self.ae = build_autoencoder(cfg.model)
        if init is not None:
            self.ae.load_state_dict(init.state_dict())
        self.ae.to(device)
        if not s.train_encoder:
            # Only the decoder learns: the latent space stays the one ``init`` was trained to.
            self.ae.encoder.requires_grad_(False)
            self.ae.quant_conv.requires_grad_(False)
        self.disc = PatchDiscriminator(3, s.disc_channels, s.disc_layers).to(device)
        if self.channels_last:
            self.ae.to(memory_format=torch.channels_last)
            self.disc.to(memory_format=torch.channels_last)
        params = [p for p in self.ae.parameters() if p.requires_grad]
        self.opt = torch.optim.Adam(params, lr=s.lr, betas=tuple(s.betas))
        self.opt_d = torch.optim.Adam(self.disc.parameters(), lr=s.disc_lr or s.lr, betas=tuple(s.betas))
        self.scaler = make_scaler(device, self.precision)
        # Posterior samples z ~ q(z | hr, lr_up) are drawn from this generator (saved with the run).
        self.generator = torch.Generator(device).manual_seed(cfg.train.seed + 1)
        self.perceptual = _perceptual(s.perceptual_weight, s.perceptual_layers, metric_weights, device)
        self.loss_names = ("loss", "l1", "kl", "g", "d", "adv_weight") + (("lpips",) if self.perceptual else ())
        if cfg.run.compile:
            # The adaptive weight takes two gradients through the same graph (retain_graph=True),
            # which compiled backward functions only allow without donated buffers.
            from torch._functorch import config as functorch_config

            functorch_config.donated_buffer = False
        self.ae_fwd = torch.compile(self.ae) if cfg.run.compile else self.ae
        self.disc_fwd = torch.compile(self.disc) if cfg.run.compile else self.disc
        if s.adv_weight > 0:
            log.info("stage 1: L1 only for steps < %d, then L1 + KL + adversarial", self.disc_start)
        else:
            log.info("stage 1: L1 only for steps < %d, then L1 + KL (ae.adv_weight=0: no adversarial term)",
                     self.disc_start)
        if not s.train_encoder:
            log.info("stage 1: encoder frozen (ae.train_encoder=false), only the decoder learns")

    def prepare(self, hr: torch.Tensor) -> torch.Tensor:
        hr = hr.to(self.device, non_blocking=True)
        return hr.contiguous(memory_format=torch.channels_last) if self.channels_last else hr

    def train_step(self, hr: torch.Tensor, step: int) -> dict[str, torch.Tensor]:
        s = self.cfg.ae
        late = step >= self.disc_start
        adversarial = late and s.adv_weight > 0
        self.ae.train()
        self.disc.train()
        lr = make_lr(hr)
        pixels = hr[0].numel()
        with autocast(self.device, self.precision):
            sr, posterior = self.ae_fwd(hr, lr, sample=True, generator=self.generator)
            rec = l1_sum(sr, hr)
            out: dict[str, torch.Tensor] = {"l1": rec.detach() / pixels}
            if self.perceptual is not None:
                p = self.perceptual(sr.float(), hr.float()).mean()
                rec = rec + s.perceptual_weight * p * pixels
                out["lpips"] = p.detach()
            kl = posterior.kl().mean()
            out["kl"] = kl.detach()
            loss = rec
            if late:
                loss = rec + s.kl_weight * kl
            if adversarial:
                g = generator_loss(self.disc_fwd(sr))
                weight = adaptive_weight(rec, g, self.ae.decoder.tail[-1].weight, s.adv_weight)
                loss = loss + weight * g
                out["g"], out["adv_weight"] = g.detach(), weight.detach()
        self.opt.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.opt)
        if adversarial:
            with autocast(self.device, self.precision):
                d = hinge_d_loss(self.disc_fwd(hr), self.disc_fwd(sr.detach()))
            self.opt_d.zero_grad(set_to_none=True)
            self.scaler.scale(d).backward()
            self.scaler.step(self.opt_d)
            out["d"] = d.detach()
        self.scaler.update()
        # The optimised loss is on the summed scale; report it per pixel so it reads like the L1.
        out["loss"] = loss.detach().float() / pixels
        return out

    @torch.no_grad()
    def validate(self, hr: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Single-step SR for stage 1 = reconstruction D(lr, mode of E(hr, lr_up)). Returns (sr, hr)."""
        self.ae.eval()
        outs = []
        for chunk in hr.split(self.cfg.ae.batch_size):
            chunk = self.prepare(chunk)
            lr = make_lr(chunk)
            with autocast(self.device, self.precision):
                z = self.ae.encode(chunk, bicubic_up(lr, SCALE)).mode()
                outs.append(self.ae.decode(lr, z).float().cpu())
        return torch.cat(outs), hr

    def learning_rate(self) -> float:
        return float(self.opt.param_groups[0]["lr"])

    def state_dict(self) -> dict[str, Any]:
        return {
            "models": {"ae": self.ae.state_dict(), "disc": self.disc.state_dict()},
            "optimizers": {"ae": self.opt.state_dict(), "disc": self.opt_d.state_dict()},
            "scaler": self.scaler.state_dict(),
            "generator": self.generator.get_state(),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.ae.load_state_dict(state["models"]["ae"])
        self.disc.load_state_dict(state["models"]["disc"])
        self.opt.load_state_dict(state["optimizers"]["ae"])
        self.opt_d.load_state_dict(state["optimizers"]["disc"])
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self.generator.set_state(state["generator"])

    def export(self, path: Path) -> Path:
        """The trained autoencoder (``rsisr.load_autoencoder``; ``rsisr train lcm --ae``)."""
        return save_model(self.ae, path)


def check_perceptual_weights(weight: float, folder) -> None:
    """Before anything is written: the LPIPS(VGG) files must be in the metric weights ``folder``
    when ``weight`` > 0 (one-line errors naming what is missing). Never downloads."""
    if weight <= 0:
        return
    from rsisr.evaluation.perceptual import ENV_VAR, LPIPS_VGG_HEADS_FILE, VGG16_FILE, _weights_file

    if folder is None:
        raise ConfigError(
            f"ae.perceptual_weight={weight} needs the LPIPS(VGG) weights ({VGG16_FILE}, {LPIPS_VGG_HEADS_FILE}): "
            f"pass --metric-weights DIR (or set ${ENV_VAR}) with the folder that "
            "`../shared/tools/metric-weights DIR` writes, or set ae.perceptual_weight=0"
        )
    for name in (VGG16_FILE, LPIPS_VGG_HEADS_FILE):
        _weights_file(folder, name)


def _perceptual(weight: float, layers: int, folder, device: torch.device):
    """LPIPS(VGG) for the optional perceptual term, from the metric weights ``folder``, or None
    when the weight is 0."""
    if weight <= 0:
        return None
    from rsisr.evaluation.perceptual import build_lpips_local

    check_perceptual_weights(weight, folder)
    return build_lpips_local(folder, "vgg", layers).to(device)
