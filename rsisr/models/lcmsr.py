"""LCMSR inference model: decoder + CondNet + UNet (+ the latent scale factor).

Single-step inference (DESIGN.md, Inference): z_T ~ N(0, I) in latent shape,
z_0 = f_theta(z_T, c, T-1), sr = D(lr, z_0 / scale_factor). Multi-step (2-4) re-noises z_0 to
the next lower timestep and applies f again.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torch import nn

from rsisr.config import SCALE, ModelConfig
from rsisr.errors import InputError
from rsisr.imageops import bicubic_up, from_model_range, pad_to_multiple, to_model_range
from rsisr.models.autoencoder import Decoder
from rsisr.models.consistency import ConsistencyFunction, sample
from rsisr.models.encoder import Encoder
from rsisr.models.unet import UNet


def build_condnet(cfg: ModelConfig) -> Encoder:
    """CondNet(lr_up): (B, 3, H, W) -> (B, Z, H/8, W/8), the encoder architecture without KL."""
    c = cfg.condnet
    return Encoder(3, cfg.autoencoder.z_channels, c.ch, c.ch_mult, c.num_res_blocks, c.norm_groups)


class LCMSR(nn.Module):
    """The x4 inference model. ``forward(lr, noises)``: (B, 3, h, w) in [-1, 1] -> (B, 3, 4h, 4w)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.config = cfg
        self.decoder = Decoder(cfg.autoencoder)
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
        """Super-resolve (B, 3, h, w) in [-1, 1] with the given per-step noises of
        :meth:`latent_shape`; returns (B, 3, 4h, 4w) in [-1, 1] (not clamped)."""
        lr_pad, (h, w) = pad_to_multiple(lr, self.config.lr_multiple)
        expected = (lr.shape[0], self.config.autoencoder.z_channels, lr_pad.shape[-2] // 2, lr_pad.shape[-1] // 2)
        for noise in noises[:steps]:
            if tuple(noise.shape) != expected:
                raise ValueError(f"noise must have shape {expected}, got {tuple(noise.shape)}")
        cond = self.condnet(bicubic_up(lr_pad, SCALE))
        z0 = sample(self.consistency, cond, [n.to(lr.device) for n in noises], steps)
        sr = self.decoder(lr_pad, z0 / self.scale_factor.to(z0.dtype))
        return sr[..., : h * SCALE, : w * SCALE]

    def make_noises(
        self, lr_shape: Sequence[int], steps: int = 1, seed: int | None = None,
        generator: torch.Generator | None = None,
    ) -> list[torch.Tensor]:
        """Draw ``steps`` standard-normal noise tensors for an LR batch of shape (B, 3, h, w)."""
        if generator is None:
            generator = torch.Generator()
            if seed is None:
                generator.seed()
            else:
                generator.manual_seed(int(seed))
        shape = self.latent_shape(lr_shape[-2], lr_shape[-1], lr_shape[0])
        return [torch.randn(shape, generator=generator) for _ in range(steps)]

    @torch.no_grad()
    def upscale(
        self, image, steps: int = 1, seed: int | None = None, generator: torch.Generator | None = None,
    ):
        """Super-resolve one in-memory image by 4x and return it in the input's layout and dtype.

        ``image``: numpy array HxWxC or CxHxW (C = 1 or 3), or a torch tensor CxHxW / BxCxHxW.
        uint8 is read as [0, 255], uint16 as [0, 65535], floats as [0, 1] (clipped on output).
        Single-band images are replicated to RGB and averaged back. Runs on the model's device.
        """
        if steps < 1:
            raise InputError(f"steps must be at least 1, got {steps}")
        x, restore = _to_batch(image)
        x = to_model_range(x).to(self.device)
        noises = self.make_noises(x.shape, steps, seed, generator)
        self.eval()
        y = from_model_range(self(x, noises, steps).float())
        return restore(y.cpu())


def _to_batch(image):
    """Convert an image to a (B, 3, h, w) float tensor in [0, 1] and a function restoring the
    original layout, channel count and dtype."""
    is_numpy = isinstance(image, np.ndarray)
    if not is_numpy and not isinstance(image, torch.Tensor):
        raise InputError(f"image must be a numpy array or a torch tensor, got {type(image).__name__}")
    t = torch.from_numpy(np.ascontiguousarray(image)) if is_numpy else image.detach().cpu()
    dtype = t.dtype
    if t.ndim == 2:
        t, layout = t[None], "hw"
    elif t.ndim == 3 and is_numpy and t.shape[-1] in (1, 3) and t.shape[0] not in (1, 3):
        t, layout = t.permute(2, 0, 1), "hwc"
    elif t.ndim == 3 and t.shape[0] in (1, 3):
        layout = "chw"
    elif t.ndim == 3 and t.shape[-1] in (1, 3):
        t, layout = t.permute(2, 0, 1), "hwc"
    elif t.ndim == 4 and not is_numpy and t.shape[1] in (1, 3):
        layout = "bchw"
    else:
        raise InputError(
            f"image of shape {tuple(image.shape)} is not HxWxC, CxHxW or BxCxHxW with 1 or 3 channels"
        )
    if layout != "bchw":
        t = t[None]
    if dtype == torch.uint8:
        maxval = 255.0
    elif dtype == torch.uint16 or (is_numpy and image.dtype == np.uint16):
        maxval = 65535.0
    elif dtype.is_floating_point:
        maxval = 1.0
    else:
        raise InputError(f"image dtype {dtype} is not supported; use uint8, uint16 or float")
    x = t.float() / maxval
    channels = x.shape[1]
    if channels == 1:
        x = x.expand(-1, 3, -1, -1)
    x = x.clamp(0.0, 1.0)

    def restore(y: torch.Tensor):
        if channels == 1:
            y = y.mean(dim=1, keepdim=True)
        if maxval != 1.0:
            y = torch.round(y * maxval)
        if layout != "bchw":
            y = y[0]
        if layout == "hwc":
            y = y.permute(1, 2, 0)
        elif layout == "hw":
            y = y[0]
        if is_numpy:
            return y.numpy().astype(image.dtype)
        return y.to(dtype)

    return x, restore
