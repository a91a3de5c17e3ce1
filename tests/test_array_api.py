"""``model.upscale`` on in-memory arrays: the tiled engine with the CLI's scaling, masks and
float checks (issue: untiled, full-range uint16, saturating floats, ignored masks)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import rasterio

from rsisr.array_io import upscale_image
from rsisr.errors import InputError
from rsisr.standins import BicubicX4, ConvX4, NearestX4
from rsisr.upscale import upscale_file


def test_array_equals_the_geotiff_run(tiny_model, tiny_model_file, geotiff_dir, tmp_path, one_thread):
    """The same pixels through model.upscale and rsisr upscale (same seed, tile): bit-identical."""
    path = geotiff_dir / "usgs_hro_colorado_rgb_u8_26913_0.15m.tif"
    upscale_file(path, tmp_path / "o.tif", tiny_model_file, seed=5, tile=64, overlap=16, device="cpu")
    with rasterio.open(path) as s, rasterio.open(tmp_path / "o.tif") as o:
        image = s.read().transpose(1, 2, 0)
        expected = o.read().transpose(1, 2, 0)
    out = tiny_model.upscale(image, seed=5, tile=64, overlap=16)
    assert out.dtype == np.uint8 and np.array_equal(out, expected)


def test_uint16_uses_the_cli_scaling(make_geotiff, tmp_path):
    rng = np.random.default_rng(1)
    data = (1000 + rng.gamma(2.0, 300.0, (3, 40, 56))).astype(np.uint16)
    data[0, 5, 7] = 30000  # a bright outlier far above the auto stretch
    path = make_geotiff(width=56, height=40, dtype="uint16", data=data)
    upscale_file(path, tmp_path / "o.tif", ConvX4(), device="cpu", tile=32, overlap=8)
    with rasterio.open(tmp_path / "o.tif") as o:
        expected = o.read()
    out = upscale_image(ConvX4(), data, seed=0, tile=32, overlap=8)
    assert out.dtype == np.uint16 and np.array_equal(out, expected)
    assert out.max() > 20000  # the outlier keeps its magnitude (bicubic x4 of it is carried over)
    # the old behaviour (0..65535 as the model's range) would squeeze this image into a few levels
    assert np.ptp(out[:, 40:120, 40:120]) > 500


def test_floats_outside_unit_range_are_refused_unless_scaled():
    image = np.linspace(0, 255, 16 * 20 * 3, dtype=np.float32).reshape(16, 20, 3)
    with pytest.raises(InputError, match=r"float image values must lie in \[0, 1\], found 0 to 255"):
        upscale_image(NearestX4(), image)
    out = upscale_image(NearestX4(), image, scale="0,255")
    assert out.dtype == np.float32 and abs(float(out.max()) - 255.0) < 1e-3
    np.testing.assert_allclose(out[::4, ::4], image, atol=1e-3)


def test_masked_array_mask_is_honoured():
    rng = np.random.default_rng(0)
    data = rng.integers(60, 200, (3, 32, 40)).astype(np.uint8)
    mask = np.zeros(data.shape, bool)
    mask[:, 8:20, 10:24] = True  # a hole, masked in every band
    mask[1, 0:4, 0:4] = True     # masked in one band only: still a valid pixel
    garbage, other = data.copy(), data.copy()
    garbage[:, 8:20, 10:24] = 255
    other[:, 8:20, 10:24] = 0
    a = upscale_image(ConvX4(radius=2), np.ma.MaskedArray(garbage, mask=mask), seed=0, tile=16, overlap=4)
    b = upscale_image(ConvX4(radius=2), np.ma.MaskedArray(other, mask=mask), seed=0, tile=16, overlap=4)
    assert isinstance(a, np.ma.MaskedArray)
    assert np.array_equal(np.ma.getmaskarray(a), mask.repeat(4, axis=1).repeat(4, axis=2))
    # what lies under the mask never reaches the valid pixels
    assert np.array_equal(a.filled(0), b.filled(0))
    plain = upscale_image(ConvX4(radius=2), garbage, seed=0, tile=16, overlap=4)
    valid = ~np.ma.getmaskarray(a)
    assert not np.array_equal(plain[valid], a.data[valid])  # without the mask the garbage would bleed in


def test_read_only_arrays_raise_no_warning():
    image = np.full((24, 24, 3), 100, np.uint8)
    image.flags.writeable = False
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = upscale_image(BicubicX4(), image)
    assert out.shape == (96, 96, 3) and (out == 100).all()


def test_large_image_is_tiled_in_bounded_pieces():
    """A 600 x 520 image never reaches the model in one piece (the old path ran it untiled)."""
    seen = []

    class Recording(NearestX4):
        def forward(self, lr, noises=(), steps=1):
            seen.append(tuple(lr.shape[-2:]))
            return super().forward(lr)

    out = upscale_image(Recording(), np.zeros((3, 520, 600), np.uint8), tile=128, overlap=16, batch_size=2)
    assert out.shape == (3, 2080, 2400) and max(max(s) for s in seen) <= 128 and len(seen) > 10
