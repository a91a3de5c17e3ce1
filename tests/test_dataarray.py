"""``rsisr.upscale_dataarray`` (issue 17): georeferenced DataArrays in and out, numpy-backed equal
to ``upscale_file`` on the same pixels, dask-backed lazy and independent of the chunk layout."""

from __future__ import annotations

import dask
import numpy as np
import pytest
import rasterio
from rasterio.windows import Window
from rasterio.windows import bounds as window_bounds

import rsisr
from rsisr.dataarray import ChunkSizeWarning
from rsisr.errors import ConfigError, GeoreferencingWarning, InputError
from rsisr.standins import ConvX4, NearestX4, NoiseX4
from rsisr.upscale.chunked import chunk_edges
from rsisr.upscale import upscale_file

rioxarray = pytest.importorskip("rioxarray")
xarray = pytest.importorskip("xarray")

FAST = dict(tile=64, overlap=16, device="cpu", seed=3)


class CountingNoise(NoiseX4):
    """NoiseX4 that counts its model runs (to see that nothing runs before compute)."""

    runs = 0

    def forward(self, lr, noises=(), steps: int = 1):
        type(self).runs += 1
        return super().forward(lr, noises, steps)


def _bounds(path, window: Window | None):
    if window is None:
        return None
    with rasterio.open(path) as src:
        return window_bounds(window, src.transform)


def _same_georeferencing(out, path) -> None:
    """What rioxarray reads back from ``upscale_file``'s output equals ``out``'s georeferencing."""
    ref = rioxarray.open_rasterio(path)
    assert out.rio.transform() == ref.rio.transform()
    assert out.rio.crs == ref.rio.crs
    assert out.rio.nodata == ref.rio.nodata
    assert np.array_equal(out.x.values, ref.x.values) and np.array_equal(out.y.values, ref.y.values)
    assert out.shape == ref.shape
    with rasterio.open(path) as src:
        tags = src.tags()
    assert any(k.startswith("RSISR_") for k in tags)
    assert {k: str(out.attrs.get(k)) for k in tags} == tags  # the tags the file path writes, as attributes


@pytest.mark.parametrize("name, window, options, out_bands", [
    ("usgs_hro_colorado_rgb_u8_26913_0.15m.tif", None, {}, [1, 2, 3]),                    # whole, odd size
    ("rasterio_RGB.byte_u8_32618_300m.tif", Window(0, 0, 260, 200), {}, [1, 2, 3]),       # nodata=0 collar
    ("landsat8_LC08_224078_crop1024_3band_u16_32621_30m.tif", Window(300, 500, 180, 150), {}, [1, 2, 3]),  # auto
    ("sentinel2_T33UUU_20160608_crop1024_1band_u16_32633_10m.tif", Window(0, 0, 160, 130), {}, [1]),  # one band
    ("naip_m_4709963_se_14_2020_rgbn_u8_26914_5m.tif", Window(0, 600, 200, 123), {"bands": "4,1,2"}, [4, 1, 2]),
    ("stars_L7_ETMs_6band_u8_31985_28.5m.tif", Window(50, 60, 120, 100),
     {"bands": "4,3,2", "other_bands": "bicubic"}, [1, 2, 3, 4, 5, 6]),                   # the others bicubic x4
])
def test_numpy_dataarray_equals_upscale_file(geotiff_dir, tmp_path, one_thread, name, window, options, out_bands):
    path = geotiff_dir / name
    bounds = _bounds(path, window)
    upscale_file(path, tmp_path / "o.tif", NoiseX4(), bounds=bounds, **FAST, **options)
    out = rsisr.upscale_dataarray(rioxarray.open_rasterio(path), NoiseX4(), bounds=bounds, **FAST, **options)
    assert isinstance(out.data, np.ndarray)
    with rasterio.open(tmp_path / "o.tif") as o:
        expected = o.read()
    assert out.dtype == expected.dtype and np.array_equal(out.values, expected)
    _same_georeferencing(out, tmp_path / "o.tif")
    assert list(out.band.values) == out_bands


