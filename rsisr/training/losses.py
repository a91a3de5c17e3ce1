"""Loss terms of both stages. Tensor shapes are (B, C, H, W)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def l1_sum(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """|x - y| summed over (C, H, W), averaged over the batch (the LDM reference's scale, which
    the KL weight 1e-6 refers to)."""
    return (x.float() - y.float()).abs().sum() / x.shape[0]


def hinge_d_loss(logits_real: torch.Tensor, logits_fake: torch.Tensor) -> torch.Tensor:
    """Discriminator hinge loss: 0.5 (E[relu(1 - D(x))] + E[relu(1 + D(G(z)))])."""
    return 0.5 * (F.relu(1.0 - logits_real.float()).mean() + F.relu(1.0 + logits_fake.float()).mean())


def generator_loss(logits_fake: torch.Tensor) -> torch.Tensor:
    """Generator side of the hinge GAN: -E[D(G(z))]."""
    return -logits_fake.float().mean()


def adaptive_weight(rec_loss: torch.Tensor, g_loss: torch.Tensor, last_layer: torch.Tensor, scale: float) -> torch.Tensor:
    """LDM's adaptive adversarial weight: ||grad rec|| / (||grad g|| + 1e-4), clamped to
    [0, 1e4], detached, times ``scale``. Gradients are taken w.r.t. the decoder's last layer."""
    rec_grad = torch.autograd.grad(rec_loss, last_layer, retain_graph=True)[0]
    g_grad = torch.autograd.grad(g_loss, last_layer, retain_graph=True)[0]
    weight = torch.norm(rec_grad) / (torch.norm(g_grad) + 1e-4)
    return torch.clamp(weight, 0.0, 1e4).detach() * scale
