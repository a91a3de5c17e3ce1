"""Stage 2: latent consistency training (paper Sec. II-B, Algorithm 1; DESIGN.md Stage 2).

Per step, with the frozen stage-1 autoencoder E and the trained CondNet and UNet:

- z0 = scale_factor * E(hr, lr_up).sample(): a posterior *sample*, as LDM's
  ``get_first_stage_encoding`` (which the reference uses) does; the decoder was trained on
  samples. ``lcm.latent = mode`` takes the posterior mean instead.
- c = CondNet(lr_up) (at HR size, so c has the latent's shape).
- t+k ~ U{0 .. T-1}, t = max(t+k - k, 0), one eps for both noisy latents (Algorithm 1).
- L_CT = L1(f_theta(z_{t+k}, c, t+k), f_ema(z_t, c, t)) (Eq. 9); the target is the EMA network,
  without gradients. It uses the online condition c (detached): Algorithm 1 computes c once.
- L_KD = L1(c, z0) (Eq. 5; the reference uses MSE, the paper L1).
- L = L_CT + kd_weight L_KD. ``lcm.kd = false`` drops L_KD; ``lcm.consistency = false`` replaces
  L_CT by L1(f_theta(z_t, c, t), z0) with t ~ U{0 .. T-1} (the ablations of Table III).

The EMA (decay 0.9999, warm-up min(decay, (1 + n) / (10 + n))) covers CondNet and UNet; the
exported ``model.safetensors`` holds the EMA weights, the frozen decoder and the scale factor.
"""

from __future__ import annotations

import copy
import logging
from pathlib import Path
from typing import Any, Iterable, Mapping

import torch
import torch.nn.functional as F

from rsisr.checkpoint import save_model
from rsisr.config import SCALE
from rsisr.device import autocast
from rsisr.errors import ConfigError
from rsisr.imageops import bicubic_up, degrade
from rsisr.models.consistency import q_sample
from rsisr.models.lcmsr import LCMSR
from rsisr.training.config import TrainingConfig
from rsisr.training.state import ema_update
from rsisr.training.trainer import Trainer

log = logging.getLogger(__name__)

#: Noise seed of the validation samples (fixed, so validation PSNR moves only with the model).
VAL_NOISE_SEED = 1234


