"""LCMSR inference model: decoder + CondNet + UNet (+ the latent scale factor).

Single-step inference (DESIGN.md, Inference): z_T ~ N(0, I) in latent shape,
z_0 = f_theta(z_T, c, T-1), sr = D(lr, z_0 / scale_factor). Multi-step (2-4) re-noises z_0 to
the next lower timestep and applies f again.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from rsisr.config import SCALE, ModelConfig
from rsisr.imageops import bicubic_up, pad_to_multiple
from rsisr.models.autoencoder import Decoder
from rsisr.models.consistency import ConsistencyFunction, sample
from rsisr.models.encoder import Encoder
from rsisr.models.unet import UNet


def build_condnet(cfg: ModelConfig) -> Encoder:
    """CondNet(lr_up): (B, C, H, W) -> (B, Z, H/8, W/8), the encoder architecture without KL
    (C = ``cfg.bands``)."""
    c = cfg.condnet
    return Encoder(cfg.bands, cfg.autoencoder.z_channels, c.ch, c.ch_mult, c.num_res_blocks, c.norm_groups)


class LCMSR(nn.Module):
    """The x4 inference model. ``forward(lr, noises)``: (B, C, h, w) in [-1, 1] -> (B, C, 4h, 4w),
    C = ``cfg.bands`` (3 for RGB)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.config = cfg
        self.decoder = Decoder(cfg.autoencoder, cfg.bands)
        self.condnet = build_condnet(cfg)
        self.consistency = ConsistencyFunction(UNet(cfg.unet, cfg.autoencoder.z_channels), cfg.diffusion)
        # Latents are scaled by 1/std(z) measured on training data (LDM "scale_by_std").
        self.register_buffer("scale_factor", torch.ones(()))

    @property
    def unet(self) -> UNet:
        return self.consistency.unet

    @property
    def device(self) -> torch.device:
        return self.scale_factor.device

    def latent_shape(self, h: int, w: int, batch: int = 1) -> tuple[int, int, int, int]:
        """Shape of the noise for an LR input of h x w: the padded LR halved. (B, Z, h', w')."""
        m = self.config.lr_multiple
        return (batch, self.config.autoencoder.z_channels, -(-h // m) * m // 2, -(-w // m) * m // 2)

    def forward(self, lr: torch.Tensor, noises: Sequence[torch.Tensor], steps: int = 1) -> torch.Tensor:
        """Super-resolve (B, C, h, w) in [-1, 1] with the given per-step noises of
        :meth:`latent_shape`; returns (B, C, 4h, 4w) in [-1, 1] (not clamped)."""
        h, w = lr.shape[-2:]
        lr_pad, z = self.predict_latent(lr, noises, steps)
        sr = self.decoder(lr_pad, z)
        return sr[..., : h * SCALE, : w * SCALE]

    def predict_latent(self, lr: torch.Tensor, noises: Sequence[torch.Tensor],
                       steps: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
        """The decoder's inputs for ``lr``: the LR padded to the model's multiple and the sampled
        latent z_0 / scale_factor (what ``forward`` decodes)."""
        lr_pad, _ = pad_to_multiple(lr, self.config.lr_multiple)
        expected = (lr.shape[0], self.config.autoencoder.z_channels, lr_pad.shape[-2] // 2, lr_pad.shape[-1] // 2)
        for noise in noises[:steps]:
            if tuple(noise.shape) != expected:
                raise ValueError(f"noise must have shape {expected}, got {tuple(noise.shape)}")
        cond = self.condnet(bicubic_up(lr_pad, SCALE))
        z0 = sample(self.consistency, cond, [n.to(lr.device) for n in noises], steps)
        return lr_pad, z0 / self.scale_factor.to(z0.dtype)

    def make_noises(
        self, lr_shape: Sequence[int], steps: int = 1, seed: int | None = None,
        generator: torch.Generator | None = None,
    ) -> list[torch.Tensor]:
        """Draw ``steps`` standard-normal noise tensors for an LR batch of shape (B, C, h, w)."""
        if generator is None:
            generator = torch.Generator()
            if seed is None:
                generator.seed()
            else:
                generator.manual_seed(int(seed))
        shape = self.latent_shape(lr_shape[-2], lr_shape[-1], lr_shape[0])
        return [torch.randn(shape, generator=generator) for _ in range(steps)]

    def upscale(self, image, steps: int = 1, seed: int | None = None, generator: torch.Generator | None = None,
                **options):
        """Super-resolve one in-memory image by 4x; same layout and dtype back.

        Runs through the tiling engine with ``rsisr upscale``'s scaling rules, on the model's
        device: see :func:`rsisr.array_io.upscale_image` for ``image``, ``scale=`` and the other
        keywords (``tile``, ``overlap``, ``batch_size``, ``device``, ``precision``).
        """
        from rsisr.array_io import upscale_image

        return upscale_image(self, image, steps=steps, seed=seed, generator=generator, **options)
