"""``rsisr evaluate`` of models that are not plain 8-bit RGB: N bands (``ModelConfig.bands``) or a
stored radiometric scaling (``ModelConfig.scaling``).

HR images are then GeoTIFFs read with rasterio: the model's bands (the first N that are not an
alpha band, as in training), scaled to [0, 1] with the model's stored scaling, else uint8 as is
and other dtypes by their own 0.1/99.9 percentiles (training's ``data.scale: auto``), then put on
the same 8-bit grid as every output (:func:`rsisr.imageops.to_8bit`). PSNR and SSIM are computed
per band and over all bands (PSNR of the MSE over every band, SSIM averaged over the bands, as
for RGB); LPIPS, FID and the figures use the model's red, green and blue bands
(``ModelConfig.rgb_bands``). A model that names none cannot be scored by them: asking for them
is a one-line error.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from rsisr.config import SCALE, ModelConfig
from rsisr.errors import InputError

RASTER_SUFFIXES = (".tif", ".tiff")


def is_plain_rgb(cfg: ModelConfig) -> bool:
    """True for the models ``rsisr evaluate`` reads images of with Pillow, as RGB: 3 bands, no stored scaling."""
    return cfg.bands == 3 and not cfg.scaling


def rgb_index(cfg: ModelConfig, wanted: tuple[str, ...], figures: bool) -> list[int] | None:
    """0-based channels of the model's red, green and blue bands; an InputError when LPIPS, FID
    or figures are asked for and the model names none."""
    rgb = cfg.rgb
    perceptual = [m.upper() for m in wanted if m in ("lpips", "fid")] + (["--figures"] if figures else [])
    if rgb is None and perceptual:
        raise InputError(f"{' and '.join(perceptual)} need the model's red, green and blue bands, and this {cfg.bands}-"
                         "band model names none (model.rgb_bands when training); evaluate it with --metrics psnr,ssim "
                         "and no --figures")
    return None if rgb is None else [b - 1 for b in rgb]


def read_hr_bands(path: Path, cfg: ModelConfig, min_side: int) -> torch.Tensor:
    """The model's bands of the GeoTIFF ``path`` as (1, N, H, W) float32 in [0, 255] on the 8-bit
    grid, cropped at the bottom/right to multiples of 4 (InputError for other files)."""
    from rsisr.imageops import to_8bit, to_model_range
    from rsisr.radiometry import resolve_scaling
    from rsisr.rasterio_io import open_raster, reading
    from rsisr.training.rasters import raster_bands

    if path.suffix.lower() not in RASTER_SUFFIXES:
        raise InputError(f"{path} is not a GeoTIFF; a model of {cfg.bands} bands"
                         f"{' with a stored scaling' if cfg.scaling else ''} is evaluated on GeoTIFFs")
    with open_raster(path) as src:
        bands = raster_bands(src, cfg.bands)
        if len(bands) != cfg.bands:
            raise InputError(f"{path} has 1 band; this model takes {cfg.bands}")
        h, w = (src.height // SCALE) * SCALE, (src.width // SCALE) * SCALE
        if min(h, w) < min_side:
            raise InputError(f"image {str(path)!r} is {src.width}x{src.height}; evaluation needs at least "
                             f"{min_side}x{min_side} pixels")
        with reading(path, "pixels"):
            raw = src.read(bands)[:, :h, :w]
        dtype = src.dtypes[0]
    scaling = cfg.band_scaling()
    if scaling is None:
        scaling = resolve_scaling("auto", dtype, len(bands), raw[:, ::4, ::4], None)
    x01 = torch.from_numpy(scaling.forward(raw))[None]
    return to_8bit(to_model_range(x01))


def per_band(fn, sr: torch.Tensor, hr: torch.Tensor) -> list[float]:
    """``fn`` (PSNR or SSIM of (B, C, H, W)) of each band of one image pair."""
    return [fn(sr[:, [k]], hr[:, [k]]).item() for k in range(sr.shape[1])]


def band_means(values: list[list[float]]) -> list[float] | None:
    """Per-band means over images of per-image lists (None when there are none)."""
    if not values:
        return None
    return [float(v) for v in np.mean(np.asarray(values, np.float64), axis=0)]
