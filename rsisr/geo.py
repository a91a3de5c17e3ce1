"""Areas of interest: ``--bounds`` (any CRS) and ``--aoi`` vector files, as pixel windows.

Geometries are transformed to the raster's CRS with pyproj and shapely (edges densified first,
so a box in EPSG:4326 stays right in UTM), then turned into the smallest whole-pixel window of the
raster that covers them. Rotated geotransforms work: the window is the bounding box of the
geometry in pixel space.
"""

from __future__ import annotations

import json
import logging
import math
import warnings
from pathlib import Path

import numpy as np
import shapely
from shapely.geometry import box, shape

from rsisr.errors import GeoreferencingWarning, InputError

log = logging.getLogger(__name__)

#: Densify edges to this many points before transforming, so straight lines bend correctly.
_DENSIFY = 64


def _crs(value):
    from pyproj import CRS
    from pyproj.exceptions import CRSError

    try:
        return CRS.from_user_input(value)
    except CRSError:
        raise InputError(f"invalid CRS {value!r}; use e.g. EPSG:4326 or a WKT/PROJ string") from None


def _polygonal(geom, source: str):
    """The polygon parts of ``geom`` (a union); errors when there are none."""
    parts = [g for g in shapely.get_parts(geom) if g.geom_type in ("Polygon", "MultiPolygon")]
    if not parts:
        raise InputError(f"{source} holds no polygon (found {geom.geom_type}); give a polygon area of interest")
    return shapely.union_all(parts)


def _read_geojson(path: Path):
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"{path} is not a readable GeoJSON file ({exc})") from None
    kind = data.get("type") if isinstance(data, dict) else None
    if kind == "FeatureCollection":
        geoms = [f.get("geometry") for f in data.get("features", [])]
    elif kind == "Feature":
        geoms = [data.get("geometry")]
    elif isinstance(kind, str):
        geoms = [data]
    else:
        raise InputError(f"{path} is not GeoJSON (no 'type' member)")
    try:
        geoms = [shape(g) for g in geoms if g]
    except (ValueError, TypeError, AttributeError) as exc:
        raise InputError(f"{path} holds an invalid GeoJSON geometry ({exc})") from None
    crs = None
    named = data.get("crs", {}).get("properties", {}).get("name") if isinstance(data.get("crs"), dict) else None
    if named:
        crs = named  # the 2008 GeoJSON "crs" member, still written by many tools
    return shapely.union_all(geoms) if geoms else shapely.GeometryCollection(), crs


def _read_ogr(path: Path):
    try:
        from pyogrio.errors import DataSourceError
        from pyogrio.raw import read
    except ImportError:  # pragma: no cover - pyogrio is a dependency
        raise InputError(f"reading {path.suffix} vector files needs pyogrio (pip install pyogrio); "
                         "or convert the file to GeoJSON") from None
    try:
        meta, _, geometry, _ = read(str(path), read_geometry=True, columns=[])
    except (DataSourceError, OSError, RuntimeError, ValueError) as exc:
        raise InputError(f"{path} is not a readable vector file ({exc})") from None
    geoms = shapely.from_wkb([g for g in geometry if g is not None])
    return (shapely.union_all(geoms) if len(geoms) else shapely.GeometryCollection()), meta.get("crs")


def read_aoi(path) -> tuple[object, object]:
    """The union of the polygons in a vector file and its CRS (None when the file has none)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"AOI file {str(path)!r} does not exist; pass a GeoJSON or other vector file")
    if path.suffix.lower() in (".geojson", ".json"):
        geom, crs = _read_geojson(path)
    else:
        geom, crs = _read_ogr(path)
    return _polygonal(geom, str(path)), crs


def transform_geometry(geom, src_crs, dst_crs):
    """``geom`` from ``src_crs`` to ``dst_crs`` (pyproj, x/y order), edges densified first."""
    from pyproj import Transformer

    src, dst = _crs(src_crs), _crs(dst_crs)
    if src == dst:
        return geom
    minx, miny, maxx, maxy = geom.bounds
    step = max(maxx - minx, maxy - miny) / _DENSIFY
    if step > 0:
        geom = shapely.segmentize(geom, step)
    transformer = Transformer.from_crs(src, dst, always_xy=True)

    def project(coords: np.ndarray) -> np.ndarray:
        x, y = transformer.transform(coords[:, 0], coords[:, 1])
        return np.column_stack([x, y])

    out = shapely.transform(geom, project)
    if not np.isfinite(out.bounds).all():
        b = ", ".join(f"{v:.6g}" for v in geom.bounds)
        raise InputError(f"the area ({b} in {src.to_string()}) cannot be placed on the raster: its coordinates "
                         f"are not valid in {src.to_string()} or lie outside the area of use of the raster's CRS "
                         f"{dst.to_string()}; check the coordinates and their CRS")
    return out


def apply(transform, x, y):
    """``transform`` applied to x, y (numbers or arrays); no operator, which affine is renaming."""
    a, b, c, d, e, f = transform[:6]
    return a * x + b * y + c, d * x + e * y + f


def compose(t1, t2):
    """``t1 @ t2``: ``t2`` applied first (written ``t1 * t2`` before affine 3)."""
    return t1 @ t2 if hasattr(type(t1), "__matmul__") else t1 * t2


def footprint(transform, width: int, height: int):
    """The raster's outline in its CRS (a parallelogram when the transform is rotated)."""
    corners = [apply(transform, x, y) for x, y in ((0, 0), (width, 0), (width, height), (0, height))]
    return shapely.Polygon(corners)