def test_tiny_model_at_the_same_seed_equals_upscale_file(geotiff_dir, tmp_path, tiny_model_file, one_thread):
    path = geotiff_dir / "usgs_hro_colorado_rgb_u8_26913_0.15m.tif"
    bounds = _bounds(path, Window(100, 40, 120, 96))
    upscale_file(path, tmp_path / "o.tif", tiny_model_file, bounds=bounds, **FAST)
    out = rsisr.upscale_dataarray(rioxarray.open_rasterio(path), tiny_model_file, bounds=bounds, **FAST)
    with rasterio.open(tmp_path / "o.tif") as o:
        assert np.array_equal(out.values, o.read())
    _same_georeferencing(out, tmp_path / "o.tif")
    assert out.attrs["RSISR_MODEL"] == tiny_model_file.name


def test_dask_stays_lazy_and_two_chunk_layouts_agree(geotiff_dir, one_thread):
    """uint16 with scale auto (the whole-scene sample is the only read before compute), two chunk
    layouts, two schedulers: the numpy result exactly, chunk by chunk."""
    path = geotiff_dir / "landsat8_LC08_224078_crop1024_3band_u16_32621_30m.tif"
    bounds = _bounds(path, Window(200, 100, 300, 260))
    eager = rsisr.upscale_dataarray(rioxarray.open_rasterio(path), NoiseX4(), bounds=bounds, **FAST)
    results = []
    for chunks, scheduler in (({"x": 256, "y": 256}, "threads"), ({"x": 1024, "y": 128}, "synchronous")):
        CountingNoise.runs = 0
        lazy = rsisr.upscale_dataarray(rioxarray.open_rasterio(path, chunks=chunks), CountingNoise(), bounds=bounds,
                                       **FAST)
        assert isinstance(lazy.data, dask.array.Array) and CountingNoise.runs == 0
        assert lazy.attrs["RSISR_SCALING"] == eager.attrs["RSISR_SCALING"]
        with dask.config.set(scheduler=scheduler):
            results.append(lazy.compute())
        assert CountingNoise.runs > 0
        # one output chunk per input chunk cut to the window (rows 100-360, columns 200-500), x4
        for axis, (a, b) in ((1, (100, 360)), (2, (200, 500))):
            edges = chunk_edges(rioxarray.open_rasterio(path, chunks=chunks).data.chunks[axis], a, b)
            assert lazy.data.chunks[axis] == tuple(4 * (hi - lo) for lo, hi in edges)
    for result in results:
        assert isinstance(result.data, np.ndarray) and np.array_equal(result.values, eager.values)
        assert result.rio.transform() == eager.rio.transform()
        assert {**result.attrs, "RSISR_MODEL": "NoiseX4"} == eager.attrs


def test_tiny_model_chunk_layouts_agree(geotiff_dir, tiny_model, one_thread):
    """The shipped kind of model: tiles on chunk edges run in other batches, which may move the
    last bit of a float; never more than one output level."""
    da = rioxarray.open_rasterio(geotiff_dir / "usgs_hro_colorado_rgb_u8_26913_0.15m.tif")[:, :128, :160]
    eager = rsisr.upscale_dataarray(da, tiny_model, **FAST).values.astype(int)
    with pytest.warns(ChunkSizeWarning, match="rechunk"):
        small = rsisr.upscale_dataarray(da.chunk({"x": 160, "y": 64}), tiny_model, **FAST)
    for lazy in (small, rsisr.upscale_dataarray(da.chunk({"x": 128, "y": 128}), tiny_model, **FAST)):
        assert np.abs(lazy.values.astype(int) - eager).max() <= 1


def test_distributed_scheduler(geotiff_dir, one_thread):
    from distributed import Client

    da = rioxarray.open_rasterio(geotiff_dir / "rasterio_RGB.byte_u8_32618_300m.tif")[:, :200, :300]
    eager = rsisr.upscale_dataarray(da, ConvX4(), **FAST)
    lazy = rsisr.upscale_dataarray(da.chunk({"x": 160, "y": 128}), ConvX4(), **FAST)
    with Client(processes=False, n_workers=1, threads_per_worker=2, dashboard_address=None):
        assert np.array_equal(lazy.compute().values, eager.values)


