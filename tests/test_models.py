"""Shape tests for every module on the tiny preset."""

import torch

from rsisr.config import PRESETS
from rsisr.models import FRU, IMDB, LCMSR, Decoder, Encoder, ResidualAutoencoder, UNet, build_condnet

TINY = PRESETS["tiny"]


def test_imdb_and_fru_keep_shape():
    x = torch.randn(2, 8, 12, 10)
    assert IMDB(8).forward(x).shape == x.shape
    assert FRU(8, 3).forward(x).shape == x.shape


def test_encoder_downsamples_by_eight():
    enc = Encoder(6, 8, 8, (1, 1, 2, 2), 1, 4)
    assert enc(torch.randn(1, 6, 64, 48)).shape == (1, 8, 8, 6)


def test_autoencoder_round_trip_shapes_and_kl():
    ae = ResidualAutoencoder(TINY.autoencoder)
    hr = torch.rand(2, 3, 64, 64) * 2 - 1
    lr = torch.rand(2, 3, 16, 16) * 2 - 1
    sr, posterior = ae(hr, lr)
    assert sr.shape == (2, 3, 64, 64)
    assert posterior.mean.shape == (2, 4, 8, 8)
    kl = posterior.kl()
    assert kl.shape == (2,) and torch.all(kl >= 0)


def test_decoder_global_bicubic_skip():
    dec = Decoder(TINY.autoencoder)
    for p in dec.tail[-1].parameters():  # zero the last conv: the output is the bicubic skip alone
        torch.nn.init.zeros_(p)
    lr = torch.rand(1, 3, 8, 8) * 2 - 1
    from rsisr.imageops import bicubic_up

    torch.testing.assert_close(dec(lr, torch.randn(1, 4, 4, 4)), bicubic_up(lr, 4))


def test_condnet_gives_latent_shape():
    net = build_condnet(TINY)
    assert net(torch.randn(1, 3, 64, 96)).shape == (1, 4, 8, 12)


def test_unet_shape_and_time_dependence():
    unet = UNet(TINY.unet)
    z = torch.randn(2, 4, 8, 8)
    c = torch.randn(2, 4, 8, 8)
    a = unet(z, torch.tensor([0, 0]), c)
    b = unet(z, torch.tensor([999, 999]), c)
    assert a.shape == (2, 4, 8, 8)
    assert not torch.allclose(a, b)


def test_lcmsr_pads_and_crops_any_size(tiny_model):
    for h, w in [(16, 16), (5, 7), (21, 34)]:
        lr = torch.rand(1, 3, h, w) * 2 - 1
        noises = tiny_model.make_noises(lr.shape, 2, seed=0)
        out = tiny_model(lr, noises, steps=2)
        assert out.shape == (1, 3, 4 * h, 4 * w)
        assert torch.isfinite(out).all()


def test_paper_preset_builds_on_meta_device():
    with torch.device("meta"):
        model = LCMSR(PRESETS["paper"])
    assert sum(p.numel() for p in model.parameters()) > 30_000_000
