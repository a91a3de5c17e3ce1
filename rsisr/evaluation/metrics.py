"""Full-reference pixel metrics: PSNR and SSIM on RGB images in [0, 255].

Conventions (also in the README's "Evaluate" section):

- Inputs are (B, 3, H, W) float tensors with values in [0, 255]; both are computed on all three
  RGB channels (no conversion to Y), with no border crop, and in float64.
- PSNR uses MAX = 255 and the mean squared error over all channels and pixels of one image.
- SSIM follows Wang et al. (2004): an 11x11 Gaussian window with sigma 1.5, K1 = 0.01,
  K2 = 0.03, L = 255, "valid" filtering (no padding, so the map is (H-10) x (W-10)); the map is
  averaged over its pixels per channel, then over the three channels.

Both return one value per image: a (B,) float64 tensor.
"""

from __future__ import annotations

import torch

from rsisr.errors import InputError

DATA_RANGE = 255.0
SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
SSIM_K1 = 0.01
SSIM_K2 = 0.03


def _check_pair(sr: torch.Tensor, hr: torch.Tensor, min_side: int = 1) -> None:
    if sr.shape != hr.shape:
        raise InputError(f"sr and hr must have the same shape, got {tuple(sr.shape)} and {tuple(hr.shape)}")
    if sr.ndim != 4:
        raise InputError(f"expected (B, C, H, W) tensors, got shape {tuple(sr.shape)}")
    if min(sr.shape[-2:]) < min_side:
        raise InputError(f"images must be at least {min_side}x{min_side} pixels, got {tuple(sr.shape[-2:])}")


def psnr(sr: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:
    """Peak signal-to-noise ratio in dB, 10 log10(255^2 / MSE): (B, C, H, W) x2 -> (B,) float64.

    Identical images give +inf.
    """
    _check_pair(sr, hr)
    diff = sr.detach().to(torch.float64) - hr.detach().to(torch.float64)
    mse = diff.pow(2).flatten(1).mean(dim=1)
    return 10.0 * torch.log10(DATA_RANGE**2 / mse)


def gaussian_kernel_1d(size: int = SSIM_WINDOW, sigma: float = SSIM_SIGMA) -> torch.Tensor:
    """Normalised 1-D Gaussian, (size,) float64."""
    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    return g / g.sum()


def gaussian_window(size: int = SSIM_WINDOW, sigma: float = SSIM_SIGMA) -> torch.Tensor:
    """Normalised 2-D Gaussian window, (size, size) float64, the outer product of the 1-D one."""
    g = gaussian_kernel_1d(size, sigma)
    return torch.outer(g, g)


def ssim(sr: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:
    """Structural similarity (Wang et al. 2004, Eq. 13): (B, C, H, W) x2 in [0, 255] -> (B,) float64.

    SSIM = (2 mu_x mu_y + C1)(2 sigma_xy + C2) / ((mu_x^2 + mu_y^2 + C1)(sigma_x^2 + sigma_y^2 + C2)),
    C1 = (K1 L)^2, C2 = (K2 L)^2, local statistics under an 11x11 Gaussian window (sigma 1.5),
    "valid" filtering; mean over the map, then over channels.
    """
    _check_pair(sr, hr, min_side=SSIM_WINDOW)
    x = sr.detach().to(torch.float64)
    y = hr.detach().to(torch.float64)
    g = gaussian_kernel_1d().to(x.device)

    def blur(t: torch.Tensor) -> torch.Tensor:
        # The 2-D Gaussian is separable: filter rows, then columns ("valid": no padding).
        # unfold + matmul is several times faster than a float64 conv2d on the CPU.
        return t.unfold(-1, SSIM_WINDOW, 1).matmul(g).unfold(-2, SSIM_WINDOW, 1).matmul(g)

    c1 = (SSIM_K1 * DATA_RANGE) ** 2
    c2 = (SSIM_K2 * DATA_RANGE) ** 2
    mu_x, mu_y, xx, yy, xy = blur(torch.stack([x, y, x * x, y * y, x * y]))
    var_x = xx - mu_x**2
    var_y = yy - mu_y**2
    cov_xy = xy - mu_x * mu_y
    ssim_map = ((2 * mu_x * mu_y + c1) * (2 * cov_xy + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    return ssim_map.mean(dim=(2, 3)).mean(dim=1)
