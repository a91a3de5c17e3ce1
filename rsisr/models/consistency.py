"""Noise schedule, consistency parameterisation (paper Eq. 8) and samplers.

Three layers as in k-diffusion: the network (:class:`~rsisr.models.unet.UNet`), the
parameterisation wrapper :class:`ConsistencyFunction` and sampler functions that take it.
Schedules and scalings are pure functions.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from rsisr.config import DiffusionConfig


def linear_betas(timesteps: int, beta_start: float, beta_end: float) -> torch.Tensor:
    """LDM's "linear" schedule: beta_t = linspace(sqrt(beta_start), sqrt(beta_end), T)[t] ** 2.

    (T,) float64.
    """
    return torch.linspace(beta_start**0.5, beta_end**0.5, timesteps, dtype=torch.float64) ** 2


def alphas_cumprod(betas: torch.Tensor) -> torch.Tensor:
    """alpha_bar_t = prod_{i<=t} (1 - beta_i) (paper Eq. 3). (T,) float64."""
    return torch.cumprod(1.0 - betas, dim=0)


def c_skip(t: torch.Tensor, timesteps: int, s: float = 10.0, sigma_data: float = 0.5) -> torch.Tensor:
    """c_skip(t) = sigma_data^2 / ((s t / T)^2 + sigma_data^2); c_skip(0) = 1."""
    x = s * t.double() / timesteps
    return sigma_data**2 / (x**2 + sigma_data**2)


def c_out(t: torch.Tensor, timesteps: int, s: float = 10.0, sigma_data: float = 0.5) -> torch.Tensor:
    """c_out(t) = (s t / T) / sqrt((s t / T)^2 + sigma_data^2); c_out(0) = 0."""
    x = s * t.double() / timesteps
    return x / torch.sqrt(x**2 + sigma_data**2)


def q_sample(z0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor, alpha_bar: torch.Tensor) -> torch.Tensor:
    """z_t = sqrt(alpha_bar_t) z0 + sqrt(1 - alpha_bar_t) eps (paper Eq. 3/4). t: (B,) long."""
    ab = alpha_bar.to(z0.device)[t].to(z0.dtype)[:, None, None, None]
    return ab.sqrt() * z0 + (1.0 - ab).sqrt() * noise


def sampling_timesteps(steps: int, timesteps: int) -> list[int]:
    """Timesteps visited by the ``steps``-step sampler, from T-1 down: 1 -> [T-1];
    4 (T=1000) -> [999, 749, 500, 250]."""
    if steps < 1:
        raise ValueError(f"steps must be at least 1, got {steps}")
    grid = torch.linspace(timesteps - 1, 0, steps + 1, dtype=torch.float64)[:-1]
    return [int(round(v)) for v in grid.tolist()]


class ConsistencyFunction(nn.Module):
    """f_theta(z_t, c, t) = c_skip(t) z_t + c_out(t) (z_t - sqrt(1 - ab_t) eps_theta(z_t, c, t)) / sqrt(ab_t)
    (paper Eq. 8), which satisfies the boundary condition f(z_0, c, 0) = z_0 (Eq. 7).
    With ``prediction = "x0"`` the UNet output F is z_0 itself: f = c_skip(t) z_t + c_out(t) F
    (Song et al. 2023, Eq. 5), with the same scalings and boundary condition.
    """

    def __init__(self, unet: nn.Module, cfg: DiffusionConfig):
        super().__init__()
        self.unet = unet
        self.cfg = cfg
        self.register_buffer(
            "alpha_bar", alphas_cumprod(linear_betas(cfg.timesteps, cfg.beta_start, cfg.beta_end)).float(),
            persistent=False,
        )

    def forward(self, z_t: torch.Tensor, cond: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        cfg = self.cfg
        pred = self.unet(z_t, t, cond).float()
        skip = c_skip(t, cfg.timesteps, cfg.boundary_s, cfg.sigma_data).float()[:, None, None, None]
        out = c_out(t, cfg.timesteps, cfg.boundary_s, cfg.sigma_data).float()[:, None, None, None]
        z_t32 = z_t.float()
        if cfg.prediction == "x0":
            z0_pred = pred
        else:
            ab = self.alpha_bar[t].to(torch.float32)[:, None, None, None]
            z0_pred = (z_t32 - (1.0 - ab).sqrt() * pred) / ab.sqrt()
        return (skip * z_t32 + out * z0_pred).to(z_t.dtype)


def sample(f: ConsistencyFunction, cond: torch.Tensor, noises: Sequence[torch.Tensor], steps: int = 1) -> torch.Tensor:
    """Consistency sampling (Song et al. 2023, Algorithm 1 of multistep sampling).

    ``noises`` holds one (B, Z, h, w) tensor per step: the first is z_T, each later one re-noises
    the current estimate of z_0 to the next lower timestep. The same noises give the same output.
    """
    ts = sampling_timesteps(steps, f.cfg.timesteps)
    if len(noises) < steps:
        raise ValueError(f"{steps} sampling steps need {steps} noise tensors, got {len(noises)}")
    b = cond.shape[0]
    z = noises[0].to(cond.dtype)
    z0 = f(z, cond, torch.full((b,), ts[0], dtype=torch.long, device=cond.device))
    for t, noise in zip(ts[1:], noises[1:]):
        tt = torch.full((b,), t, dtype=torch.long, device=cond.device)
        z = q_sample(z0, tt, noise.to(cond.dtype), f.alpha_bar)
        z0 = f(z, cond, tt)
    return z0