def test_masked_dataarray_round_trips_through_to_raster(geotiff_dir, tmp_path, one_thread):
    """masked=True (floats, NaN for nodata): the result is masked the same way and rio.to_raster
    writes what upscale_file writes."""
    path = geotiff_dir / "rasterio_RGB.byte_u8_32618_300m.tif"
    bounds = _bounds(path, Window(0, 0, 200, 160))  # the nodata collar's corner
    upscale_file(path, tmp_path / "file.tif", ConvX4(), bounds=bounds, **FAST)
    masked = rioxarray.open_rasterio(path, masked=True, chunks={"x": 128, "y": 128})
    out = rsisr.upscale_dataarray(masked, ConvX4(), bounds=bounds, **FAST)
    assert out.dtype == np.float32 and out.rio.encoded_nodata == 0 and out.encoding["dtype"] == "uint8"
    out.rio.to_raster(tmp_path / "array.tif")
    with rasterio.open(tmp_path / "file.tif") as a, rasterio.open(tmp_path / "array.tif") as b:
        values, masks = a.read(), a.read_masks()
        assert b.dtypes[0] == "uint8" and b.nodata == 0
        assert np.array_equal(b.read(), values) and np.array_equal(b.read_masks(), masks)
    assert np.array_equal(np.isnan(out.values), masks == 0) and (masks == 0).any()


def test_two_dimensional_and_band_last_arrays(geotiff_dir, one_thread):
    da = rioxarray.open_rasterio(geotiff_dir / "stars_L7_ETMs_6band_u8_31985_28.5m.tif")[:, :90, :100]
    da = da.assign_coords(name=("band", ["b1", "b2", "b3", "b4", "b5", "b6"]))
    ref = rsisr.upscale_dataarray(da, ConvX4(), bands=[4, 3, 2], **FAST)
    assert list(ref.band.values) == [4, 3, 2] and list(ref.coords["name"].values) == ["b4", "b3", "b2"]
    last = rsisr.upscale_dataarray(da.transpose("y", "x", "band"), ConvX4(), bands=[4, 3, 2], **FAST)
    assert last.dims == ("y", "x", "band") and np.array_equal(last.transpose("band", "y", "x").values, ref.values)
    lazy = rsisr.upscale_dataarray(da.chunk({"x": 64, "y": 128}).transpose("y", "band", "x"), ConvX4(),
                                   bands=[4, 3, 2], **FAST)  # no nodata: the chunks read only bands 4, 3, 2
    assert lazy.dims == ("y", "band", "x") and np.array_equal(lazy.transpose("band", "y", "x").values, ref.values)
    bicubic = dict(bands=[4, 3, 2], other_bands="bicubic", **FAST)  # every band: the others bicubic x4
    both = rsisr.upscale_dataarray(da.chunk({"x": 64, "y": 48}), ConvX4(), **bicubic)
    assert list(both.coords["name"].values) == ["b1", "b2", "b3", "b4", "b5", "b6"]
    assert np.array_equal(both.values, rsisr.upscale_dataarray(da, ConvX4(), **bicubic).values)
    assert both.attrs["RSISR_OTHER_BANDS"] == "bicubic"
    single = rsisr.upscale_dataarray(da.isel(band=4, drop=True), ConvX4(), **FAST)
    assert single.dims == ("y", "x") and single.shape == (360, 400)
    assert np.array_equal(single.values, rsisr.upscale_dataarray(da, ConvX4(), bands=[5], **FAST).values[0])
    assert single.attrs["RSISR_BANDS"] == "1"


def test_array_without_georeferencing_warns_and_keeps_the_pixel_grid():
    da = xarray.DataArray(np.full((20, 24), 100, np.uint8), dims=("y", "x"))
    with pytest.warns(GeoreferencingWarning, match="no geotransform"):
        out = rsisr.upscale_dataarray(da, NearestX4(), **FAST)
    assert out.shape == (80, 96) and out.rio.transform().a == 0.25 and (out.values == 100).all()


