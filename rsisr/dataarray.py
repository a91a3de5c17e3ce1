"""x4 super-resolution of xarray DataArrays with rioxarray's georeferencing
(:func:`upscale_dataarray`; needs the ``rsisr[xarray]`` extra).

The array goes through the steps of ``rsisr upscale`` (:mod:`rsisr.upscale.arrayraster`): the
same plan (bands, ``bounds``/``aoi`` window, masks from nodata, ``scale``, tags), tiling engine,
noise and conversion back to the raster's values. A numpy-backed array is upscaled at once; a
dask-backed one stays lazy (:mod:`rsisr.upscale.chunked`): one output chunk per input chunk,
each computed from the input region it needs on whatever scheduler computes it.
"""

from __future__ import annotations

import warnings

import numpy as np

from rsisr.defaults import DEFAULT_BATCH_SIZE, DEFAULT_OVERLAP, DEFAULT_TILE
from rsisr.errors import ConfigError, InputError, RsisrWarning

#: Keywords of :func:`upscale_dataarray` and their defaults (``rsisr upscale``'s options).
OPTIONS = dict(tile=DEFAULT_TILE, overlap=DEFAULT_OVERLAP, batch_size=DEFAULT_BATCH_SIZE, steps=1, seed=0,
               device="auto", precision="auto", bands=None, bounds=None, bounds_crs=None, aoi=None, scale="auto",
               other_bands=None, progress=False, compile=False)
#: Options of ``upscale_file`` that concern the output file, which a DataArray result does not have.
FILE_OPTIONS = ("co", "cog", "overwrite")
#: Attributes that describe the input's pixels or encoding, not the output's (rioxarray's own).
DROPPED_ATTRS = ("_FillValue", "scale_factor", "add_offset", "long_name", "units")
#: Chunks narrower than this many tiles spend most of their work on tiles their neighbours run too.
MIN_CHUNK_TILES = 2


class ChunkSizeWarning(RsisrWarning):
    """Dask chunks so small that most tiles run several times (once per chunk they reach)."""


def _require_xarray():
    try:
        import rioxarray  # noqa: F401 - registers the .rio accessor
        import xarray
    except ImportError:
        raise ConfigError("upscale_dataarray needs xarray and rioxarray: pip install 'rsisr[xarray]'") from None
    return xarray


def _check_options(options: dict) -> dict:
    for key in options:
        if key in FILE_OPTIONS:
            raise ConfigError(f"upscale_dataarray returns a DataArray, so {key!r} does not apply; write the result "
                              f"with result.rio.to_raster(path, ...) (creation options go there as keywords)")
        if key not in OPTIONS:
            raise ConfigError(f"upscale_dataarray got an unknown option {key!r}; it takes "
                              f"{', '.join(OPTIONS)}")
    return {**OPTIONS, **options}


def _band_yx(da):
    """(the DataArray as (band, y, x), its band dimension or None, its y and x dimension names)."""
    xarray = _require_xarray()
    from rioxarray.exceptions import MissingSpatialDimensionError

    if not isinstance(da, xarray.DataArray):
        hint = " (a Dataset: pass one variable, or ds.to_array('band'))" if isinstance(da, xarray.Dataset) else ""
        raise InputError(f"upscale_dataarray takes an xarray.DataArray, got {type(da).__name__}{hint}")
    try:
        y, x = da.rio.y_dim, da.rio.x_dim
    except MissingSpatialDimensionError:
        raise InputError(f"the DataArray has dimensions {tuple(da.dims)} but no spatial ones; name them x and y "
                         "(e.g. da.rename({'lon': 'x', 'lat': 'y'})) or set them with da.rio.set_spatial_dims")
    if da.ndim not in (2, 3):
        raise InputError(f"upscale_dataarray takes a 2-D (y, x) or 3-D (band, y, x) DataArray, got dimensions "
                         f"{tuple(da.dims)}; select one time step or stack first (e.g. da.isel(time=0))")
    if da.sizes[y] == 0 or da.sizes[x] == 0:
        raise InputError(f"the DataArray is empty ({da.sizes[y]} x {da.sizes[x]} pixels)")
    if da.ndim == 2:
        return da.expand_dims("band"), None, y, x
    band = next(d for d in da.dims if d not in (y, x))
    return da.transpose(band, y, x), band, y, x


