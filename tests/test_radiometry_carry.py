"""Values outside the ``--scale`` stretch keep their magnitude, and the statistics of ``--scale
auto`` come from the whole scene, so a window is that window of the whole run (real uint16 rasters)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import rasterio
import torch
from rasterio.windows import Window, bounds as window_bounds

from rsisr.imageops import bicubic_up, bicubic_up_window
from rsisr.standins import BicubicX4, NearestX4
from rsisr.upscale import upscale_file

UINT16 = ["landsat8_LC08_224078_crop1024_3band_u16_32621_30m.tif",
          "sentinel2_T33UUU_20160608_crop1024_1band_u16_32633_10m.tif"]


def brightest_window(path, size=128) -> Window:
    """A size x size window around the raster's brightest pixel (inside the scene)."""
    with rasterio.open(path) as s:
        a = s.read().max(axis=0)
        r, c = np.unravel_index(int(a.argmax()), a.shape)
        return Window(min(max(0, c - size // 2), s.width - size), min(max(0, r - size // 2), s.height - size), size, size)


def bicubic_of_window(path, window) -> np.ndarray:
    """Rows and cols of the whole scene's bicubic x4 (native units, float64) that ``window`` covers."""
    with rasterio.open(path) as s:
        def read(r0, r1, c0, c1):
            return s.read(window=Window(c0, r0, c1 - c0, r1 - r0)).astype(np.float64)

        r, c = 4 * int(window.row_off), 4 * int(window.col_off)
        return bicubic_up_window(read, (s.height, s.width), (r, r + 4 * window.height),
                                 (c, c + 4 * window.width)).numpy()


def test_bicubic_window_equals_the_whole_scene():
    x = torch.rand(2, 23, 31, dtype=torch.float64) * 1000
    full = bicubic_up(x[None], 4)[0]
    rng = np.random.default_rng(0)
    for _ in range(50):
        ya, xa = int(rng.integers(0, 90)), int(rng.integers(0, 120))
        yb, xb = int(rng.integers(ya + 1, 93)), int(rng.integers(xa + 1, 125))
        part = bicubic_up_window(lambda r0, r1, c0, c1: x[:, r0:r1, c0:c1], (23, 31), (ya, yb), (xa, xb))
        assert torch.equal(part, full[:, ya:yb, xa:xb])
    assert bicubic_up_window(lambda *a: None, (23, 31), (0, 8), (0, 8)) is None


@pytest.mark.parametrize("name", UINT16)
def test_bright_values_are_not_clipped(name, geotiff_dir, tmp_path):
    """Landsat's band max 20,026 used to come out at its 99.9th percentile (about 9,600). With a
    bicubic stand-in the output is the bicubic x4 of the true values, to rounding."""
    path = geotiff_dir / name
    window = brightest_window(path)
    with rasterio.open(path) as s:
        bounds = window_bounds(window, s.transform)
    upscale_file(path, tmp_path / "o.tif", BicubicX4(), bounds=bounds, device="cpu")
    ref = bicubic_of_window(path, window)
    with rasterio.open(tmp_path / "o.tif") as o:
        out = o.read().astype(np.float64)
        hi = np.array(json.loads(o.tags()["RSISR_SCALING"])["hi"])
    assert (ref.max(axis=(1, 2)) > 1.5 * hi).all()  # the window really holds values far above the stretch
    np.testing.assert_allclose(out.max(axis=(1, 2)), np.clip(np.rint(ref), 0, 65535).max(axis=(1, 2)), rtol=0.01)
    # everywhere: the bicubic x4 of the input, up to rounding and the stand-in's [0, 1] clamp at sharp edges
    assert np.median(np.abs(out - ref)) <= 0.5 and np.mean(np.abs(out - ref)) < 2.0


def test_default_model_keeps_bright_values(geotiff_dir, tmp_path, one_thread):
    """The shipped model on Landsat's brightest corner: output max within 1% of a bicubic x4's."""
    path = geotiff_dir / UINT16[0]
    window = brightest_window(path, 96)
    with rasterio.open(path) as s:
        bounds = window_bounds(window, s.transform)
    upscale_file(path, tmp_path / "o.tif", None, bounds=bounds, device="cpu", tile=96)
    ref = bicubic_of_window(path, window)
    with rasterio.open(tmp_path / "o.tif") as o:
        out = o.read().astype(np.float64)
    np.testing.assert_allclose(out.max(axis=(1, 2)), np.rint(ref).max(axis=(1, 2)), rtol=0.01)


@pytest.mark.parametrize("name", UINT16)
def test_window_equals_the_same_pixels_of_a_larger_run(name, geotiff_dir, tmp_path):
    """--bounds gives that window of the whole-scene run: the scaling no longer depends on the
    window (it once differed by a mean of 4 DN, max 744 DN, on Landsat). Two nested windows stand
    in for the whole scene here; the slow suite runs the whole scene."""
    path = geotiff_dir / name
    outer = Window(100, 140, 160, 128)
    inner = Window(164, 172, 64, 48)
    with rasterio.open(path) as s:
        b_outer, b_inner = window_bounds(outer, s.transform), window_bounds(inner, s.transform)
    upscale_file(path, tmp_path / "outer.tif", NearestX4(), bounds=b_outer, device="cpu")
    upscale_file(path, tmp_path / "inner.tif", NearestX4(), bounds=b_inner, device="cpu")
    with rasterio.open(tmp_path / "outer.tif") as o, rasterio.open(tmp_path / "inner.tif") as i:
        assert o.tags()["RSISR_SCALING"] == i.tags()["RSISR_SCALING"]
        dy, dx = 4 * (inner.row_off - outer.row_off), 4 * (inner.col_off - outer.col_off)
        part = o.read()[:, dy:dy + 4 * inner.height, dx:dx + 4 * inner.width]
        assert np.array_equal(part, i.read())


@pytest.mark.slow
def test_window_equals_the_whole_scene_run(geotiff_dir, tmp_path):
    path = geotiff_dir / UINT16[0]
    window = Window(300, 200, 200, 150)
    with rasterio.open(path) as s:
        bounds = window_bounds(window, s.transform)
    upscale_file(path, tmp_path / "whole.tif", BicubicX4(), device="cpu")
    upscale_file(path, tmp_path / "part.tif", BicubicX4(), bounds=bounds, device="cpu")
    with rasterio.open(tmp_path / "whole.tif") as w, rasterio.open(tmp_path / "part.tif") as p:
        whole = w.read(window=Window(4 * 300, 4 * 200, 4 * 200, 4 * 150))
        assert np.array_equal(whole, p.read())


def test_recorded_scaling_is_reusable(geotiff_dir, tmp_path):
    """--scale takes an output's RSISR_SCALING tag (per-band ranges) and reproduces the run."""
    path = geotiff_dir / UINT16[0]
    with rasterio.open(path) as s:
        bounds = window_bounds(Window(500, 500, 64, 64), s.transform)
    upscale_file(path, tmp_path / "a.tif", NearestX4(), bounds=bounds, device="cpu")
    with rasterio.open(tmp_path / "a.tif") as a:
        tag = a.tags()["RSISR_SCALING"]
        first = a.read()
    upscale_file(path, tmp_path / "b.tif", NearestX4(), bounds=bounds, device="cpu", scale=tag)
    with rasterio.open(tmp_path / "b.tif") as b:
        assert np.array_equal(b.read(), first)
        recorded = json.loads(b.tags()["RSISR_SCALING"])
    assert recorded["mode"] == "range" and recorded["lo"] == json.loads(tag)["lo"]
