"""upscale_file's values: radiometry of each dtype, nodata and masks never bleeding, band choice,
alpha bands."""

import json

import numpy as np
import pytest
import rasterio
import torch
from rasterio.enums import ColorInterp
from scipy.ndimage import binary_dilation

from rsisr.errors import (
    BandSelectionWarning,
)
from rsisr.standins import ConvX4, NearestX4
from rsisr.upscale import upscale_file
from upscale_helpers import up4

pytestmark = pytest.mark.usefixtures("one_thread")


def test_uint16_auto_scaling_is_recorded_and_inverted(make_geotiff, tmp_path):
    rng = np.random.default_rng(0)
    data = rng.integers(300, 4000, (3, 40, 50)).astype(np.uint16)
    src = make_geotiff(width=50, height=40, dtype="uint16", data=data)
    out = tmp_path / "o.tif"
    result = upscale_file(src, out, NearestX4(), device="cpu")
    scaling = json.loads(result.scaling)
    assert scaling["mode"] == "auto"
    np.testing.assert_allclose(scaling["lo"], np.percentile(data.reshape(3, -1), 0.1, axis=1))
    with rasterio.open(out) as o:
        assert json.loads(o.tags()["RSISR_SCALING"]) == scaling
        got = o.read().astype(np.int64)
    lo, hi = np.array(scaling["lo"])[:, None, None], np.array(scaling["hi"])[:, None, None]
    # Away from the values outside the stretch the stand-in's output comes back exactly; those
    # values themselves are not clipped (their bicubic x4 is carried over: test_radiometry_carry.py).
    near = up4(binary_dilation(((data < lo) | (data > hi)).any(axis=0), np.ones((5, 5), bool)))
    assert np.abs(got - up4(data.astype(np.int64)))[:, ~near].max() <= 1


def test_int16_scale_none_round_trips_negative_values(make_geotiff, tmp_path):
    data = np.arange(-600, 600, dtype=np.int16).reshape(1, 30, 40) * 20
    src = make_geotiff(width=40, height=30, count=1, dtype="int16", data=data)
    upscale_file(src, tmp_path / "o.tif", NearestX4(), scale="none", device="cpu")
    with rasterio.open(tmp_path / "o.tif") as o:
        assert o.dtypes[0] == "int16" and o.count == 1
        assert np.abs(o.read().astype(int) - up4(data.astype(int))).max() <= 1
        assert json.loads(o.tags()["RSISR_SCALING"])["mode"] == "none"


def test_float_nan_stays_nan_and_never_bleeds(make_geotiff, tmp_path):
    data = np.full((3, 32, 32), 0.25, np.float32)
    data[:, :, :8] = np.nan
    src = make_geotiff(width=32, height=32, dtype="float32", data=data)
    upscale_file(src, tmp_path / "o.tif", ConvX4(radius=2), scale="0,1", device="cpu")
    with rasterio.open(tmp_path / "o.tif") as o:
        out = o.read()
    assert np.isnan(out[:, :, :32]).all() and np.isfinite(out[:, :, 32:]).all()
    inner = out[:, 8:-8, 32:-8]  # away from the scene's own edges (the stand-in's zero padding, radius 2)
    np.testing.assert_allclose(inner, np.broadcast_to(inner[:, :1, :1], inner.shape), atol=1e-6)  # no trace of NaN


def test_nodata_never_bleeds_into_valid_pixels(make_geotiff, tmp_path):
    """A uniform field beside a nodata collar: with nodata filled before inference the
    convolutional stand-in sees no edge, so every valid output pixel is the same."""
    data = np.full((3, 40, 48), 200, np.uint8)
    data[:, :, :10] = 0
    data[:, 30:, :] = 0
    src = make_geotiff(width=48, height=40, nodata=0, data=data)
    upscale_file(src, tmp_path / "o.tif", ConvX4(radius=2), device="cpu", tile=32, overlap=8)
    with rasterio.open(tmp_path / "o.tif") as o:
        out, mask = o.read(), o.dataset_mask()
        assert o.nodata == 0
    assert np.array_equal(mask, up4((data[0] != 0).astype(np.uint8) * 255))
    assert np.all(out[:, mask == 0] == 0)
    inner = out[:, 8:120, 40:-8]  # valid, away from the scene's own edges (zero padding of the stand-in)
    assert np.all(inner == inner[:, :1, :1])


