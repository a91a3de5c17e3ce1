"""Cheap stand-in models with the engine's model interface (see :mod:`rsisr.upscale`).

They have no learned weights and a known receptive field, which makes the tiling engine testable
exactly (tiled == untiled) and gives the benchmarks a model whose cost is negligible:

- :class:`NearestX4`: nearest-neighbour x4 (receptive field: the pixel itself);
- :class:`BicubicX4`: bicubic x4 (half-pixel centres, as :func:`rsisr.imageops.bicubic_up`);
- :class:`ConvX4`: ``radius`` 3x3 convolutions at LR (zero padding), then nearest x4, so each
  output pixel depends on the LR pixels within ``radius`` of it;
- :class:`NoiseX4`: nearest x4 plus the latent noise upsampled x8, so the output depends on the
  noise exactly where it lies in the scene.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from rsisr.config import SCALE


class NearestX4(nn.Module):
    """(B, 3, h, w) -> nearest x4."""

    lr_multiple = 1

    def forward(self, lr: torch.Tensor, noises=(), steps: int = 1) -> torch.Tensor:
        return F.interpolate(lr, scale_factor=SCALE, mode="nearest")


class BicubicX4(nn.Module):
    """(B, 3, h, w) -> bicubic x4 (a smooth stand-in whose output over a scene is known exactly)."""

    lr_multiple = 1

    def forward(self, lr: torch.Tensor, noises=(), steps: int = 1) -> torch.Tensor:
        return F.interpolate(lr, scale_factor=SCALE, mode="bicubic", align_corners=False)


class ConvX4(nn.Module):
    """``radius`` fixed random 3x3 convolutions (tanh between) added to the input, then nearest x4."""

    lr_multiple = 1

    def __init__(self, radius: int = 2, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.radius = radius
        self.weights = nn.ParameterList(
            [nn.Parameter(torch.randn(3, 3, 3, 3, generator=g) * 0.3, requires_grad=False) for _ in range(radius)]
        )

    def forward(self, lr: torch.Tensor, noises=(), steps: int = 1) -> torch.Tensor:
        x = lr
        for w in self.weights:
            x = torch.tanh(F.conv2d(x, w, padding=1))
        return F.interpolate(lr + 0.5 * x, scale_factor=SCALE, mode="nearest")


class NoiseX4(nn.Module):
    """Nearest x4 plus 0.1 x the first noise tensor's channel 0, upsampled from the latent (LR/2)
    grid to HR (x8). ``latent_shape`` follows LCMSR's convention with a multiple of 2."""

    lr_multiple = 2

    def latent_shape(self, h: int, w: int, batch: int = 1) -> tuple[int, int, int, int]:
        m = self.lr_multiple
        return batch, 4, -(-h // m) * m // 2, -(-w // m) * m // 2

    def forward(self, lr: torch.Tensor, noises=(), steps: int = 1) -> torch.Tensor:
        h, w = lr.shape[-2:]
        n = F.interpolate(noises[0][:, :1], scale_factor=2 * SCALE, mode="nearest")[..., : SCALE * h, : SCALE * w]
        return F.interpolate(lr, scale_factor=SCALE, mode="nearest") + 0.1 * n