@pytest.mark.parametrize("make, options, error, match", [
    (lambda da: da.to_dataset(name="v"), {}, InputError, "takes an xarray.DataArray, got Dataset"),
    (lambda da: da.expand_dims(time=2), {}, InputError, "isel"),
    (lambda da: da.rename({"x": "col", "y": "row"}), {}, InputError, "no spatial ones"),
    (lambda da: da.astype(np.complex64), {}, InputError, "complex64"),
    (lambda da: da, {"cog": True}, ConfigError, "rio.to_raster"),
    (lambda da: da, {"tiles": 64}, ConfigError, "unknown option 'tiles'"),
    (lambda da: da.chunk({"x": 64}), {"progress": True}, ConfigError, "dask"),
    (lambda da: da, {"bands": "9"}, InputError, "band 9 does not exist"),
])
def test_user_errors_are_clear(geotiff_dir, make, options, error, match):
    da = rioxarray.open_rasterio(geotiff_dir / "usgs_hro_colorado_rgb_u8_26913_0.15m.tif")[:, :40, :40]
    with pytest.raises(error, match=match):
        rsisr.upscale_dataarray(make(da), ConvX4(), **options)


@pytest.mark.parametrize("window", [(0, 0, 40, 56), (90, 70, 64, 96), (200, 150, 100, 110), (37, 201, 263, 59)])
def test_a_window_computed_from_its_region_alone_equals_the_whole_scene(window, one_thread):
    """needed_region: the tiles that reach the window, the nodata fill's halo and the bicubic taps
    of the carried-over values (which lie inside the fill's halo). A uint16 scene with nodata
    holes and bright outliers that the scaling clips, run from the region alone (a read outside
    it raises; without the fill's halo this test fails), equals that window of the whole-scene
    run."""
    from rsisr.radiometry import Scaling
    from rsisr.upscale import TiledUpscaler
    from rsisr.upscale.arrayraster import RasterMeta
    from rsisr.upscale.chunked import RegionJob, needed_region, run_region

    rng = np.random.default_rng(4)
    scene = rng.integers(100, 3000, (3, 300, 260)).astype(np.uint16)
    scene[:, 120:150, 60:90] = 0  # nodata hole
    scene[1, rng.integers(0, 300, 40), rng.integers(0, 260, 40)] = 60000  # clipped by the scaling
    meta = RasterMeta("scene", (300, 260), 3, "uint16", nodata=0.0)
    engine = TiledUpscaler(ConvX4(radius=3), tile=48, overlap=8, device="cpu", precision="fp32")
    job = RegionJob(meta, (1, 2, 3), Scaling("range", (0.0,) * 3, (3000.0,) * 3), "nodata", ())
    whole = run_region(engine, scene, (0, 0), (0, 0, 300, 260), job)
    r0, r1, c0, c1 = needed_region(window, (300, 260), engine.tile, engine.overlap)
    r, c, h, w = window
    assert r0 <= r and c0 <= c and r1 >= r + h and c1 >= c + w
    assert r - r0 <= engine.tile + 16 and r1 - (r + h) <= engine.tile + 16  # no more than a tile and the halo
    part = run_region(engine, scene[:, r0:r1, c0:c1], (r0, c0), window, job)
    assert np.array_equal(part, whole[:, 4 * r: 4 * (r + h), 4 * c: 4 * (c + w)])


class Noise4(NoiseX4):
    """A 4-band (RGB + NIR) stand-in: NoiseX4 works on any number of bands."""

    bands = 4


def test_four_band_model_equals_upscale_file(geotiff_dir, tmp_path, one_thread):
    path = geotiff_dir / "naip_m_4709963_se_14_2020_rgbn_u8_26914_5m.tif"
    bounds = _bounds(path, Window(300, 200, 150, 120))
    upscale_file(path, tmp_path / "o.tif", Noise4(), bounds=bounds, **FAST)
    with rasterio.open(tmp_path / "o.tif") as o:
        expected = o.read()
    da = rioxarray.open_rasterio(path)
    eager = rsisr.upscale_dataarray(da, Noise4(), bounds=bounds, **FAST)
    lazy = rsisr.upscale_dataarray(da.chunk({"x": 128, "y": 160}), Noise4(), bounds=bounds, **FAST)
    assert expected.shape[0] == 4 and list(eager.band.values) == [1, 2, 3, 4]
    assert np.array_equal(eager.values, expected) and np.array_equal(lazy.values, expected)
