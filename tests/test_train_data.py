"""Training data: the folder scan, deterministic crops, the sample stream, the held-out split,
GeoTIFF windows (value scaling, nodata) and multi-scale HR targets."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rsisr.errors import InputError
from rsisr.training.data import CropDataset, StreamSampler, augment, is_held_out, scan_folder, split


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
