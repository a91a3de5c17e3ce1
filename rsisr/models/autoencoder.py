"""Residual autoencoder (paper Sec. II-A, DESIGN.md Stage 1).

Encoder E(hr, lr_up) -> z (paper Eq. 1); decoder D(lr, z) -> sr (paper Eq. 2). The decoder's
global bicubic skip makes the latent carry only what bicubic misses.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from rsisr.config import SCALE, AutoencoderConfig
from rsisr.imageops import bicubic_up
from rsisr.models.encoder import Encoder
from rsisr.models.imdb import FRU
from rsisr.models.layers import ResnetBlock


class DiagonalGaussian:
    """KL posterior N(mean, exp(logvar)) over the latent; (B, 2Z, h, w) -> mean, logvar (B, Z, h, w)."""

    def __init__(self, moments: torch.Tensor):
        self.mean, logvar = torch.chunk(moments, 2, dim=1)
        self.logvar = logvar.clamp(-30.0, 20.0)
        self.std = torch.exp(0.5 * self.logvar)

    def sample(self, generator: torch.Generator | None = None) -> torch.Tensor:
        eps = torch.randn(self.mean.shape, generator=generator, device=self.mean.device, dtype=self.mean.dtype)
        return self.mean + self.std * eps

    def mode(self) -> torch.Tensor:
        return self.mean

    def kl(self) -> torch.Tensor:
        """KL(q || N(0, I)) summed over (C, H, W): (B,)."""
        return 0.5 * torch.sum(self.mean.pow(2) + self.logvar.exp() - 1.0 - self.logvar, dim=(1, 2, 3))


class Decoder(nn.Module):
    """D(lr, z): (B, C, h, w) in [-1, 1] and (B, Z, h/2, w/2) -> (B, C, 4h, 4w), C = ``bands``.

    Latent branch: conv Z -> ch*mult[-1], two middle ResNet blocks, then one level per
    ``ch_mult`` entry (deepest first) of ``num_res_blocks`` ResNet blocks with no spatial
    upsampling; each level's 1x1 "transfer" conv gives a side output h_i, upsampled (nearest) to
    LR size. SR branch: 3x3 conv, then feat = FRU_i(feat + h_i) for each level, a long skip from
    the shallow features (IMDN's), and the pixel-shuffle x4 tail plus bicubic x4 of the LR.
    """

    def __init__(self, cfg: AutoencoderConfig, bands: int = 3):
        super().__init__()
        ch, mult, groups, sr = cfg.ch, cfg.ch_mult, cfg.norm_groups, cfg.sr_channels
        cur = ch * mult[-1]
        self.latent_in = nn.Conv2d(cfg.z_channels, cur, 3, padding=1)
        self.latent_mid = nn.Sequential(ResnetBlock(cur, cur, groups), ResnetBlock(cur, cur, groups))
        self.latent_levels = nn.ModuleList()
        self.transfer = nn.ModuleList()
        for m in reversed(mult):
            blocks = []
            for _ in range(cfg.num_res_blocks):
                blocks.append(ResnetBlock(cur, ch * m, groups))
                cur = ch * m
            self.latent_levels.append(nn.Sequential(*blocks))
            self.transfer.append(nn.Conv2d(cur, sr, 1))
        self.head = nn.Conv2d(bands, sr, 3, padding=1)
        self.frus = nn.ModuleList(FRU(sr, cfg.fru_blocks, cfg.distill_rate) for _ in mult)
        self.body_out = nn.Conv2d(sr, sr, 3, padding=1)
        self.tail = nn.Sequential(
            nn.Conv2d(sr, 4 * sr, 3, padding=1),
            nn.PixelShuffle(2),
            nn.Conv2d(sr, 4 * sr, 3, padding=1),
            nn.PixelShuffle(2),
            nn.PReLU(sr),
            nn.Conv2d(sr, bands, 3, padding=1),
        )

    def side_outputs(self, z: torch.Tensor, size: tuple[int, int]) -> list[torch.Tensor]:
        """Latent branch: (B, Z, h/2, w/2) -> four (B, sr_channels, h, w) side outputs."""
        h = self.latent_mid(self.latent_in(z))
        outs = []
        for level, transfer in zip(self.latent_levels, self.transfer):
            h = level(h)
            outs.append(F.interpolate(transfer(h), size=size, mode="nearest"))
        return outs

    def forward(self, lr: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        sides = self.side_outputs(z, lr.shape[-2:])
        shallow = self.head(lr)
        feat = shallow
        for fru, side in zip(self.frus, sides):
            feat = fru(feat + side)
        feat = self.body_out(feat) + shallow
        return self.tail(feat) + bicubic_up(lr, SCALE)


class ResidualAutoencoder(nn.Module):
    """Stage-1 model: KL encoder on [lr_up, hr] (2 x ``bands`` channels; 6 for RGB) and the
    two-branch decoder."""

    def __init__(self, cfg: AutoencoderConfig, bands: int = 3):
        super().__init__()
        self.config = cfg
        self.bands = bands
        self.encoder = Encoder(2 * bands, 2 * cfg.z_channels, cfg.ch, cfg.ch_mult, cfg.num_res_blocks, cfg.norm_groups)
        self.quant_conv = nn.Conv2d(2 * cfg.z_channels, 2 * cfg.z_channels, 1)
        self.decoder = Decoder(cfg, bands)

    def encode(self, hr: torch.Tensor, lr_up: torch.Tensor) -> DiagonalGaussian:
        """E(hr, lr_up): (B, C, H, W) x2 -> posterior over (B, Z, H/8, W/8) (paper Eq. 1)."""
        return DiagonalGaussian(self.quant_conv(self.encoder(torch.cat([lr_up, hr], dim=1))))

    def decode(self, lr: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(lr, z)

    def forward(
        self, hr: torch.Tensor, lr: torch.Tensor, sample: bool = True, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, DiagonalGaussian]:
        posterior = self.encode(hr, bicubic_up(lr, SCALE))
        z = posterior.sample(generator) if sample else posterior.mode()
        return self.decode(lr, z), posterior