def geometry_window(geom, transform, width: int, height: int, what: str):
    """The smallest whole-pixel window covering ``geom`` (in the raster's CRS), clipped to the
    raster; an :class:`InputError` naming ``what`` when they do not overlap."""
    from rasterio.windows import Window

    if geom.is_empty or not geom.intersects(footprint(transform, width, height)):
        b = ", ".join(f"{v:.6g}" for v in geom.bounds) if not geom.is_empty else "empty"
        raster = ", ".join(f"{v:.6g}" for v in footprint(transform, width, height).bounds)
        raise InputError(f"{what} ({b} in the raster's CRS) does not intersect the raster ({raster}); "
                         "check the coordinates and their CRS")
    inv = ~transform
    coords = shapely.get_coordinates(geom)
    cols, rows = apply(inv, coords[:, 0], coords[:, 1])
    # a tiny tolerance so that bounds on pixel edges do not grab one more pixel through rounding
    c0 = max(0, math.floor(np.min(cols) + 1e-9))
    r0 = max(0, math.floor(np.min(rows) + 1e-9))
    c1 = min(width, math.ceil(np.max(cols) - 1e-9))
    r1 = min(height, math.ceil(np.max(rows) - 1e-9))
    if c1 <= c0 or r1 <= r0:
        raise InputError(f"{what} covers no whole pixel of the raster; give a larger area")
    return Window(c0, r0, c1 - c0, r1 - r0)


def bounds_window(bounds, bounds_crs, raster_crs, transform, width: int, height: int):
    """Window for ``--bounds XMIN YMIN XMAX YMAX`` given in ``bounds_crs`` (default: the raster's)."""
    if len(bounds) != 4:
        raise InputError(f"--bounds takes XMIN YMIN XMAX YMAX, got {len(bounds)} values")
    xmin, ymin, xmax, ymax = (float(v) for v in bounds)
    if not (xmax > xmin and ymax > ymin):
        raise InputError(f"--bounds {xmin} {ymin} {xmax} {ymax}: XMAX must exceed XMIN and YMAX exceed YMIN")
    geom = box(xmin, ymin, xmax, ymax)
    if bounds_crs is not None:
        if raster_crs is None:
            raise InputError("the raster has no CRS, so --bounds-crs cannot be used; give --bounds in the "
                             "raster's own coordinates")
        geom = transform_geometry(geom, bounds_crs, raster_crs)
    return geometry_window(geom, transform, width, height, "--bounds")


def aoi_window(path, raster_crs, transform, width: int, height: int):
    """Window covering the polygons of the vector file ``path`` (its bounding box in pixel space).

    A file without a CRS is taken as EPSG:4326, as GeoJSON (RFC 7946) says, with a warning.
    """
    geom, crs = read_aoi(path)
    if crs is None:
        warnings.warn(f"{path} has no CRS; taking EPSG:4326 (longitude/latitude), as GeoJSON specifies",
                      GeoreferencingWarning, stacklevel=3)
        crs = "EPSG:4326"
    if raster_crs is None:
        raise InputError(f"the raster has no CRS, so the area of interest in {path} cannot be placed on it; "
                         "use --bounds in the raster's own coordinates")
    geom = transform_geometry(geom, crs, raster_crs)
    return geometry_window(geom, transform, width, height, f"the area of interest in {path}")
