"""LDM-style convolutional encoder, used twice: the KL encoder E(hr, lr_up) of the residual
autoencoder (paper Eq. 1) and CondNet(lr_up) (paper Eq. 5), which shares the architecture.

No attention (DESIGN.md). Three stride-2 downsamplings: (B, C_in, H, W) -> (B, C_out, H/8, W/8).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from rsisr.models.layers import Downsample, ResnetBlock, normalize


class Encoder(nn.Module):
    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        ch: int,
        ch_mult: tuple[int, ...],
        num_res_blocks: int,
        norm_groups: int,
    ):
        super().__init__()
        self.conv_in = nn.Conv2d(in_channels, ch, 3, padding=1)
        blocks: list[nn.Module] = []
        cur = ch
        for level, mult in enumerate(ch_mult):
            for _ in range(num_res_blocks):
                blocks.append(ResnetBlock(cur, ch * mult, norm_groups))
                cur = ch * mult
            if level != len(ch_mult) - 1:
                blocks.append(Downsample(cur))
        self.down = nn.Sequential(*blocks)
        self.mid = nn.Sequential(ResnetBlock(cur, cur, norm_groups), ResnetBlock(cur, cur, norm_groups))
        self.norm_out = normalize(cur, norm_groups)
        self.conv_out = nn.Conv2d(cur, out_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.mid(self.down(self.conv_in(x)))
        return self.conv_out(F.silu(self.norm_out(h)))