def _decoded_dtype(da) -> str | None:
    """The integer dtype a float array was decoded from with NaN for nodata (rioxarray's
    ``masked=True``: encoding ``dtype`` and ``_FillValue``, no scale or offset), else None."""
    enc = da.encoding
    original = enc.get("dtype")
    if da.dtype.kind != "f" or original is None or np.dtype(original).kind not in "ui":
        return None
    if enc.get("scale_factor", 1.0) != 1.0 or enc.get("add_offset", 0.0) != 0.0:
        return None
    return np.dtype(original).name if da.rio.encoded_nodata is not None else None


def _per_band(value, count: int) -> tuple:
    if value is None:
        return ()
    if isinstance(value, (list, tuple, np.ndarray)):
        return tuple(value) if len(value) == count else ()
    return (value,) * count


def _meta(cube, name: str):
    """The :class:`~rsisr.upscale.arrayraster.RasterMeta` of a (band, y, x) DataArray."""
    from rsisr.rasterio_io import SUPPORTED_DTYPES
    from rsisr.upscale.arrayraster import RasterMeta

    decoded = _decoded_dtype(cube)
    dtype = decoded or cube.dtype.name
    if dtype not in SUPPORTED_DTYPES:
        raise InputError(f"the DataArray has data type {dtype}, which rsisr cannot scale (it reads "
                         f"{', '.join(SUPPORTED_DTYPES)}); convert it first, e.g. da.astype('float32')")
    nodata = cube.rio.encoded_nodata if decoded else cube.rio.nodata
    count = cube.shape[0]
    attrs = cube.attrs
    tags = {str(k): str(v) for k, v in attrs.items()
            if k not in DROPPED_ATTRS and not str(k).startswith("STATISTICS_") and isinstance(v, (str, int, float))}
    return RasterMeta(
        name=name, shape=(cube.shape[1], cube.shape[2]), count=count, dtype=dtype,
        nodata=None if nodata is None else float(nodata), crs=cube.rio.crs, transform=cube.rio.transform(),
        tags=tags, descriptions=_per_band(attrs.get("long_name"), count), units=_per_band(attrs.get("units"), count),
        scales=_per_band(attrs.get("scale_factor"), count), offsets=_per_band(attrs.get("add_offset"), count),
        decoded=cube.dtype.name if decoded else None)


def _warn_small_chunks(data, tile: int) -> None:
    small = [s for s in (*data.chunks[-2][:-1], *data.chunks[-1][:-1]) if s < MIN_CHUNK_TILES * tile]
    if small:
        warnings.warn(f"dask chunks of {min(small)} pixels are small for tiles of {tile}: each chunk runs every tile "
                      f"that reaches into it; rechunk to {8 * tile} pixels or more, e.g. "
                      f"da.chunk({{'x': {8 * tile}, 'y': {8 * tile}}})", ChunkSizeWarning, stacklevel=3)


def _subset(value, picks: list[int], count: int):
    """A per-band attribute (a tuple of ``count``) cut to the output bands; anything else as is."""
    if isinstance(value, (list, tuple, np.ndarray)) and len(value) == count:
        chosen = tuple(value[i] for i in picks)
        return chosen if len(chosen) > 1 else chosen[0]
    return value


def _attrs(attrs: dict, plan, meta, picks: list[int]) -> dict:
    """The input's attributes for the output: per-band ones cut to its bands, those the file path
    does not copy left out (``_FillValue`` is rewritten with the nodata), and ``RSISR_*`` tags."""
    out = {}
    for key, value in attrs.items():
        if key == "_FillValue" or str(key).startswith("STATISTICS_"):
            continue  # the nodata is written anew; statistics describe the input's pixels
        if str(key) in meta.tags and str(key) not in plan.tags:
            continue  # TIFF structure tags, which upscale_file leaves out too
        out[key] = _subset(value, picks, meta.count)
    out.update({k: v for k, v in plan.tags.items() if k.startswith("RSISR_")})
    return out


