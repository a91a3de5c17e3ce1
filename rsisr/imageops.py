"""Resampling and value-range helpers shared by training, evaluation and inference.

Pixels inside the model are in [-1, 1]. One source for each rule that training and
``rsisr evaluate`` share: :func:`degrade` is *the* degradation (LR images of both are made with
it), :func:`to_8bit` *the* rounding of a model output to the values an 8-bit file holds (both
score those), and :func:`list_images` the image files of a folder.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from rsisr.config import SCALE
from rsisr.errors import InputError


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


def bicubic_support(a: int, b: int, n: int, factor: int = 4) -> tuple[int, int, int, int]:
    """The LR pixels that HR pixels [a, b) of :func:`bicubic_up` of an axis of ``n`` LR pixels
    read: (lo, hi) inside the axis, and how far the taps reach past its start and end (pixels
    that bicubic_up takes from the edge). The taps of HR pixel Y are LR pixels
    floor((Y + 0.5) / f - 0.5) - 1 .. + 2."""
    lo, hi = a // factor - 2, (b - 1) // factor + 3
    return max(lo, 0), min(hi, n), max(0, -lo), max(0, hi - n)


def bicubic_up_window(read, lr_shape: tuple[int, int], rows: tuple[int, int], cols: tuple[int, int],
                      factor: int = 4) -> torch.Tensor | None:
    """HR rows and cols [a, b) (scene coordinates) of :func:`bicubic_up` of a whole LR scene of
    ``lr_shape`` (H, W), computed from a read of only the LR pixels they need
    (:func:`bicubic_support`): (C, b - a, b' - a').

    ``read(r0, r1, c0, c1)`` returns (C, r1 - r0, c1 - c0) values (float64 keeps raster units
    exact), or None for all zeros (then this returns None). Past the scene's edge torch repeats
    the edge pixel, which replicate padding reproduces, so the result equals the whole scene's
    pixels exactly.
    """
    (ya, yb), (xa, xb) = rows, cols
    ra, rb, top, bottom = bicubic_support(ya, yb, lr_shape[0], factor)
    ca, cb, left, right = bicubic_support(xa, xb, lr_shape[1], factor)
    values = read(ra, rb, ca, cb)
    if values is None:
        return None
    x = F.pad(torch.as_tensor(values)[None], (left, right, top, bottom), mode="replicate")
    up = bicubic_up(x, factor)[0]
    y0, x0 = factor * (ra - top), factor * (ca - left)
    return up[:, ya - y0: yb - y0, xa - x0: xb - x0]


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


def degrade(hr: torch.Tensor) -> torch.Tensor:
    """THE degradation: HR (B, C, H, W) in [-1, 1] -> LR (B, C, H/4, W/4), :func:`bicubic_down`
    (antialiased bicubic /4), clamped to [-1, 1] like every input the model sees at inference."""
    return bicubic_down(hr, SCALE).clamp(-1.0, 1.0)


def to_8bit(x: torch.Tensor) -> torch.Tensor:
    """Model-range output [-1, 1] -> float32 values in {0, ..., 255} (clipped, rounded), on the
    CPU: what an 8-bit output file holds."""
    # float64 like rsisr.radiometry's inverse, so both round alike at .5 boundaries
    return torch.round(from_model_range(x.float()).double() * 255.0).float().cpu()


def list_images(folder: str | os.PathLike, suffixes: Sequence[str], what: str = "folder") -> list[Path]:
    """The files under ``folder`` (subfolders included) whose suffix is in ``suffixes``, sorted by
    path. An :class:`InputError` naming ``what`` (e.g. ``--data``) if the folder is missing or
    holds none."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"{what} {str(folder)!r} does not exist or is not a folder; "
                         f"give a folder of images ({', '.join(suffixes)})")
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in suffixes)
    if not files:
        raise InputError(f"{what} {str(folder)!r} holds no images ({', '.join(suffixes)}), "
                         "in it or in its subfolders")
    return files
