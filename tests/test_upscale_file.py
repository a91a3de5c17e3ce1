"""upscale_file on real and synthetic GeoTIFFs: georeferencing, nodata and masks, radiometry,
output options (COG), atomic writes and every bad input."""

import json
import os
import struct
from pathlib import Path

import numpy as np
from scipy.ndimage import binary_dilation
import pytest
import rasterio
import torch
from affine import Affine
from rasterio.enums import ColorInterp
from rasterio.windows import Window, bounds as window_bounds

from rsisr.errors import (
    BandSelectionWarning, CheckpointError, ConfigError, GeoreferencingWarning, InputError, OutputError,
)
from rsisr.standins import ConvX4, NearestX4
from rsisr.upscale import upscale_file

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


def up4(a):
    return a.repeat(4, axis=-2).repeat(4, axis=-1)


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if "rsisr-tmp" in p.name or p.suffix in (".xml", ".msk"))


def check_against_input(src_path, out_path, window, bands, with_values=True):
    """What a GIS analyst would check: grid, CRS, dtype, bands, nodata, mask, and (nearest
    stand-in) that valid pixels are the input's, x4."""
    with rasterio.open(src_path) as s, rasterio.open(out_path) as o:
        assert o.crs == s.crs
        assert o.transform.almost_equals(s.window_transform(window) @ Affine.scale(0.25), precision=1e-9)
        np.testing.assert_allclose(o.bounds, window_bounds(window, s.transform), rtol=0, atol=1e-6)
        assert (o.width, o.height) == (4 * window.width, 4 * window.height)
        assert o.dtypes[0] == s.dtypes[0]
        assert o.count == len(bands)
        assert o.nodata == s.nodata
        assert o.colorinterp == tuple(s.colorinterp[b - 1] for b in bands)
        assert o.descriptions == tuple(s.descriptions[b - 1] for b in bands)
        mask_in = s.dataset_mask(window=window)
        assert np.array_equal(o.dataset_mask(), up4(mask_in))
        if s.nodata is not None:  # each band's own nodata mask too (what per-band nodata readers see)
            for k, b in enumerate(bands, start=1):
                assert np.array_equal(o.read_masks(k), up4(s.read_masks(b, window=window))), (src_path, b)
        assert o.profile["tiled"] and o.profile["compress"] == "deflate"
        tags = o.tags()
        assert tags["RSISR_BANDS"] == ",".join(map(str, bands)) and "RSISR_SCALING" in tags
        if with_values:
            out = o.read().astype(np.int64)
            ref = up4(s.read(list(bands), window=window)).astype(np.int64)
            valid = o.dataset_mask() > 0
            if s.dtypes[0] == "uint16":
                # Near values outside the stretch the output is the bicubic x4 of the true values
                # (test_radiometry_carry.py); elsewhere it is the stand-in's, exactly.
                scaling = json.loads(tags["RSISR_SCALING"])
                lo = np.array(scaling["lo"])[:, None, None]
                hi = np.array(scaling["hi"])[:, None, None]
                raw = s.read(list(bands), window=window)
                clipped = ((raw < lo) | (raw > hi)).any(axis=0)
                near = up4(binary_dilation(clipped, np.ones((5, 5), bool)))
                valid &= ~near
            diff = np.abs(out - ref)[:, valid]
            # exact, except pixels moved one step off nodata (valid in the input, nodata in these bands)
            assert diff.max(initial=0) <= (1 if s.nodata is not None else 0)


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


def test_descriptions_units_and_rotated_transform(make_geotiff, tmp_path):
    rotated = Affine.translation(500000, 5000000) @ Affine.rotation(20) @ Affine.scale(10, -10)
    src = make_geotiff(transform=rotated)
    with rasterio.open(src, "r+") as s:
        s.set_band_description(2, "green band")
        s.set_band_unit(2, "DN")
    upscale_file(src, tmp_path / "o.tif", NearestX4(), device="cpu")
    with rasterio.open(src) as s, rasterio.open(tmp_path / "o.tif") as o:
        assert o.transform.almost_equals(s.transform @ Affine.scale(0.25))
        assert o.descriptions == (None, "green band", None) and o.units[1] == "DN"


