"""PSNR and SSIM against closed forms and an independent SciPy implementation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from rsisr.errors import InputError
from rsisr.evaluation.metrics import gaussian_window, psnr, ssim


def _images(seed: int = 0, b: int = 2, h: int = 40, w: int = 48) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    base = (torch.sin(xx / 4.0) + torch.cos(yy / 6.0) + 2) / 4 * 255
    img = base.expand(b, 3, h, w) * torch.tensor([1.0, 0.8, 0.6]).view(1, 3, 1, 1)
    return (img + torch.randn(b, 3, h, w, generator=g) * 10).clamp(0, 255)


def test_psnr_of_a_constant_offset_matches_the_formula():
    hr = torch.full((1, 3, 16, 16), 100.0)
    sr = hr + 5.0
    assert psnr(sr, hr).item() == pytest.approx(10 * math.log10(255**2 / 25.0), abs=1e-9)


def test_psnr_is_per_image_and_infinite_for_identical_images():
    hr = _images().double()  # float64 so that +3 is exact
    sr = hr.clone()
    sr[1] += 3.0
    out = psnr(sr, hr)
    assert out.shape == (2,) and out.dtype == torch.float64
    assert math.isinf(out[0].item())
    assert out[1].item() == pytest.approx(10 * math.log10(255**2 / 9.0), abs=1e-9)


def test_gaussian_window_is_normalised_and_symmetric():
    w = gaussian_window()
    assert w.shape == (11, 11)
    assert w.sum().item() == pytest.approx(1.0, abs=1e-12)
    assert torch.equal(w, w.T) and torch.equal(w, w.flip(0))
    assert w[5, 5] == w.max()


def test_ssim_of_identical_images_is_one_and_of_constants_matches_the_closed_form():
    x = _images()
    assert torch.allclose(ssim(x, x), torch.ones(2, dtype=torch.float64), atol=1e-12)
    # Constant images: sigma = 0, so SSIM = (2ab + C1) / (a^2 + b^2 + C1).
    a, b = 120.0, 80.0
    c1 = (0.01 * 255) ** 2
    expected = (2 * a * b + c1) / (a * a + b * b + c1)
    got = ssim(torch.full((1, 3, 20, 20), a), torch.full((1, 3, 20, 20), b))
    assert got.item() == pytest.approx(expected, abs=1e-9)


def _ssim_reference(x: np.ndarray, y: np.ndarray) -> float:
    """Wang et al.'s SSIM with scipy.ndimage: Gaussian filter (sigma 1.5, 11 taps), borders cropped."""
    from scipy.ndimage import gaussian_filter

    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    r = 5  # truncate=3.5 at sigma 1.5 gives radius int(3.5 * 1.5 + 0.5) = 5, an 11-tap window

    def f(a):
        return gaussian_filter(a, sigma=1.5, truncate=3.5)[r:-r, r:-r]

    values = []
    for xc, yc in zip(x, y):
        mx, my = f(xc), f(yc)
        vx, vy, cxy = f(xc * xc) - mx**2, f(yc * yc) - my**2, f(xc * yc) - mx * my
        m = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
        values.append(m.mean())
    return float(np.mean(values))


def test_ssim_matches_an_independent_scipy_implementation():
    hr = _images(seed=1)
    sr = (hr + torch.randn(hr.shape, generator=torch.Generator().manual_seed(2)) * 20).clamp(0, 255)
    got = ssim(sr, hr)
    for i in range(2):
        ref = _ssim_reference(sr[i].double().numpy(), hr[i].double().numpy())
        assert got[i].item() == pytest.approx(ref, abs=1e-10)
    assert 0.0 < got.min().item() < 0.99


def test_ssim_decreases_with_more_noise_and_is_symmetric():
    hr = _images(seed=3, b=1)
    g = torch.Generator().manual_seed(4)
    noise = torch.randn(hr.shape, generator=g)
    mild, strong = (hr + 5 * noise).clamp(0, 255), (hr + 30 * noise).clamp(0, 255)
    assert ssim(strong, hr).item() < ssim(mild, hr).item() < 1.0
    assert ssim(mild, hr).item() == pytest.approx(ssim(hr, mild).item(), abs=1e-12)


def test_float32_inputs_give_float64_results():
    hr = _images().float()
    assert ssim(hr * 0.9, hr).dtype == torch.float64
    assert psnr(hr * 0.9, hr).dtype == torch.float64


def test_mismatched_or_too_small_inputs_are_rejected():
    with pytest.raises(InputError, match="same shape"):
        psnr(torch.zeros(1, 3, 8, 8), torch.zeros(1, 3, 8, 9))
    with pytest.raises(InputError, match="at least 11x11"):
        ssim(torch.zeros(1, 3, 8, 8), torch.zeros(1, 3, 8, 8))
