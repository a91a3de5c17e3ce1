"""Resampling and value-range helpers shared by training, evaluation and inference.

Pixels inside the model are in [-1, 1]. ``bicubic_down`` is *the* degradation of the project:
training and ``rsisr evaluate`` both make LR images with it.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def bicubic_down(x: torch.Tensor, factor: int = 4) -> torch.Tensor:
    """Antialiased bicubic downsampling (like PIL's BICUBIC resize): (B, C, H, W) -> (B, C, H/f, W/f).

    H and W must be multiples of ``factor``.
    """
    h, w = x.shape[-2:]
    return F.interpolate(x, size=(h // factor, w // factor), mode="bicubic", antialias=True, align_corners=False)


def bicubic_up(x: torch.Tensor, factor: int = 4) -> torch.Tensor:
    """Bicubic upsampling (half-pixel centres, no antialiasing): (B, C, h, w) -> (B, C, f*h, f*w)."""
    h, w = x.shape[-2:]
    return F.interpolate(x, size=(h * factor, w * factor), mode="bicubic", align_corners=False)


def pad_to_multiple(x: torch.Tensor, multiple: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """Pad (B, C, H, W) at the bottom and right to sides that are multiples of ``multiple``.

    Reflect padding where the side allows it, else edge replication. Returns the padded tensor
    and the original (H, W). Only bottom/right: the top-left origin (and so the latent grid and
    the scene-coordinate noise) stays where it was.
    """
    h, w = x.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph == 0 and pw == 0:
        return x, (h, w)
    mode = "reflect" if ph < h and pw < w else "replicate"
    return F.pad(x, (0, pw, 0, ph), mode=mode), (h, w)


def uint8_to_unit(x: np.ndarray) -> np.ndarray:
    return x.astype(np.float32) / 255.0


def to_model_range(x01: torch.Tensor) -> torch.Tensor:
    """[0, 1] -> [-1, 1]."""
    return x01 * 2.0 - 1.0


def from_model_range(x: torch.Tensor) -> torch.Tensor:
    """[-1, 1] -> [0, 1], clamped."""
    return ((x + 1.0) * 0.5).clamp(0.0, 1.0)
