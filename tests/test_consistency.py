"""Schedule and boundary scalings against their formulas; sampling determinism."""

import math

import pytest
import torch

from rsisr.config import DiffusionConfig
from rsisr.models.consistency import (
    ConsistencyFunction,
    alphas_cumprod,
    c_out,
    c_skip,
    linear_betas,
    q_sample,
    sample,
    sampling_timesteps,
)


def test_linear_betas_match_ldm_formula():
    betas = linear_betas(1000, 0.0015, 0.0155)
    assert betas.shape == (1000,)
    assert math.isclose(betas[0].item(), 0.0015, rel_tol=1e-12)
    assert math.isclose(betas[-1].item(), 0.0155, rel_tol=1e-12)
    mid = (math.sqrt(0.0015) + (math.sqrt(0.0155) - math.sqrt(0.0015)) * 500 / 999) ** 2
    assert math.isclose(betas[500].item(), mid, rel_tol=1e-12)
    assert torch.all(betas[1:] > betas[:-1])


def test_alphas_cumprod_is_the_product():
    betas = linear_betas(1000, 0.0015, 0.0155)
    ab = alphas_cumprod(betas)
    assert math.isclose(ab[10].item(), math.prod(1 - b for b in betas[:11].tolist()), rel_tol=1e-12)
    assert torch.all(ab[1:] < ab[:-1]) and 0 < ab[-1] < 0.01


def test_boundary_scalings():
    t = torch.tensor([0, 1, 100, 999])
    assert c_skip(t, 1000)[0].item() == 1.0
    assert c_out(t, 1000)[0].item() == 0.0
    x = 10 * 100 / 1000
    assert math.isclose(c_skip(t, 1000)[2].item(), 0.25 / (x**2 + 0.25), rel_tol=1e-12)
    assert math.isclose(c_out(t, 1000)[2].item(), x / math.sqrt(x**2 + 0.25), rel_tol=1e-12)
    # sigma_data and s are parameters, not constants
    assert math.isclose(c_skip(t, 1000, s=5.0, sigma_data=1.0)[2].item(), 1 / (0.25 + 1), rel_tol=1e-12)


def test_consistency_function_boundary_condition():
    """f(z_0, c, 0) == z_0 (paper Eq. 7) whatever the network predicts (up to the tiny
    c_out(0)=0 / alpha_bar_0 < 1 residual, which is exactly zero)."""
    unet = lambda z, t, c: torch.randn_like(z) * 100  # noqa: E731 - an arbitrary predictor
    f = ConsistencyFunction(unet, DiffusionConfig())
    z0 = torch.randn(2, 4, 8, 8)
    torch.testing.assert_close(f(z0, z0, torch.zeros(2, dtype=torch.long)), z0)


def test_x0_prediction_is_song_et_al_parameterisation():
    """prediction="x0": f = c_skip z_t + c_out F(z_t); same boundary condition; at t = T-1 the
    output is (almost) F itself, with no 1/sqrt(alpha_bar) factor on the network's output."""
    net_out = torch.randn(2, 4, 8, 8)
    unet = lambda z, t, c: net_out  # noqa: E731
    cfg = DiffusionConfig(prediction="x0")
    f = ConsistencyFunction(unet, cfg)
    z = torch.randn(2, 4, 8, 8)
    torch.testing.assert_close(f(z, z, torch.zeros(2, dtype=torch.long)), z)
    t = torch.tensor([999, 400])
    expected = c_skip(t, 1000)[:, None, None, None].float() * z + c_out(t, 1000)[:, None, None, None].float() * net_out
    torch.testing.assert_close(f(z, z, t), expected)
    # the eps form of the same network output is far away at t = T-1 (divided by sqrt(ab) = 0.026)
    eps_out = ConsistencyFunction(unet, DiffusionConfig())(z, z, t)
    assert (eps_out[0] - expected[0]).abs().mean() > 10 * (expected[0] - net_out[0]).abs().mean()


def test_q_sample_formula():
    ab = alphas_cumprod(linear_betas(1000, 0.0015, 0.0155)).float()
    z0, eps = torch.randn(1, 4, 2, 2), torch.randn(1, 4, 2, 2)
    t = torch.tensor([300])
    torch.testing.assert_close(q_sample(z0, t, eps, ab), ab[300].sqrt() * z0 + (1 - ab[300]).sqrt() * eps)


def test_sampling_timesteps():
    assert sampling_timesteps(1, 1000) == [999]
    assert sampling_timesteps(4, 1000) == [999, 749, 500, 250]
    with pytest.raises(ValueError):
        sampling_timesteps(0, 1000)


def test_same_noise_same_output(tiny_model):
    lr = torch.rand(1, 3, 16, 16) * 2 - 1
    noises = tiny_model.make_noises(lr.shape, 3, seed=7)
    with torch.no_grad():
        a = tiny_model(lr, noises, steps=3)
        b = tiny_model(lr, [n.clone() for n in noises], steps=3)
        c = tiny_model(lr, tiny_model.make_noises(lr.shape, 3, seed=8), steps=3)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_sample_needs_enough_noise(tiny_model):
    cond = torch.randn(1, 4, 8, 8)
    with pytest.raises(ValueError, match="2 noise tensors"):
        sample(tiny_model.consistency, cond, [torch.randn(1, 4, 8, 8)], steps=2)