def test_smaller_than_one_tile(make_geotiff, tmp_path):
    src = make_geotiff(width=5, height=3)
    result = upscale_file(src, tmp_path / "o.tif", NearestX4(), device="cpu")
    assert result.tiles == 1
    with rasterio.open(src) as s, rasterio.open(tmp_path / "o.tif") as o:
        assert (o.width, o.height) == (20, 12) and np.array_equal(o.read(), up4(s.read()))


def test_not_georeferenced_warns_and_keeps_scaled_pixel_grid(make_geotiff, tmp_path):
    with pytest.warns(Warning):
        src = make_geotiff(crs=None, transform=Affine.identity())
    with pytest.warns(GeoreferencingWarning, match="no geotransform"):
        upscale_file(src, tmp_path / "o.tif", NearestX4(), device="cpu")
    with rasterio.open(tmp_path / "o.tif") as o:
        assert o.crs is None and o.transform == Affine.scale(0.25)


def test_gcps_only_is_an_error_that_suggests_warping(make_geotiff, tmp_path):
    from rasterio.control import GroundControlPoint

    with pytest.warns(Warning):
        src = make_geotiff(crs=None, transform=Affine.identity())
    with rasterio.open(src, "r+") as s:
        s.gcps = ([GroundControlPoint(0, 0, 10.0, 50.0), GroundControlPoint(48, 64, 10.1, 49.9),
                   GroundControlPoint(0, 64, 10.1, 50.0)], "EPSG:4326")
    with pytest.raises(InputError, match="warp it first"):
        upscale_file(src, tmp_path / "o.tif", NearestX4(), device="cpu")
    assert not (tmp_path / "o.tif").exists()


# -- areas of interest -----------------------------------------------------------------------

def test_bounds_in_another_crs(make_geotiff, tmp_path):
    from pyproj import Transformer

    src = make_geotiff(width=64, height=48)  # EPSG:32633, 10 m, origin (500000, 5000000)
    to_ll = Transformer.from_crs("EPSG:32633", "EPSG:4326", always_xy=True)
    x0, y0 = to_ll.transform(500105.0, 4999705.0)  # inside pixel (col 10, row 29)
    x1, y1 = to_ll.transform(500295.0, 4999895.0)  # inside pixel (col 29, row 10)
    upscale_file(src, tmp_path / "o.tif", NearestX4(), bounds=(x0, y0, x1, y1), bounds_crs="EPSG:4326",
                 device="cpu")
    with rasterio.open(src) as s, rasterio.open(tmp_path / "o.tif") as o:
        # the UTM box of a lon/lat box is slightly bigger: a pixel or so more on some sides
        win = s.window(*o.bounds)
        assert 9 <= win.col_off <= 10 and 9 <= win.row_off <= 10
        assert 20 <= win.width <= 22 and 20 <= win.height <= 22
        assert o.transform.a == 2.5


def test_aoi_geojson_without_crs_is_taken_as_lonlat_and_said(make_geotiff, tmp_path):
    from pyproj import Transformer

    src = make_geotiff(width=64, height=48)
    to_ll = Transformer.from_crs("EPSG:32633", "EPSG:4326", always_xy=True)
    ring = [to_ll.transform(x, y) for x, y in [(500200, 4999800), (500400, 4999800), (500400, 4999600),
                                                (500200, 4999600), (500200, 4999800)]]
    aoi = tmp_path / "aoi.geojson"
    aoi.write_text(json.dumps({"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": {}, "geometry": {"type": "Polygon", "coordinates": [ring]}}]}))
    with pytest.warns(GeoreferencingWarning, match="taking EPSG:4326"):
        upscale_file(src, tmp_path / "o.tif", NearestX4(), aoi=aoi, device="cpu")
    with rasterio.open(src) as s, rasterio.open(tmp_path / "o.tif") as o:
        win = s.window(*o.bounds)
        assert abs(win.col_off - 20) <= 1 and abs(win.row_off - 20) <= 1 and abs(win.width - 20) <= 2


