"""Information multi-distillation block (IMDB, Hui et al. 2019, paper ref. [15]) and the
feature refinement unit (FRU) of the decoder's SR branch (paper Fig. 2, DESIGN.md Stage 1).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class ContrastChannelAttention(nn.Module):
    """Contrast-aware channel attention: weights from (std + mean) over the spatial positions."""

    def __init__(self, ch: int, reduction: int = 16):
        super().__init__()
        hidden = max(ch // reduction, 1)
        self.fc = nn.Sequential(
            nn.Conv2d(ch, hidden, 1), nn.ReLU(inplace=True), nn.Conv2d(hidden, ch, 1), nn.Sigmoid()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(dim=(2, 3), keepdim=True)
        std = (x - mean).pow(2).mean(dim=(2, 3), keepdim=True).sqrt()
        return x * self.fc(std + mean)


class IMDB(nn.Module):
    """(B, C, H, W) -> (B, C, H, W). Three 3x3 convs each split off ``C * distill_rate``
    channels; a fourth conv makes the last slice; the slices are concatenated, re-weighted by
    contrast-aware channel attention, fused by a 1x1 conv and added to the input.
    LeakyReLU slope 0.05 as in IMDN.
    """

    def __init__(self, ch: int, distill_rate: float = 0.25):
        super().__init__()
        self.distilled = int(ch * distill_rate)
        self.remaining = ch - self.distilled
        self.c1 = nn.Conv2d(ch, ch, 3, padding=1)
        self.c2 = nn.Conv2d(self.remaining, ch, 3, padding=1)
        self.c3 = nn.Conv2d(self.remaining, ch, 3, padding=1)
        self.c4 = nn.Conv2d(self.remaining, self.distilled, 3, padding=1)
        self.cca = ContrastChannelAttention(self.distilled * 4)
        self.c5 = nn.Conv2d(self.distilled * 4, ch, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        d, r = self.distilled, self.remaining
        out = F.leaky_relu(self.c1(x), 0.05)
        d1, rest = torch.split(out, (d, r), dim=1)
        out = F.leaky_relu(self.c2(rest), 0.05)
        d2, rest = torch.split(out, (d, r), dim=1)
        out = F.leaky_relu(self.c3(rest), 0.05)
        d3, rest = torch.split(out, (d, r), dim=1)
        d4 = self.c4(rest)
        fused = self.c5(self.cca(torch.cat([d1, d2, d3, d4], dim=1)))
        return fused + x


class FRU(nn.Module):
    """Feature refinement unit: ``n_blocks`` IMDBs in sequence; their outputs are concatenated
    and compressed back to C channels by a 1x1 conv. (B, C, H, W) -> (B, C, H, W).
    """

    def __init__(self, ch: int, n_blocks: int, distill_rate: float = 0.25):
        super().__init__()
        self.blocks = nn.ModuleList(IMDB(ch, distill_rate) for _ in range(n_blocks))
        self.compress = nn.Conv2d(ch * n_blocks, ch, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outs = []
        for block in self.blocks:
            x = block(x)
            outs.append(x)
        return F.leaky_relu(self.compress(torch.cat(outs, dim=1)), 0.05)
