"""upscale_file on every real GeoTIFF of ../shared/data/geotiff: grid, CRS, dtype, bands,
nodata and masks, values (nearest stand-in) and the tiny model end to end."""


import pytest
import rasterio
from rasterio.windows import Window, bounds as window_bounds

from rsisr.errors import (
    BandSelectionWarning,
)
from rsisr.standins import NearestX4
from rsisr.upscale import upscale_file
from upscale_helpers import check_against_input, leftovers

pytestmark = pytest.mark.usefixtures("one_thread")


REAL = {
    # name: (bands used, expect a warning about the band choice)
    "rasterio_cogeo_rgb_u8_3857_0.6m.tif": ((1, 2, 3), False),
    "rasterio_RGB.byte_u8_32618_300m.tif": ((1, 2, 3), False),
    "landsat8_LC08_224078_crop1024_3band_u16_32621_30m.tif": ((1, 2, 3), False),
    "sentinel2_T33UUU_20160608_crop1024_1band_u16_32633_10m.tif": ((1,), False),
    "naip_m_4709963_se_14_2020_rgbn_u8_26914_5m.tif": ((1, 2, 3), True),
    "neon_SJER_image_477_rgb_u8_32611_0.1m.tif": ((1, 2, 3), False),
    "usgs_hro_colorado_rgb_u8_26913_0.15m.tif": ((1, 2, 3), False),
    "stars_L7_ETMs_6band_u8_31985_28.5m.tif": ((1, 2, 3), True),
}


pytestmark = pytest.mark.usefixtures("one_thread")


def crop_window(path, size=200):
    with rasterio.open(path) as s:
        return Window(0, 0, min(size, s.width), min(size, s.height))


@pytest.mark.parametrize("name", sorted(REAL))
def test_real_rasters_crop(name, geotiff_dir, tmp_path):
    """Each real raster, cut with --bounds (so --bounds is tested on every grid, incl. non-square pixels)."""
    path = geotiff_dir / name
    window = crop_window(path)
    with rasterio.open(path) as s:
        b = window_bounds(window, s.transform)
    bands, warns = REAL[name]
    out = tmp_path / "out.tif"
    if warns:
        with pytest.warns(BandSelectionWarning, match="using bands 1,2,3"):
            upscale_file(path, out, NearestX4(), bounds=b, device="cpu")
    else:
        upscale_file(path, out, NearestX4(), bounds=b, device="cpu")
    check_against_input(path, out, window, bands)
    assert leftovers(tmp_path) == []


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(REAL))
def test_real_rasters_whole(name, geotiff_dir, tmp_path):
    path = geotiff_dir / name
    bands, _ = REAL[name]
    out = tmp_path / "out.tif"
    with pytest.warns() if REAL[name][1] else _nullcontext():
        upscale_file(path, out, NearestX4(), device="cpu")
    check_against_input(path, out, crop_window(path, 10**6), bands)


class _nullcontext:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_tiny_model_on_a_real_raster_keeps_grid_and_mask(geotiff_dir, tmp_path, tiny_model_file):
    """The real model end to end (RGB.byte: nodata collar) on a crop across the collar."""
    from rsisr.checkpoint import file_sha256

    path = geotiff_dir / "rasterio_RGB.byte_u8_32618_300m.tif"
    window = Window(0, 0, 96, 80)
    with rasterio.open(path) as s:
        b = window_bounds(window, s.transform)
    out = tmp_path / "out.tif"
    result = upscale_file(path, out, tiny_model_file, bounds=b, device="cpu", tile=64, overlap=16, seed=3)
    assert result.path == out and result.tiles == 4 and (result.width, result.height) == (384, 320)
    check_against_input(path, out, window, (1, 2, 3), with_values=False)
    with rasterio.open(out) as o:
        tags = o.tags()
        assert tags["RSISR_MODEL_SHA256"] == file_sha256(tiny_model_file)
        assert (tags["RSISR_TILE"], tags["RSISR_OVERLAP"], tags["RSISR_SEED"], tags["RSISR_STEPS"]) == ("64", "16", "3", "1")
        data = o.read()
        assert data[:, o.dataset_mask() == 0].max() == 0  # nodata where the input had nodata


# -- synthetic rasters -----------------------------------------------------------------------