def test_aoi_gpkg_with_and_without_crs(make_geotiff, tmp_path):
    import shapely
    from pyogrio.raw import write

    src = make_geotiff(width=64, height=48)
    poly = shapely.box(500100, 4999700, 500300, 4999900)
    for crs in ("EPSG:32633", None):
        path = tmp_path / f"aoi_{crs is None}.gpkg"
        write(str(path), np.array([shapely.to_wkb(poly)], dtype=object), [], [], crs=crs,
              geometry_type="Polygon", driver="GPKG")
        if crs is None:
            # UTM metres read as degrees: the warning says which CRS was assumed, the error what failed
            with pytest.raises(InputError, match="cannot be placed on the raster"), \
                    pytest.warns(GeoreferencingWarning, match="taking EPSG:4326"):
                upscale_file(src, tmp_path / "n.tif", NearestX4(), aoi=path, device="cpu")
            continue
        upscale_file(src, tmp_path / "o.tif", NearestX4(), aoi=path, device="cpu")
        with rasterio.open(tmp_path / "o.tif") as o:
            assert o.bounds == pytest.approx((500100, 4999700, 500300, 4999900))


@pytest.mark.parametrize("kwargs, match", [
    ({"bounds": (0, 0, 10, 10)}, "does not intersect"),
    ({"bounds": (10, 40, 11, 41), "bounds_crs": "EPSG:4326"}, "does not intersect"),
    ({"bounds": (5, 5, 1, 1)}, "XMAX must exceed XMIN"),
    ({"bounds_crs": "EPSG:4326"}, "--bounds-crs needs --bounds"),
    ({"bounds": (500000, 4999600, 500100, 5000000), "bounds_crs": "EPSG:99999"}, "invalid CRS"),
])
def test_bad_bounds(make_geotiff, tmp_path, kwargs, match):
    src = make_geotiff()
    with pytest.raises(InputError, match=match):
        upscale_file(src, tmp_path / "o.tif", NearestX4(), device="cpu", **kwargs)
    assert not (tmp_path / "o.tif").exists()


def test_aoi_not_intersecting_and_not_a_polygon(make_geotiff, tmp_path):
    src = make_geotiff()
    far = tmp_path / "far.geojson"
    far.write_text(json.dumps({"type": "Polygon", "coordinates": [[[16, 40], [17, 40], [17, 41], [16, 40]]],
                               "crs": {"type": "name", "properties": {"name": "EPSG:4326"}}}))
    with pytest.raises(InputError, match="does not intersect"):
        upscale_file(src, tmp_path / "o.tif", NearestX4(), aoi=far, device="cpu")
    point = tmp_path / "point.geojson"
    point.write_text(json.dumps({"type": "Point", "coordinates": [15, 45]}))
    with pytest.raises(InputError, match="holds no polygon"):
        upscale_file(src, tmp_path / "o.tif", NearestX4(), aoi=point, device="cpu")
    assert not (tmp_path / "o.tif").exists()


# -- output options ----------------------------------------------------------------------------

def tiff_ifds(path):
    """[(ifd offset, {tag: values})] of a classic or Big TIFF, read with struct only."""
    data = Path(path).read_bytes()
    bo = "<" if data[:2] == b"II" else ">"
    big = struct.unpack(bo + "H", data[2:4])[0] == 43
    off = struct.unpack(bo + ("Q" if big else "I"), data[8:16] if big else data[4:8])[0]
    sizes = {1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 7: 1, 16: 8}
    fmt = {1: "B", 2: "B", 3: "H", 4: "I", 7: "B", 16: "Q"}
    ifds = []
    while off:
        n = struct.unpack(bo + ("Q" if big else "H"), data[off: off + (8 if big else 2)])[0]
        start, esize, fsize = off + (8 if big else 2), (20 if big else 12), (8 if big else 4)
        tags = {}
        for i in range(n):
            e = start + i * esize
            tag, typ = struct.unpack(bo + "HH", data[e: e + 4])
            count = struct.unpack(bo + ("Q" if big else "I"), data[e + 4: e + (12 if big else 8)])[0]
            field = e + (12 if big else 8)
            total = count * sizes.get(typ, 1)
            pos = field if total <= fsize else struct.unpack(bo + ("Q" if big else "I"), data[field: field + fsize])[0]
            if typ in fmt and typ != 2:
                tags[tag] = struct.unpack(bo + fmt[typ] * count, data[pos: pos + total])
        ifds.append((off, tags))
        off = struct.unpack(bo + ("Q" if big else "I"), data[start + n * esize: start + n * esize + fsize])[0]
    return data, big, ifds


