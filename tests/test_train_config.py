"""Training configuration and data pipeline (no training)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from rsisr.errors import ConfigError, InputError
from rsisr.training import config as tc
from rsisr.training.data import CropDataset, StreamSampler, augment, is_held_out, scan_folder, split


def test_defaults_follow_the_paper():
    cfg = tc.resolve("ae")
    assert cfg.model.preset == "small"
    assert (cfg.ae.batch_size, cfg.ae.lr, cfg.ae.betas) == (8, 3.6e-5, (0.5, 0.9))
    assert (cfg.ae.kl_weight, cfg.ae.adv_weight, cfg.ae.perceptual_weight) == (1e-6, 0.5, 0.0)
    assert cfg.data.crop == 256
    lcm = tc.resolve("lcm")
    assert (lcm.lcm.batch_size, lcm.lcm.lr, lcm.lcm.ema_decay) == (16, 8e-5, 0.9999)
    assert lcm.total_steps(1600) == 200 * 1600 // 16  # 200 epochs


def test_layers_override_in_order_and_bare_keys_resolve(tmp_path):
    f = tmp_path / "c.json"
    f.write_text(json.dumps({"data": {"crop": 128}, "ae": {"lr": 1e-4}, "model": {"preset": "tiny", "unet": {"ch": 16}}}))
    cfg = tc.resolve("ae", files=[tc.load_config_file(f)], sets=tc.parse_set(["lr=2e-4", "unet.head_dim=16"]),
                     flags={"ae.batch_size": 4, "ae.lr": None})
    assert cfg.data.crop == 128 and cfg.ae.lr == 2e-4 and cfg.ae.batch_size == 4
    assert cfg.model.preset == "tiny" and cfg.model.unet.ch == 16 and cfg.model.unet.head_dim == 16
    assert cfg.model.autoencoder == tc.get_preset("tiny").autoencoder


def test_max_steps_replaces_epochs_and_vice_versa():
    cfg = tc.resolve("ae", flags={"ae.max_steps": 7})
    assert cfg.ae.max_steps == 7 and cfg.ae.epochs is None and cfg.total_steps(100) == 7
    again = tc.resolve("ae", base=cfg.to_dict(), flags={"ae.epochs": 2})
    assert again.ae.max_steps is None and again.total_steps(100) == 25 and again.total_steps(101) == 26


@pytest.mark.parametrize("key", ["ae.lrr", "nope", "model.unet.chh", "data.crop.x", "unet"])
def test_unknown_keys_are_named(key):
    with pytest.raises(ConfigError, match=key.split(".")[-1] if key != "unet" else "section"):
        tc.resolve("ae", sets={key: 1})


def test_bad_values_and_yaml_errors(tmp_path):
    with pytest.raises(ConfigError, match="data.crop"):
        tc.resolve("ae", sets={"data.crop": 100})
    with pytest.raises(ConfigError, match="lcm.kd"):
        tc.resolve("lcm", sets={"lcm.kd": "maybe"})
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        tc.load_config_file(bad)
    with pytest.raises(ConfigError, match="key=value"):
        tc.parse_set(["crop"])


def test_other_stage_section_is_checked_not_used():
    cfg = tc.resolve("ae", files=[{"lcm": {"batch_size": 3}, "ae": {"batch_size": 5}}])
    assert cfg.ae.batch_size == 5 and "lcm" not in cfg.to_dict()
    with pytest.raises(ConfigError, match="lcm.batchsize"):
        tc.resolve("ae", files=[{"lcm": {"batchsize": 3}}])


def test_config_differences_ignore_run_and_length():
    a = tc.resolve("ae", flags={"ae.max_steps": 10}).to_dict()
    b = tc.resolve("ae", flags={"ae.max_steps": 20, "run.workers": 3, "run.device": "cpu"}).to_dict()
    assert tc.config_differences(a, b) == []
    c = tc.resolve("ae", flags={"ae.max_steps": 10, "ae.kl_weight": 1e-5}).to_dict()
    assert [d[0] for d in tc.config_differences(a, c)] == ["ae.kl_weight"]


def test_example_config_resolves():
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "examples" / "train_small_cpu.yaml"
    data = tc.load_config_file(path)
    for stage in ("ae", "lcm"):
        cfg = tc.resolve(stage, files=[data])
        assert cfg.model.preset == "small" and cfg.data.crop % (4 * cfg.model.lr_multiple) == 0


def test_default_model_recipe_resolves():
    """examples/train_default*.yaml say what README's model card says the default model had."""
    from pathlib import Path

    examples = Path(__file__).resolve().parents[1] / "examples"
    main = tc.load_config_file(examples / "train_default.yaml")
    ae, lcm = tc.resolve("ae", files=[main]), tc.resolve("lcm", files=[main])
    assert (ae.ae.max_steps, ae.ae.disc_start, ae.ae.lr, ae.ae.batch_size, ae.data.crop) == (2400, 700, 2e-4, 8, 128)
    assert (lcm.lcm.max_steps, lcm.model.diffusion.prediction) == (9000, "x0")
    decoder = tc.load_config_file(examples / "train_default_decoder.yaml")
    with pytest.raises(ConfigError, match="--init"):
        tc.resolve("ae", files=[decoder], flags={"ae.train_encoder": False})
    dec = tc.resolve("ae", files=[decoder], flags={"ae.train_encoder": False, "ae.init": "runs/default_ae"})
    assert (dec.ae.max_steps, dec.ae.disc_start, dec.ae.adv_weight, dec.data.crop) == (900, 0, 0.5, 128)


