"""upscale_file's georeferencing: band metadata, rotated and missing transforms, GCPs, --bounds
and --aoi windows."""

import json

import numpy as np
import pytest
import rasterio
from affine import Affine

from rsisr.errors import (
    GeoreferencingWarning, InputError,
)
from rsisr.standins import NearestX4
from rsisr.upscale import upscale_file
from upscale_helpers import up4

pytestmark = pytest.mark.usefixtures("one_thread")


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