def assert_valid_cog(path):
    """The COG rules: tiled, overviews, all IFDs before the image data, overview data before the
    full-resolution data (smallest first), GDAL's structural-metadata ghost header."""
    with rasterio.open(path) as o:
        assert o.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"
        assert o.profile["tiled"] and o.overviews(1)
    data, big, ifds = tiff_ifds(path)
    assert data[16 if big else 8:].startswith(b"GDAL_STRUCTURAL_METADATA_SIZE=")
    assert b"LAYOUT=IFDS_BEFORE_DATA" in data[:400]
    images = [(off, t) for off, t in ifds if not (t.get(254, (0,))[0] & 4)]  # not masks
    assert images[0][1].get(254, (0,))[0] == 0 and len(images) >= 2  # full resolution first, then overviews
    widths = [t[256][0] for _, t in images]
    assert widths == sorted(widths, reverse=True)
    first_data = min(min(v for v in t[324] if v) for _, t in ifds)
    assert max(off for off, _ in ifds) < first_data  # IFDs before data
    starts = [min(v for v in t[324] if v) for _, t in images]
    assert starts == sorted(starts, reverse=True)  # smallest overview's data first


def test_cog_is_valid_and_keeps_everything(geotiff_dir, tmp_path):
    path = geotiff_dir / "rasterio_RGB.byte_u8_32618_300m.tif"
    window = Window(0, 0, 300, 260)
    with rasterio.open(path) as s:
        b = window_bounds(window, s.transform)
    out = tmp_path / "cog.tif"
    upscale_file(path, out, NearestX4(), bounds=b, cog=True, device="cpu")
    assert_valid_cog(out)
    check_against_input(path, out, window, (1, 2, 3))
    assert leftovers(tmp_path) == []


def test_cog_with_internal_mask(geotiff_dir, tmp_path):
    path = geotiff_dir / "rasterio_cogeo_rgb_u8_3857_0.6m.tif"
    window = Window(0, 0, 200, 200)
    with rasterio.open(path) as s:
        b = window_bounds(window, s.transform)
    upscale_file(path, tmp_path / "cog.tif", NearestX4(), bounds=b, cog=True, device="cpu")
    assert_valid_cog(tmp_path / "cog.tif")
    with rasterio.open(path) as s, rasterio.open(tmp_path / "cog.tif") as o:
        assert np.array_equal(o.dataset_mask(), up4(s.dataset_mask(window=window)))


def test_plain_gtiff_is_not_a_cog_and_creation_options_apply(make_geotiff, tmp_path):
    src = make_geotiff()
    upscale_file(src, tmp_path / "z.tif", NearestX4(), co=["COMPRESS=ZSTD", "blockxsize=128", "BLOCKYSIZE=64"],
                 device="cpu")
    with rasterio.open(tmp_path / "z.tif") as o:
        assert o.profile["compress"] == "zstd" and o.block_shapes[0] == (64, 128)
        assert "LAYOUT" not in o.tags(ns="IMAGE_STRUCTURE")


@pytest.mark.parametrize("co, match", [
    (["COMPRESS=NOPE"], "COMPRESS"),
    (["NOT_AN_OPTION=1"], "NOT_AN_OPTION"),
    (["COMPRESS"], "expected KEY=VALUE"),
    (["BLOCKXSIZE=abc"], "BLOCKXSIZE"),
])
def test_invalid_creation_options(make_geotiff, tmp_path, co, match):
    src = make_geotiff()
    with pytest.raises(InputError, match=match):
        upscale_file(src, tmp_path / "o.tif", NearestX4(), co=co, device="cpu")
    with pytest.raises(InputError, match=match):
        upscale_file(src, tmp_path / "o.tif", NearestX4(), co=co, cog=True, device="cpu")
    assert list(tmp_path.iterdir()) == [Path(src)]


# -- atomic writes -------------------------------------------------------------------------------

