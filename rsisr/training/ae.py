"""Stage 1: the residual autoencoder (paper Sec. II-A and III-A, DESIGN.md Stage 1).

Loss (LDM's ``LPIPSWithDiscriminator`` as the reference uses it, on the paper's schedule):

- steps < ``ae.disc_start``: L1 only (paper: the first 50 of 200 epochs);
- afterwards: L1 (+ optional LPIPS) + ``kl_weight`` KL + w_adv * G, where G = -E[D(sr)] and
  w_adv = ``adv_weight`` * ||grad L_rec|| / (||grad G|| + 1e-4) (gradients w.r.t. the decoder's
  last conv), and the PatchGAN D is trained with the hinge loss on the same batch.

``ae.adv_weight = 0`` drops the adversarial term and the discriminator. ``ae.init`` (``--init``)
starts from a trained autoencoder; ``ae.train_encoder = false`` (``--decoder-only``) freezes its
encoder, so the latent space, and any stage-2 model trained on it, stay valid.

``ae.lcm`` (``--lcm``) fine-tunes the decoder of a stage-2 model on the latents that model
predicts in one step from the LR input (its CondNet and UNet frozen), instead of the encoder's
latents of the HR image: the decoder learns to decode what inference feeds it, errors included.
The KL term does not apply; the run exports that stage-2 model with the new decoder.
``ae.lcm_unet`` also trains its CondNet and UNet, end to end through the decoder: the whole
one-step model learns from the pixel losses.

Departure from the reference: its KL term is on from the first step (its ``disc_start`` only
gates the GAN); the paper says "only L1" for the first part, which we follow.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from rsisr.checkpoint import save_model
from rsisr.config import SCALE
from rsisr.device import autocast
from rsisr.errors import ConfigError
from rsisr.imageops import bicubic_up, degrade
from rsisr.training.config import TrainingConfig
from rsisr.training.discriminator import PatchDiscriminator
from rsisr.training.losses import adaptive_weight, generator_loss, hinge_d_loss, l1_sum
from rsisr.training.trainer import Trainer

log = logging.getLogger(__name__)


class AETrainer(Trainer):
    """Train a :class:`~rsisr.models.autoencoder.ResidualAutoencoder` and its discriminator."""

    stage = "ae"

    def __init__(self, cfg: TrainingConfig, device: torch.device, total_steps: int,
                 init: torch.nn.Module | None = None, metric_weights=None, lcm: torch.nn.Module | None = None):
        from rsisr.api import build_autoencoder

        super().__init__(cfg, device)
        s = cfg.ae
        self.disc_start = s.disc_start if s.disc_start is not None else total_steps // 4
        self.ae = build_autoencoder(cfg.model)
        if init is not None:
            self.ae.load_state_dict(init.state_dict())
        self.ae.to(device)
        self.lcm = _frozen_lcm(lcm, self.ae, device, s.lcm_unet)
        if not s.train_encoder or self.lcm is not None:
            # Only the decoder learns: the latent space stays the one ``init`` was trained to.
            self.ae.encoder.requires_grad_(False)
            self.ae.quant_conv.requires_grad_(False)
        self.disc = PatchDiscriminator(cfg.model.bands, s.disc_channels, s.disc_layers).to(device)
        if self.channels_last:
            for m in (self.ae, self.disc, self.lcm):
                if m is not None:
                    m.to(memory_format=torch.channels_last)
        params = [p for p in self.ae.parameters() if p.requires_grad]
        if self.lcm is not None and s.lcm_unet:
            seen = {id(p) for p in params}
            params += [p for p in self.lcm.parameters() if p.requires_grad and id(p) not in seen]
        self.opt = torch.optim.Adam(params, lr=s.lr, betas=tuple(s.betas))
        self.opt_d = torch.optim.Adam(self.disc.parameters(), lr=s.disc_lr or s.lr, betas=tuple(s.betas))
        self.models = {"ae": self.ae, "disc": self.disc}
        if self.lcm is not None and s.lcm_unet:
            self.models["lcm"] = self.lcm
        self.optimizers = {"ae": self.opt, "disc": self.opt_d}
        self.perceptual = _perceptual(s.perceptual_weight, s.perceptual_layers, metric_weights, device)
        rgb = perceptual_bands(cfg)
        # the channels LPIPS sees (None: all three of an RGB model, as they are)
        self.rgb = None if rgb is None or (cfg.model.bands, rgb) == (3, (1, 2, 3)) else [b - 1 for b in rgb]
        self.loss_names = ("loss", "l1", "kl", "g", "d", "adv_weight") + (("lpips",) if self.perceptual else ())
        if cfg.run.compile:
            # The adaptive weight takes two gradients through the same graph (retain_graph=True),
            # which compiled backward functions only allow without donated buffers.
            from torch._functorch import config as functorch_config

            functorch_config.donated_buffer = False
        self.ae_fwd = self.compiled(self.ae)
        self.disc_fwd = self.compiled(self.disc)
        self.dec_fwd = self.compiled(self.ae.decoder)
        if s.adv_weight > 0:
            log.info("stage 1: L1 only for steps < %d, then L1 + KL + adversarial", self.disc_start)
        else:
            log.info("stage 1: L1 only for steps < %d, then L1 + KL (ae.adv_weight=0: no adversarial term)",
                     self.disc_start)
        if self.lcm is not None and s.lcm_unet:
            log.info("end-to-end fine-tuning of the stage-2 model's CondNet, UNet and decoder (ae.lcm=%s)", s.lcm)
        elif self.lcm is not None:
            log.info("decoder fine-tuning on the stage-2 model's single-step latents (ae.lcm=%s)", s.lcm)
        elif not s.train_encoder:
            log.info("stage 1: encoder frozen (ae.train_encoder=false), only the decoder learns")

    def train_step(self, hr: torch.Tensor, step: int) -> dict[str, torch.Tensor]:
        s = self.cfg.ae
        late = step >= self.disc_start
        adversarial = late and s.adv_weight > 0
        self.ae.train()
        self.disc.train()
        lr = degrade(hr)
        pixels = hr[0].numel()
        with autocast(self.device, self.precision):
            sr, kl = self.reconstruct(hr, lr)
            rec = l1_sum(sr, hr)
            out: dict[str, torch.Tensor] = {"l1": rec.detach() / pixels}
            if self.perceptual is not None:
                a, b = (sr, hr) if self.rgb is None else (sr[:, self.rgb], hr[:, self.rgb])
                p = self.perceptual(a.float(), b.float()).mean()
                rec = rec + s.perceptual_weight * p * pixels
                out["lpips"] = p.detach()
            out["kl"] = kl.detach()
            loss = rec
            if late:
                loss = rec + s.kl_weight * kl
            if adversarial:
                g = generator_loss(self.disc_fwd(sr))
                weight = adaptive_weight(rec, g, self.ae.decoder.tail[-1].weight, s.adv_weight)
                loss = loss + weight * g
                out["g"], out["adv_weight"] = g.detach(), weight.detach()
        self.optimise(loss, self.opt)
        if adversarial:
            with autocast(self.device, self.precision):
                d = hinge_d_loss(self.disc_fwd(hr), self.disc_fwd(sr.detach()))
            self.optimise(d, self.opt_d)
            out["d"] = d.detach()
        self.scaler.update()
        # The optimised loss is on the summed scale; report it per pixel so it reads like the L1.
        out["loss"] = loss.detach().float() / pixels
        return out

    def reconstruct(self, hr: torch.Tensor, lr: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The decoder's output for a training batch and the posterior's KL term: D(lr, z) with z
        a sample of E(hr, lr_up), or with ``ae.lcm`` the stage-2 model's single-step latent for
        ``lr`` from fresh noise (KL 0: no posterior)."""
        if self.lcm is None:
            sr, posterior = self.ae_fwd(hr, lr, sample=True, generator=self.generator)
            return sr, posterior.kl().mean()
        noise = torch.randn(self.lcm.latent_shape(*lr.shape[-2:], lr.shape[0]), generator=self.generator,
                            device=self.device)
        with torch.set_grad_enabled(self.cfg.ae.lcm_unet):
            lr_pad, z = self.lcm.predict_latent(lr, [noise], 1)
        sr = self.dec_fwd(lr_pad, z)
        return sr[..., : hr.shape[-2], : hr.shape[-1]], torch.zeros((), device=self.device)

    def super_resolve(self, hr: torch.Tensor) -> torch.Tensor:
        """Single-step SR for stage 1 = reconstruction D(lr, mode of E(hr, lr_up)); with ``ae.lcm``,
        the stage-2 model's single-step SR with the decoder being trained."""
        self.ae.eval()
        lr = degrade(hr)
        if self.lcm is not None:
            from rsisr.training.lcm import validation_sr

            return validation_sr(self.lcm, lr, self.device, self.precision)
        with autocast(self.device, self.precision):
            z = self.ae.encode(hr, bicubic_up(lr, SCALE)).mode()
            return self.ae.decode(lr, z)

    def export(self, path: Path) -> Path:
        """The trained autoencoder (``rsisr.load_autoencoder``; ``rsisr train lcm --ae``); with
        ``ae.lcm``, the stage-2 model with the trained decoder (``rsisr upscale --model``)."""
        return save_model(self.ae if self.lcm is None else self.lcm, path)


