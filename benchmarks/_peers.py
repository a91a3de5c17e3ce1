"""Peer x4 super-resolution networks, written from their papers' descriptions, for speed
comparisons only (helper module of ``benchmarks/peers.py``, not a benchmark).

Weights are random: the time of a forward pass does not depend on their values. Every model
takes LR (B, 3, h, w) in [-1, 1] and returns (B, 3, 4h, 4w).

- :class:`RRDBNet`: ESRGAN's generator (Wang et al. 2018, Sec. 3.1 and Fig. 4), the network of
  Real-ESRGAN x4: 23 residual-in-residual dense blocks of 64 features, growth 32, residual
  scaling 0.2, two nearest x2 + conv upsampling stages. 16.7 M parameters.
- :class:`SwinIR`: SwinIR's lightweight x4 model (Liang et al. 2021, Sec. 3 and Sec. 4.1
  "lightweight SR"): embedding 60, 4 residual Swin transformer blocks (RSTB) of 6 Swin layers,
  window 8, 6 heads, MLP ratio 2, pixel-shuffle-direct upsampler. 0.9 M parameters.
- :class:`LatentDiffusionSR`: the cost shape of a latent-diffusion SR sampler such as ESA's
  LDSR-S2: a DDIM sampler (Song et al. 2021, Eq. 12 with eta = 0) of ``steps`` UNet calls on
  concat(z_t, c), then the decoder once, here with the ``paper`` preset's UNet, CondNet and
  decoder.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

# ---------------------------------------------------------------------------------------------
# ESRGAN / Real-ESRGAN: RRDBNet
# ---------------------------------------------------------------------------------------------


class ResidualDenseBlock(nn.Module):
    """Five 3x3 convs, each seeing all earlier features (dense), LeakyReLU 0.2 after the first
    four; the output is scaled by 0.2 and added to the input (ESRGAN Fig. 4)."""

    def __init__(self, nf: int = 64, gc: int = 32):
        super().__init__()
        self.convs = nn.ModuleList(nn.Conv2d(nf + i * gc, gc if i < 4 else nf, 3, padding=1) for i in range(5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = [x]
        for i, conv in enumerate(self.convs):
            h = conv(torch.cat(feats, dim=1))
            if i < 4:
                feats.append(F.leaky_relu(h, 0.2))
        return x + 0.2 * h


class RRDB(nn.Module):
    """Three dense blocks in a residual, again scaled by 0.2 (residual in residual)."""

    def __init__(self, nf: int = 64, gc: int = 32):
        super().__init__()
        self.blocks = nn.Sequential(*(ResidualDenseBlock(nf, gc) for _ in range(3)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + 0.2 * self.blocks(x)


class RRDBNet(nn.Module):
    """ESRGAN generator, x4: conv, 23 RRDBs, conv + long skip, (nearest x2, conv, LReLU) x 2,
    conv, LReLU, conv to 3 channels."""

    def __init__(self, nf: int = 64, nb: int = 23, gc: int = 32):
        super().__init__()
        self.conv_first = nn.Conv2d(3, nf, 3, padding=1)
        self.body = nn.Sequential(*(RRDB(nf, gc) for _ in range(nb)))
        self.conv_body = nn.Conv2d(nf, nf, 3, padding=1)
        self.conv_up1 = nn.Conv2d(nf, nf, 3, padding=1)
        self.conv_up2 = nn.Conv2d(nf, nf, 3, padding=1)
        self.conv_hr = nn.Conv2d(nf, nf, 3, padding=1)
        self.conv_last = nn.Conv2d(nf, 3, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feat = self.conv_first(x)
        feat = feat + self.conv_body(self.body(feat))
        for conv in (self.conv_up1, self.conv_up2):
            feat = F.leaky_relu(conv(F.interpolate(feat, scale_factor=2.0, mode="nearest")), 0.2)
        return self.conv_last(F.leaky_relu(self.conv_hr(feat), 0.2))


# ---------------------------------------------------------------------------------------------
# SwinIR (lightweight, x4)
# ---------------------------------------------------------------------------------------------


def window_partition(x: torch.Tensor, ws: int) -> torch.Tensor:
    """(B, H, W, C) -> (B * nW, ws * ws, C)."""
    b, h, w, c = x.shape
    x = x.view(b, h // ws, ws, w // ws, ws, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, ws * ws, c)


def window_reverse(windows: torch.Tensor, ws: int, h: int, w: int) -> torch.Tensor:
    """(B * nW, ws * ws, C) -> (B, H, W, C)."""
    c = windows.shape[-1]
    x = windows.view(-1, h // ws, w // ws, ws, ws, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, h, w, c)


def shift_mask(h: int, w: int, ws: int, shift: int, device: torch.device) -> torch.Tensor:
    """Attention mask of shifted windows (Swin, Sec. 3.2): (nW, ws*ws, ws*ws), 0 within a region
    and -100 across regions that the cyclic shift brought together."""
    img = torch.zeros(1, h, w, 1, device=device)
    n = 0
    for hs in (slice(0, -ws), slice(-ws, -shift), slice(-shift, None)):
        for wsl in (slice(0, -ws), slice(-ws, -shift), slice(-shift, None)):
            img[:, hs, wsl, :] = n
            n += 1
    win = window_partition(img, ws).squeeze(-1)
    mask = win[:, None, :] - win[:, :, None]
    return mask.masked_fill(mask != 0, -100.0).masked_fill(mask == 0, 0.0)


class WindowAttention(nn.Module):
    """Multi-head self-attention inside a window with a learned relative position bias."""

    def __init__(self, dim: int, ws: int, heads: int):
        super().__init__()
        self.heads, self.ws = heads, ws
        self.scale = (dim // heads) ** -0.5
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.bias_table = nn.Parameter(torch.randn((2 * ws - 1) ** 2, heads) * 0.02)
        coords = torch.stack(torch.meshgrid(torch.arange(ws), torch.arange(ws), indexing="ij")).flatten(1)
        rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0) + (ws - 1)
        self.register_buffer("bias_index", rel[..., 0] * (2 * ws - 1) + rel[..., 1], persistent=False)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        bw, n, c = x.shape
        q, k, v = self.qkv(x).view(bw, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        attn = (q * self.scale) @ k.transpose(-2, -1)
        attn = attn + self.bias_table[self.bias_index.view(-1)].view(n, n, -1).permute(2, 0, 1)[None]
        if mask is not None:
            nw = mask.shape[0]
            attn = attn.view(bw // nw, nw, self.heads, n, n) + mask[None, :, None]
            attn = attn.view(bw, self.heads, n, n)
        out = attn.softmax(dim=-1) @ v
        return self.proj(out.transpose(1, 2).reshape(bw, n, c))


class SwinLayer(nn.Module):
    """LN, (shifted) window attention, residual; LN, MLP (GELU), residual. (B, H, W, C)."""

    def __init__(self, dim: int, heads: int, ws: int, shift: int, mlp_ratio: float):
        super().__init__()
        self.ws, self.shift = ws, shift
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, ws, heads)
        self.norm2 = nn.LayerNorm(dim)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, h, w, c = x.shape
        y = self.norm1(x)
        mask = None
        if self.shift:
            y = torch.roll(y, (-self.shift, -self.shift), dims=(1, 2))
            mask = shift_mask(h, w, self.ws, self.shift, x.device).to(y.dtype)
        y = window_reverse(self.attn(window_partition(y, self.ws), mask), self.ws, h, w)
        if self.shift:
            y = torch.roll(y, (self.shift, self.shift), dims=(1, 2))
        x = x + y
        return x + self.mlp(self.norm2(x))


class RSTB(nn.Module):
    """Residual Swin transformer block: Swin layers (alternately shifted), a 3x3 conv, residual."""

    def __init__(self, dim: int, depth: int, heads: int, ws: int, mlp_ratio: float):
        super().__init__()
        self.layers = nn.ModuleList(SwinLayer(dim, heads, ws, 0 if i % 2 == 0 else ws // 2, mlp_ratio)
                                    for i in range(depth))
        self.conv = nn.Conv2d(dim, dim, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x
        for layer in self.layers:
            y = layer(y)
        return x + self.conv(y.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)


class SwinIR(nn.Module):
    """SwinIR-light x4: shallow conv, RSTBs, LN, conv + long skip, conv to 3 * 16 channels and
    pixel shuffle x4 ("pixelshuffledirect"). Inputs are reflect-padded to the window size."""

    def __init__(self, dim: int = 60, depths=(6, 6, 6, 6), heads: int = 6, ws: int = 8, mlp_ratio: float = 2.0):
        super().__init__()
        self.ws = ws
        self.conv_first = nn.Conv2d(3, dim, 3, padding=1)
        self.embed_norm = nn.LayerNorm(dim)  # patch_norm of the patch embedding
        self.blocks = nn.ModuleList(RSTB(dim, d, heads, ws, mlp_ratio) for d in depths)
        self.norm = nn.LayerNorm(dim)
        self.conv_after_body = nn.Conv2d(dim, dim, 3, padding=1)
        self.upsample = nn.Sequential(nn.Conv2d(dim, 3 * 16, 3, padding=1), nn.PixelShuffle(4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        ph, pw = -h % self.ws, -w % self.ws
        x = F.pad(x, (0, pw, 0, ph), mode="reflect")
        feat = self.conv_first(x)
        y = self.embed_norm(feat.permute(0, 2, 3, 1))
        for block in self.blocks:
            y = block(y)
        feat = feat + self.conv_after_body(self.norm(y).permute(0, 3, 1, 2))
        return self.upsample(feat)[..., : 4 * h, : 4 * w]


# ---------------------------------------------------------------------------------------------
# A 100-step latent-diffusion sampler (the cost shape of LDSR-S2)
# ---------------------------------------------------------------------------------------------


class LatentDiffusionSR(nn.Module):
    """DDIM (eta = 0) over ``steps`` evenly spaced timesteps of the LDM "linear" schedule:
    eps = UNet(z_t, t, c); z0 = (z_t - sqrt(1 - ab_t) eps) / sqrt(ab_t);
    z_prev = sqrt(ab_prev) z0 + sqrt(1 - ab_prev) eps; then the decoder once.
    The condition c = CondNet(bicubic x4 of the LR) is computed once, as in LCMSR."""

    def __init__(self, preset: str = "paper", steps: int = 100):
        super().__init__()
        import rsisr

        self.lcmsr = rsisr.build_model(preset)
        self.steps = steps

    def forward(self, lr: torch.Tensor, steps: int | None = None) -> torch.Tensor:
        from rsisr.config import SCALE
        from rsisr.imageops import bicubic_up, pad_to_multiple

        m = self.lcmsr
        steps = steps or self.steps
        lr_pad, (h, w) = pad_to_multiple(lr, m.config.lr_multiple)
        cond = m.condnet(bicubic_up(lr_pad, SCALE))
        ab = m.consistency.alpha_bar.to(cond.device)
        T = ab.shape[0]
        ts = torch.linspace(T - 1, 0, steps).round().long().tolist()
        gen = torch.Generator(device=cond.device).manual_seed(0)
        z = torch.randn(cond.shape, generator=gen, device=cond.device, dtype=cond.dtype)
        b = lr.shape[0]
        for i, t in enumerate(ts):
            a = ab[t]
            a_prev = ab[ts[i + 1]] if i + 1 < len(ts) else torch.ones((), device=ab.device)
            eps = m.unet(z, torch.full((b,), t, dtype=torch.long, device=cond.device), cond).float()
            z0 = (z.float() - (1 - a).sqrt() * eps) / a.sqrt()
            z = (a_prev.sqrt() * z0 + (1 - a_prev).sqrt() * eps).to(cond.dtype)
        sr = m.decoder(lr_pad, z / m.scale_factor.to(z.dtype))
        return sr[..., : h * SCALE, : w * SCALE]


def count_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