class LCMTrainer(Trainer):
    """Train CondNet + UNet of an :class:`~rsisr.models.lcmsr.LCMSR` on a frozen autoencoder."""

    stage = "lcm"
    loss_names = ("loss", "ct", "kd")

    def __init__(self, cfg: TrainingConfig, device: torch.device, autoencoder: torch.nn.Module):
        multiple = 4 * cfg.model.lr_multiple
        if cfg.data.crop % multiple:
            raise ConfigError(
                f"data.crop={cfg.data.crop} does not suit this UNet: stage 2 needs HR crops that are "
                f"multiples of {multiple} (the latent, crop/8, is halved {len(cfg.model.unet.ch_mult) - 1} times)"
            )
        super().__init__(cfg, device)
        s = cfg.lcm
        self.ae = autoencoder.to(device).eval().requires_grad_(False)
        self.model = LCMSR(cfg.model).to(device)
        self.model.decoder.load_state_dict(self.ae.decoder.state_dict())
        self.model.decoder.requires_grad_(False)
        self.ema = copy.deepcopy(self.model).requires_grad_(False).eval()
        if self.channels_last:
            for m in (self.ae, self.model, self.ema):
                m.to(memory_format=torch.channels_last)
        self.trainable = [*self.model.condnet.parameters(), *self.model.unet.parameters()]
        self.opt = torch.optim.AdamW(self.trainable, lr=s.lr, betas=tuple(s.betas), weight_decay=s.weight_decay)
        self.models = {"model": self.model, "ema": self.ema}
        self.optimizers = {"model": self.opt}
        self.ema_updates = 0
        #: sha256 of the autoencoder file, kept in the training state so a resume can check it.
        self.ae_sha256: str | None = None
        self.condnet_fwd = self.compiled(self.model.condnet)
        self.f_fwd = self.compiled(self.model.consistency)

    @torch.no_grad()
    def encode(self, hr: torch.Tensor, lr_up: torch.Tensor) -> torch.Tensor:
        """Unscaled latent z ~ q(z | hr, lr_up) (or its mode): (B, Z, H/8, W/8) float32."""
        with autocast(self.device, self.precision):
            posterior = self.ae.encode(hr, lr_up)
            z = posterior.sample(self.generator) if self.cfg.lcm.latent == "sample" else posterior.mode()
            return z.float()

    @torch.no_grad()
    def measure_scale(self, batches: Iterable[torch.Tensor]) -> float:
        """Set the scale factor to 1 / std(z) over training latents (LDM scale_by_std)."""
        zs = []
        for hr in batches:
            hr = self.prepare(hr)
            zs.append(self.encode(hr, bicubic_up(degrade(hr), SCALE)).flatten())
        std = float(torch.cat(zs).std())
        if not std > 0:
            raise ConfigError("the autoencoder's latents have zero spread on this data; is --ae a trained autoencoder?")
        for m in (self.model, self.ema):
            m.scale_factor.fill_(1.0 / std)
        log.info("latent std %.5g: scale factor %.5g", std, 1.0 / std)
        return 1.0 / std

    def train_step(self, hr: torch.Tensor, step: int) -> dict[str, torch.Tensor]:
        s = self.cfg.lcm
        d = self.cfg.model.diffusion
        self.model.condnet.train()
        self.model.consistency.train()
        lr_up = bicubic_up(degrade(hr), SCALE)
        z0 = self.model.scale_factor * self.encode(hr, lr_up)
        b = z0.shape[0]
        t_k = torch.randint(0, d.timesteps, (b,), generator=self.generator, device=self.device)
        noise = torch.randn(z0.shape, generator=self.generator, device=self.device)
        alpha_bar = self.model.consistency.alpha_bar
        with autocast(self.device, self.precision):
            cond = self.condnet_fwd(lr_up)
            pred = self.f_fwd(q_sample(z0, t_k, noise, alpha_bar), cond, t_k)
            if s.consistency:
                t = (t_k - d.k).clamp(min=0)
                with torch.no_grad():
                    target = self.ema.consistency(q_sample(z0, t, noise, alpha_bar), cond.detach(), t)
            else:
                target = z0
            ct = F.l1_loss(pred.float(), target.float())
            kd = F.l1_loss(cond.float(), z0)
            loss = ct + s.kd_weight * kd if s.kd else ct
        self.optimise(loss, self.opt)
        self.scaler.update()
        ema_update(self.ema.condnet, self.model.condnet, s.ema_decay, self.ema_updates)
        ema_update(self.ema.consistency, self.model.consistency, s.ema_decay, self.ema_updates)
        self.ema_updates += 1
        return {"loss": loss.detach(), "ct": ct.detach(), "kd": kd.detach()}

    def super_resolve(self, hr: torch.Tensor) -> torch.Tensor:
        """Single-step SR of the EMA model (:func:`validation_sr`)."""
        return validation_sr(self.ema, degrade(hr), self.device, self.precision)

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "ema_updates": self.ema_updates, "ae_sha256": self.ae_sha256}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        super().load_state_dict(state)
        self.ema_updates = int(state["ema_updates"])

    def export(self, path: Path) -> Path:
        """The inference model with the EMA weights (``rsisr.load_model``, ``rsisr upscale --model``)."""
        return save_model(self.ema, path)


def validation_sr(model: LCMSR, lr: torch.Tensor, device: torch.device, precision: str) -> torch.Tensor:
    """Single-step SR of ``model`` for the validation batch ``lr``, each image with the noise
    ``rsisr upscale --seed VAL_NOISE_SEED`` would give it (:func:`rsisr.noise.tile_noises`)."""
    from rsisr.noise import tile_noises

    noises = [torch.from_numpy(n).to(device) for n in tile_noises(
        model.latent_shape, VAL_NOISE_SEED, 1, [(0, 0)] * len(lr), *lr.shape[-2:])]
    with autocast(device, precision):
        return model(lr, noises, 1)
