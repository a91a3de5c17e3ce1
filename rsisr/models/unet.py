"""Denoiser eps_theta(z_t, c, t) (paper Eq. 8; DESIGN.md Stage 2).

LDM-style UNet: input concat(z_t, c) (B, 2Z, h, w); integer timestep embedding; ResNet blocks
with the embedding; self-attention only at the lowest resolution. h and w must be multiples of
2 ** (len(ch_mult) - 1): the caller pads (reflect) and crops.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from rsisr.config import UNetConfig
from rsisr.models.layers import Downsample, ResnetBlock, SelfAttention, Upsample, normalize, timestep_embedding


class _Level(nn.Module):
    """A ResNet block with the timestep embedding, optionally followed by self-attention."""

    def __init__(self, in_ch: int, out_ch: int, cfg: UNetConfig, temb_ch: int, attn: bool):
        super().__init__()
        self.res = ResnetBlock(in_ch, out_ch, cfg.norm_groups, temb_ch)
        self.attn = SelfAttention(out_ch, cfg.norm_groups, cfg.head_dim) if attn else None

    def forward(self, x: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        x = self.res(x, temb)
        return self.attn(x) if self.attn is not None else x


class UNet(nn.Module):
    """(B, 2Z, h, w), t (B,), -> eps (B, Z, h, w)."""

    def __init__(self, cfg: UNetConfig, z_channels: int = 4):
        super().__init__()
        self.config = cfg
        ch, mult = cfg.ch, cfg.ch_mult
        temb_ch = 4 * ch
        lowest = len(mult) - 1
        self.temb = nn.Sequential(nn.Linear(ch, temb_ch), nn.SiLU(), nn.Linear(temb_ch, temb_ch))
        self.conv_in = nn.Conv2d(2 * z_channels, ch, 3, padding=1)

        self.down = nn.ModuleList()
        self.downsample = nn.ModuleList()
        skips = [ch]
        cur = ch
        for level, m in enumerate(mult):
            blocks = nn.ModuleList()
            for _ in range(cfg.num_res_blocks):
                blocks.append(_Level(cur, ch * m, cfg, temb_ch, attn=level == lowest))
                cur = ch * m
                skips.append(cur)
            self.down.append(blocks)
            if level != lowest:
                self.downsample.append(Downsample(cur))
                skips.append(cur)

        self.mid1 = ResnetBlock(cur, cur, cfg.norm_groups, temb_ch)
        self.mid_attn = SelfAttention(cur, cfg.norm_groups, cfg.head_dim)
        self.mid2 = ResnetBlock(cur, cur, cfg.norm_groups, temb_ch)

        self.up = nn.ModuleList()
        self.upsample = nn.ModuleList()
        for level, m in reversed(list(enumerate(mult))):
            blocks = nn.ModuleList()
            for _ in range(cfg.num_res_blocks + 1):
                blocks.append(_Level(cur + skips.pop(), ch * m, cfg, temb_ch, attn=level == lowest))
                cur = ch * m
            self.up.append(blocks)
            if level != 0:
                self.upsample.append(Upsample(cur))

        self.norm_out = normalize(cur, cfg.norm_groups)
        self.conv_out = nn.Conv2d(cur, z_channels, 3, padding=1)

    def forward(self, z_t: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        temb = self.temb(timestep_embedding(t, self.config.ch).to(z_t.dtype))
        h = self.conv_in(torch.cat([z_t, cond], dim=1))
        hs = [h]
        for level, blocks in enumerate(self.down):
            for block in blocks:
                h = block(h, temb)
                hs.append(h)
            if level < len(self.downsample):
                h = self.downsample[level](h)
                hs.append(h)
        h = self.mid2(self.mid_attn(self.mid1(h, temb)), temb)
        for i, blocks in enumerate(self.up):
            for block in blocks:
                h = block(torch.cat([h, hs.pop()], dim=1), temb)
            if i < len(self.upsample):
                h = self.upsample[i](h)
        return self.conv_out(F.silu(self.norm_out(h)))