def _frozen_lcm(lcm: torch.nn.Module | None, ae: torch.nn.Module, device: torch.device, train: bool = False):
    """The stage-2 model of ``ae.lcm`` on ``device`` in eval mode, its CondNet and UNet frozen
    (trainable with ``train``) and its decoder replaced by ``ae``'s, which starts from the stage-2
    model's decoder; or None."""
    if lcm is None:
        return None
    ae.decoder.load_state_dict(lcm.decoder.state_dict())
    lcm = lcm.to(device).eval().requires_grad_(train)
    lcm.decoder = ae.decoder
    return lcm


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


def perceptual_bands(cfg: TrainingConfig) -> tuple[int, int, int] | None:
    """The model's bands (1-based) that the LPIPS term sees as red, green and blue: ``ae.perceptual_bands``,
    else the model's :attr:`~rsisr.config.ModelConfig.rgb`; None when the term is off. A one-line
    ConfigError for bands the model does not have, or a term that is on with no such bands."""
    s, n = cfg.ae, cfg.model.bands
    if s.perceptual_bands and max(s.perceptual_bands) > n:
        raise ConfigError(f"ae.perceptual_bands {','.join(map(str, s.perceptual_bands))}: the model has bands 1 to {n} "
                          "only; name three of them (red, green, blue)")
    if s.perceptual_weight <= 0:
        return None
    bands = tuple(s.perceptual_bands) or cfg.model.rgb
    if bands is None:
        raise ConfigError(f"ae.perceptual_weight={s.perceptual_weight} needs three of this {n}-band model's bands as "
                          "red, green and blue for LPIPS: set ae.perceptual_bands (e.g. 3,2,1) or model.rgb_bands, "
                          "or set ae.perceptual_weight=0")
    return bands


def _perceptual(weight: float, layers: int, folder, device: torch.device):
    """LPIPS(VGG) for the optional perceptual term, from the metric weights ``folder``, or None
    when the weight is 0."""
    if weight <= 0:
        return None
    from rsisr.evaluation.perceptual import build_lpips_local

    check_perceptual_weights(weight, folder)
    return build_lpips_local(folder, "vgg", layers).to(device)