class FailAfter(torch.nn.Module):
    lr_multiple = 1

    def __init__(self, n, exc):
        super().__init__()
        self.n, self.exc, self.calls = n, exc, 0

    def forward(self, lr, noises=(), steps=1):
        self.calls += 1
        if self.calls > self.n:
            raise self.exc
        return torch.nn.functional.interpolate(lr, scale_factor=4, mode="nearest")


@pytest.mark.parametrize("exc", [RuntimeError("injected failure"), KeyboardInterrupt()])
def test_failure_midway_leaves_nothing(make_geotiff, tmp_path, exc):
    src = make_geotiff(width=200, height=200)
    out = tmp_path / "o.tif"
    written = []
    from rsisr.upscale.sink import RasterSink

    original = RasterSink.write
    spy = lambda self, *a: (written.append(a[:2]), original(self, *a))  # noqa: E731
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(RasterSink, "write", spy)
        with pytest.raises(type(exc)):
            upscale_file(src, out, FailAfter(12, exc), tile=32, overlap=8, batch_size=1, device="cpu",
                         co=["BLOCKXSIZE=64", "BLOCKYSIZE=64"])
    assert written  # strips had been written to the temporary file before the failure
    assert sorted(p.name for p in tmp_path.iterdir()) == [Path(src).name]


def test_failing_cog_conversion_leaves_nothing_and_keeps_old_output(make_geotiff, tmp_path, monkeypatch):
    src = make_geotiff()
    out = tmp_path / "o.tif"
    out.write_bytes(b"old")

    def boom(*args, **kwargs):
        raise rasterio.errors.RasterioIOError("disk full (injected)")

    monkeypatch.setattr(rasterio.shutil, "copy", boom)
    with pytest.raises(OutputError, match="disk full"):
        upscale_file(src, out, NearestX4(), cog=True, overwrite=True, device="cpu")
    assert out.read_bytes() == b"old"
    assert leftovers(tmp_path) == []


# -- bad input ---------------------------------------------------------------------------------

def test_bad_inputs_and_outputs(make_geotiff, tmp_path):
    src = make_geotiff()
    cases = [
        (dict(src=tmp_path / "missing.tif"), InputError, "does not exist"),
        (dict(dst=src), OutputError, "is the input"),
        (dict(dst=tmp_path / "nodir" / "o.tif"), OutputError, "does not exist"),
        (dict(dst=tmp_path), OutputError, "is a directory"),
        (dict(bands="1,9,2"), InputError, "band 9 does not exist"),
        (dict(bands="1,2"), InputError, "one band or three"),
        (dict(bands="a,b,c"), InputError, "invalid --bands"),
        (dict(scale="0,x"), InputError, "invalid --scale"),
        (dict(tile=32, overlap=16), ConfigError, "larger than twice"),
        (dict(steps=7), ConfigError, "--steps"),
        (dict(batch_size=0), ConfigError, "--batch-size"),
    ]
    for kwargs, err, match in cases:
        args = dict(src=src, dst=tmp_path / "o.tif", model=NearestX4(), device="cpu")
        args.update(kwargs)
        with pytest.raises(err, match=match):
            upscale_file(args.pop("src"), args.pop("dst"), **args)
    assert sorted(p.name for p in tmp_path.iterdir()) == [Path(src).name]


def test_existing_output_needs_overwrite(make_geotiff, tmp_path):
    src = make_geotiff()
    out = tmp_path / "o.tif"
    out.write_bytes(b"keep me")
    with pytest.raises(OutputError, match="--overwrite"):
        upscale_file(src, out, NearestX4(), device="cpu")
    assert out.read_bytes() == b"keep me"
    upscale_file(src, out, NearestX4(), overwrite=True, device="cpu")
    with rasterio.open(out) as o:
        assert o.width == 256
    assert oct(out.stat().st_mode & 0o777) != oct(0o600)  # a normal file, not a private temp file


def test_unwritable_directory(make_geotiff, tmp_path):
    src = make_geotiff()
    if os.geteuid() == 0:  # root writes anywhere on disk; /proc refuses even root
        target = Path("/proc/rsisr_upscale_test.tif")
    else:
        ro = tmp_path / "ro"
        ro.mkdir(mode=0o500)
        target = ro / "o.tif"
    with pytest.raises(OutputError, match="writ"):
        upscale_file(src, target, NearestX4(), device="cpu")
    assert not target.exists()