# ----------------------------------------------------------------------------------------------
# Data


@pytest.fixture
def pngs(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(1)
    for i in range(5):
        Image.fromarray(rng.integers(0, 256, (70, 80, 3), dtype=np.uint8)).save(tmp_path / f"{i}.png")
    Image.fromarray(rng.integers(0, 256, (20, 20, 3), dtype=np.uint8)).save(tmp_path / "small.png")
    return tmp_path


def test_scan_skips_small_images_and_samples_are_deterministic(pngs):
    scan = scan_folder(pngs, 64)
    assert len(scan.images) == 5 and scan.too_small == 1 and scan.unreadable == 0
    ds = CropDataset(scan.images, 64, seed=3)
    a, b = ds[(2, 17)], ds[(2, 17)]
    assert a.shape == (3, 64, 64) and a.dtype == torch.float32 and torch.equal(a, b)
    assert -1.0 <= float(a.min()) and float(a.max()) <= 1.0
    assert not torch.equal(a, ds[(2, 18)])
    with pytest.raises(InputError, match="smaller than the 96x96 crop"):
        scan_folder(pngs, 96)


def test_stream_sampler_resumes_mid_epoch():
    full = StreamSampler(7, seed=5)
    it = iter(full)
    stream = [next(it) for _ in range(30)]
    resumed = iter(StreamSampler(7, seed=5, start=12))
    assert [next(resumed) for _ in range(18)] == stream[12:]
    # every pass is a permutation of all images
    assert sorted(i for i, _ in stream[7:14]) == list(range(7))


def test_augment_is_a_dihedral_transform():
    x = np.arange(3 * 4 * 4, dtype=np.float32).reshape(3, 4, 4)
    rng = np.random.default_rng(0)
    for _ in range(10):
        y = augment(x, rng)
        assert y.shape == x.shape and sorted(y[0].ravel()) == sorted(x[0].ravel())


def test_held_out_split_is_fixed(tmp_path):
    from rsisr.training.data import ImageRecord

    recs = [ImageRecord(str(tmp_path / f"{i:04d}.png"), 256, 256) for i in range(400)]
    train, val = split(recs, tmp_path, 0.05)
    assert 5 <= len(val) <= 40 and len(train) + len(val) == 400
    assert not set(r.path for r in train) & set(r.path for r in val)
    assert [is_held_out(r.path, tmp_path, 0.05) for r in recs] == [is_held_out(r.path, tmp_path, 0.05) for r in recs]
    assert split(recs[:1], tmp_path, 0.99)[0] == recs[:1]  # never leaves nothing to train on


def test_degrade_is_antialiased_bicubic_down_clamped():
    from rsisr.imageops import bicubic_down, degrade

    hr = torch.rand(2, 3, 32, 32) * 2 - 1
    assert torch.equal(degrade(hr), bicubic_down(hr, 4).clamp(-1, 1))


def test_geotiff_uint16_windows_are_scaled(make_geotiff, tmp_path):
    yy, xx = np.mgrid[0:128, 0:160]
    data = np.stack([1000 + 3000 * (np.sin(xx / 9.0 + b) + 1) / 2 for b in range(4)]).astype(np.uint16)
    make_geotiff(width=160, height=128, count=4, dtype="uint16", data=data, name="u16.tif")
    make_geotiff(width=100, height=90, count=1, dtype="uint16", data=data[:1, :90, :100], name="one.tif")
    scan = scan_folder(tmp_path, 64)
    assert len(scan.images) == 2 and all(r.scaling is not None for r in scan.images)
    ds = CropDataset(scan.images, 64, seed=0)
    for i in range(2):
        x = ds[(i, 0)]
        assert x.shape == (3, 64, 64) and -1 <= float(x.min()) < float(x.max()) <= 1
        assert float(x.max() - x.min()) > 0.5  # scaled to the data's range, not to 0..65535
    single = [r for r in scan.images if r.path.endswith("one.tif")][0]
    x = CropDataset([single], 64, seed=0)[(0, 0)]
    assert torch.equal(x[0], x[1]) and torch.equal(x[1], x[2])


def test_geotiff_nodata_windows_are_redrawn(make_geotiff, tmp_path):
    data = np.full((3, 128, 128), 120, np.uint8)
    data[:, :, :64] = 0  # left half is nodata
    make_geotiff(width=128, height=128, count=3, dtype="uint8", data=data, nodata=0, name="collar.tif")
    ds = CropDataset(scan_folder(tmp_path, 32).images, 32, seed=0, min_valid=0.9)
    for pos in range(8):
        x = ds[(0, pos)]
        assert float((x > -1).float().mean()) >= 0.9


def test_hr_scales_average_larger_windows_down(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(tmp_path / "big.png")
    Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(tmp_path / "small.png")
    images = scan_folder(tmp_path, 32).images
    plain = CropDataset(images, 32, seed=0)
    multi = CropDataset(images, 32, seed=0, hr_scales=(1, 2))
    big = [i for i, r in enumerate(images) if r.path.endswith("big.png")][0]
    small = 1 - big
    # The 40 px image cannot hold a 64 px window: it always gets factor 1, the same as (1,).
    assert all(torch.equal(plain[(small, p)], multi[(small, p)]) for p in range(6))
    # The 64 px image: factor 2 is the whole image averaged 2x2, in one of its 8 dihedral forms.
    full = np.asarray(Image.open(tmp_path / "big.png"), np.float32).transpose(2, 0, 1) / 255.0
    avg = torch.from_numpy(full.reshape(3, 32, 2, 32, 2).mean(axis=(2, 4))) * 2 - 1
    forms = [torch.rot90(t, k, (1, 2)) for t in (avg, avg.flip(2)) for k in range(4)]
    hits = [any(torch.allclose(multi[(big, p)], f, atol=1e-6) for f in forms) for p in range(16)]
    assert 0 < sum(hits) < 16  # some samples at factor 2, the others plain crops
    assert multi[(big, 3)].shape == (3, 32, 32)


def test_hr_scales_are_validated():
    with pytest.raises(ConfigError, match="hr_scales"):
        tc.DataConfig(hr_scales=(0,))