def _coords(da, cube, band_dim, y_dim: str, x_dim: str, plan, picks: list[int]) -> dict:
    """The output's coordinates: pixel centres of the x4 grid, the chosen bands', and the
    input's other coordinates that do not run along x or y."""
    from rioxarray.rioxarray import affine_to_coords

    profile = plan.profile
    spatial = affine_to_coords(profile["transform"], profile["width"], profile["height"], x_dim=x_dim, y_dim=y_dim)
    coords = {}
    if spatial[x_dim].ndim == 1:
        for dim in (y_dim, x_dim):
            coords[dim] = (dim, spatial[dim], cube[dim].attrs if dim in cube.coords else {})
    else:  # a rotated grid: 2-D coordinates, as rioxarray gives
        coords["yc"], coords["xc"] = ((y_dim, x_dim), spatial[y_dim]), ((y_dim, x_dim), spatial[x_dim])
    for name, coord in da.coords.items():
        if name in (y_dim, x_dim, da.rio.grid_mapping) or y_dim in coord.dims or x_dim in coord.dims:
            continue
        coords[name] = coord.isel({band_dim: picks}) if band_dim in coord.dims else coord
    return coords


def _result(da, cube, band_dim, y_dim: str, x_dim: str, plan, job, data, meta):
    """The output DataArray: ``data`` (bands, 4h, 4w) with the input's dimension order, the x4
    grid's coordinates and transform, the CRS, nodata, attributes and ``RSISR_*`` tags."""
    import xarray

    picks = [b - 1 for b in job.out_bands]
    coords = _coords(da, cube, band_dim, y_dim, x_dim, plan, picks)
    attrs = _attrs(cube.attrs, plan, meta, picks)
    if band_dim is None:
        out = xarray.DataArray(data[0], dims=(y_dim, x_dim), coords=coords, name=da.name, attrs=attrs)
    else:
        out = xarray.DataArray(data, dims=(band_dim, y_dim, x_dim), coords=coords, name=da.name, attrs=attrs)
        out = out.transpose(*da.dims)
    if plan.profile["crs"] is not None:
        out = out.rio.write_crs(plan.profile["crs"])
    out = out.rio.write_transform(plan.profile["transform"])
    out = out.rio.write_nodata(plan.profile["nodata"], encoded=meta.decoded is not None)
    if meta.decoded is not None:
        out.encoding["dtype"] = meta.dtype  # rio.to_raster writes the raster's dtype again
    return out


def _model_bands(values, job):
    """(array, job) for the chunks: without nodata they need only the bands read and written (3
    bands of a 12-band stack, not 12); with nodata every band, since GDAL's dataset mask (valid
    where any band is) looks at all of them."""
    from dataclasses import replace

    from rsisr.upscale.bands import BandChoice

    used = sorted(set(job.indexes) | set(job.out_bands))
    if job.meta.nodata is not None or len(used) == job.meta.count:
        return values, job
    new = {b: k for k, b in enumerate(used, start=1)}
    meta = replace(job.meta, count=len(used), descriptions=(), units=(), scales=(), offsets=())
    choice = BandChoice(tuple(new[b] for b in job.choice.model), tuple(new[b] for b in job.choice.out),
                        job.choice.mode)
    return values[[b - 1 for b in used]], replace(job, meta=meta, indexes=choice.model, choice=choice)


def _eager(engine, values: np.ndarray, plan, job, progress) -> np.ndarray:
    from rsisr.upscale import _progress
    from rsisr.upscale.arrayraster import OUTPUT_BLOCK
    from rsisr.upscale.chunked import run_region

    tick, close = _progress(progress, engine.count_tiles(values.shape[1:], plan.lr_window, OUTPUT_BLOCK))
    try:
        return run_region(engine, values, (0, 0), plan.lr_window, job, on_tile=tick)
    finally:
        close()