def test_not_a_raster_and_truncated_raster(geotiff_dir, tmp_path):
    text = tmp_path / "notes.tif"
    text.write_text("not a raster")
    with pytest.raises(InputError, match="not a readable raster"):
        upscale_file(text, tmp_path / "o.tif", NearestX4(), device="cpu")
    # directory at the end of the file: GDAL cannot open the cut file
    data = (geotiff_dir / "usgs_hro_colorado_rgb_u8_26913_0.15m.tif").read_bytes()
    cut = tmp_path / "cut.tif"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match="truncated"):
        upscale_file(cut, tmp_path / "o.tif", NearestX4(), device="cpu")
    # directories first (a COG): the cut file opens, and reading its missing blocks fails midway
    data = (geotiff_dir / "rasterio_cogeo_rgb_u8_3857_0.6m.tif").read_bytes()
    cut2 = tmp_path / "cut2.tif"
    cut2.write_bytes(data[: len(data) * 2 // 3])
    with rasterio.open(cut2) as s:
        assert s.width == 1024
    with pytest.raises(InputError, match="truncated or damaged"):
        upscale_file(cut2, tmp_path / "o.tif", NearestX4(), device="cpu")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cut.tif", "cut2.tif", "notes.tif"]


def test_no_default_model_says_pass_model(make_geotiff, tmp_path, monkeypatch):
    """Without the bundled weights file (a stripped install), the error says to pass --model."""
    import rsisr.api

    monkeypatch.setattr(rsisr.api, "DEFAULT_MODEL_PATH", tmp_path / "none.safetensors")
    with pytest.raises(CheckpointError, match="--model"):
        upscale_file(make_geotiff(), tmp_path / "o.tif", device="cpu")
    assert not (tmp_path / "o.tif").exists()


def test_open_dataset_as_input_and_progress_callback(make_geotiff, tmp_path):
    src = make_geotiff(width=100, height=70)
    seen = []
    with rasterio.open(src) as ds:
        result = upscale_file(ds, tmp_path / "o.tif", NearestX4(), tile=32, overlap=8, device="cpu",
                              progress=lambda done, total: seen.append((done, total)))
        assert not ds.closed
    assert seen[-1] == (result.tiles, result.tiles) and len(seen) == result.tiles == 4 * 3


def test_model_object_records_its_file_hash(make_geotiff, tmp_path, tiny_model_file):
    import rsisr
    from rsisr.checkpoint import file_sha256

    src = make_geotiff(width=20, height=16)
    upscale_file(src, tmp_path / "a.tif", rsisr.load_model(tiny_model_file), device="cpu")
    upscale_file(src, tmp_path / "b.tif", NearestX4(), device="cpu")
    with rasterio.open(tmp_path / "a.tif") as a, rasterio.open(tmp_path / "b.tif") as b:
        assert a.tags()["RSISR_MODEL_SHA256"] == file_sha256(tiny_model_file)
        assert a.tags()["RSISR_MODEL"] == "tiny.safetensors"
        assert b.tags()["RSISR_MODEL_SHA256"] == "unknown" and b.tags()["RSISR_MODEL"] == "NearestX4"


def test_open_dataset_as_output(make_geotiff, tmp_path):
    src = make_geotiff(width=30, height=20)
    with rasterio.open(src) as s:
        profile = dict(s.profile, width=120, height=80, transform=s.transform @ Affine.scale(0.25))
    with rasterio.open(tmp_path / "mine.tif", "w", **profile) as out:
        result = upscale_file(src, out, NearestX4(), device="cpu")
        assert not out.closed and result.path == tmp_path / "mine.tif"
    with rasterio.open(src) as s, rasterio.open(tmp_path / "mine.tif") as o:
        assert np.array_equal(o.read(), up4(s.read())) and o.tags()["RSISR_BANDS"] == "1,2,3"
    with rasterio.open(tmp_path / "small.tif", "w", **dict(profile, width=60)) as out:
        with pytest.raises(OutputError, match="this output needs 120 x 80"):
            upscale_file(src, out, NearestX4(), device="cpu")


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