def test_valid_pixels_never_turn_into_nodata(make_geotiff, tmp_path):
    """nodata=255 declared on an image whose valid pixels saturate (the NEON quirk): the
    output mask is still the input's, x4 (saturated valid pixels step to 254 in band 1)."""
    data = np.full((3, 16, 16), 255, np.uint8)
    data[:, :4, :4] = 100  # (255, 255, 255) elsewhere is nodata by GDAL's rule...
    data[1, 8:, 8:] = 90  # ...except where one band differs: valid
    src = make_geotiff(width=16, height=16, nodata=255, data=data)
    upscale_file(src, tmp_path / "o.tif", NearestX4(), device="cpu")
    with rasterio.open(src) as s, rasterio.open(tmp_path / "o.tif") as o:
        assert np.array_equal(o.dataset_mask(), up4(s.dataset_mask()))
        out = o.read()
    assert out[0, 40, 40] == 255 and out[1, 40, 40] == 90


def test_single_band_and_band_choice(make_geotiff, tmp_path):
    src = make_geotiff(count=5)
    with pytest.warns(BandSelectionWarning, match="has 5 bands; using bands 1,2,3"):
        upscale_file(src, tmp_path / "a.tif", NearestX4(), device="cpu")
    upscale_file(src, tmp_path / "b.tif", NearestX4(), bands="4,3,2", device="cpu")
    upscale_file(src, tmp_path / "c.tif", NearestX4(), bands=[5], device="cpu")
    with rasterio.open(src) as s, rasterio.open(tmp_path / "b.tif") as b, rasterio.open(tmp_path / "c.tif") as c:
        assert b.count == 3 and np.array_equal(b.read(1), up4(s.read(4)))
        assert b.tags()["RSISR_BANDS"] == "4,3,2"
        assert c.count == 1 and np.array_equal(c.read(1), up4(s.read(5)))


def test_alpha_band_is_the_mask(make_geotiff, tmp_path):
    rng = np.random.default_rng(1)
    data = rng.integers(1, 255, (4, 24, 30)).astype(np.uint8)
    data[3] = 255
    data[3, :, :7] = 0
    src = make_geotiff(width=30, height=24, count=4, data=data, photometric="RGB", alpha="YES")
    with rasterio.open(src) as s:
        assert s.colorinterp[3] == ColorInterp.alpha
    upscale_file(src, tmp_path / "o.tif", NearestX4(), device="cpu")  # no band-choice warning
    with rasterio.open(src) as s, rasterio.open(tmp_path / "o.tif") as o:
        assert o.count == 4 and o.colorinterp == s.colorinterp
        assert np.array_equal(o.read(4), up4(data[3]))
        assert np.array_equal(o.dataset_mask(), up4(s.dataset_mask()))
        rgb = o.read([1, 2, 3])
        assert np.array_equal(rgb[:, :, 28:], up4(data[:3])[:, :, 28:])


def test_values_the_model_makes_equal_to_nodata_stay_valid_in_every_band(make_geotiff, tmp_path):
    """A model output that hits the nodata value inside valid pixels (dark water clipped to 0,
    say) must not punch holes in any band's mask: per-band nodata readers would show them."""

    class Black(NearestX4):
        def forward(self, lr, noises=(), steps=1):
            return torch.full_like(super().forward(lr), -1.0)  # 0 in every band

    data = np.full((3, 16, 20), 100, np.uint8)
    data[:, :4] = 0  # a nodata collar (0 in every band)
    data[0, 8:, :5] = 0  # band 1 alone is nodata here, as GDAL's per-band masks say
    src = make_geotiff(width=20, height=16, data=data, nodata=0)
    out = tmp_path / "black.tif"
    upscale_file(src, out, Black(), device="cpu")
    with rasterio.open(src) as s, rasterio.open(out) as o:
        assert np.array_equal(o.dataset_mask(), up4(s.dataset_mask()))
        for b in (1, 2, 3):
            assert np.array_equal(o.read_masks(b), up4(s.read_masks(b))), b
        values = o.read()
        assert values[:, o.dataset_mask() > 0].max() == 1  # moved one step off nodata