def upscale_dataarray(da, model=None, **options):
    """Super-resolve a georeferenced DataArray by 4x; returns a new DataArray.

    ``da``: 2-D (y, x) or 3-D (band, y, x in any order) with rioxarray's georeferencing: CRS,
    transform (or x/y coordinates) and nodata (``rio.nodata``; with ``masked=True`` the encoded
    nodata, and the result comes back masked the same way). ``model``: a model file, None for the
    bundled default, or a model object. ``options`` are ``rsisr upscale``'s: ``tile``,
    ``overlap``, ``batch_size``, ``steps``, ``seed``, ``device``, ``precision``, ``bands`` (1-based
    positions along the band dimension), ``other_bands``, ``bounds``/``bounds_crs``/``aoi`` (a
    window of the array), ``scale``, ``progress`` (numpy-backed arrays; dask has its own progress bars) and
    ``compile``.

    The result has the input's dimension order, x4 pixel-centre coordinates, transform, CRS,
    nodata, the input's attributes (per-band ones cut to the chosen bands) and the ``RSISR_*``
    tags ``upscale_file`` writes. Numpy-backed: computed now, equal to ``upscale_file`` on the
    same pixels. Dask-backed: lazy, one output chunk per input chunk, on any dask scheduler; only a
    ``scale="auto"`` sample of a non-uint8 array is read now (a decimated read of every chunk).
    """
    opts = _check_options(options)
    cube, band_dim, y_dim, x_dim = _band_yx(da)
    from rsisr.gdal_env import gdal_env
    from rsisr.upscale import TiledUpscaler
    from rsisr.upscale.arrayraster import ArrayRaster
    from rsisr.upscale.chunked import RegionJob, lazy_upscale
    from rsisr.upscale.plan import load_model, make_plan, parse_options, stored_scaling

    spec, bands, other_bands = parse_options(opts["scale"], opts["bands"], opts["bounds"], opts["bounds_crs"],
                                             opts["aoi"], opts["other_bands"])
    lazy = cube.chunks is not None
    if lazy and opts["progress"]:
        raise ConfigError("progress= is for numpy-backed DataArrays; a dask-backed result is computed by dask, so "
                          "use its progress bar (dask.diagnostics.ProgressBar or the distributed dashboard)")
    meta = _meta(cube, str(da.encoding.get("source") or (f"DataArray {da.name!r}" if da.name else "the DataArray")))
    values = cube.data if lazy else np.asarray(cube.values)
    net, sha, model_name = load_model(model)
    engine = TiledUpscaler(net, tile=opts["tile"], overlap=opts["overlap"], batch_size=opts["batch_size"],
                           steps=opts["steps"], seed=opts["seed"], device=opts["device"], precision=opts["precision"],
                           compile=opts["compile"])
    run = dict(model_name=model_name, sha=sha, steps=opts["steps"], seed=opts["seed"], tile=engine.tile,
               overlap=engine.overlap, precision=engine.precision)
    with gdal_env():
        plan = make_plan(ArrayRaster(values, meta), spec=spec, bands=bands, bounds=opts["bounds"],
                         bounds_crs=opts["bounds_crs"], aoi=opts["aoi"], co=None, cog=False, dst_path=None, run=run,
                         model_bands=engine.bands, stored_scaling=stored_scaling(net), other_bands=other_bands)
    engine_options = dict(tile=engine.tile, overlap=engine.overlap, batch_size=opts["batch_size"], steps=opts["steps"],
                          seed=opts["seed"], device=opts["device"], precision=engine.precision, compile=opts["compile"])
    job = RegionJob(meta, plan.indexes, plan.scaling, plan.mask_mode, tuple(sorted(engine_options.items())),
                    plan.choice, engine.bands)
    if lazy:
        _warn_small_chunks(values, engine.tile)
        data = lazy_upscale(*_model_bands(values, job), engine.model, plan.lr_window)
    else:
        data = _eager(engine, values, plan, job, opts["progress"])
    return _result(da, cube, band_dim, y_dim, x_dim, plan, job, data, meta)
