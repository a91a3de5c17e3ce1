"""Remote inputs (issue 17): ``rsisr upscale`` and ``upscale_file`` read COGs over HTTP by byte
ranges, fetching only what the window needs, and write what a local run writes.

The server is a loopback ``http.server`` with Range support, started in a thread by each test
(:mod:`range_server`), which counts the bytes it sends."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import rasterio
from rasterio.windows import Window
from rasterio.windows import bounds as window_bounds

from conftest import one_line_error, rsisr_cli
from range_server import make_cog, serve
from rsisr.errors import InputError
from rsisr.gdal_env import REMOTE_GDAL_CONFIG, gdal_env, gdal_path, is_remote, remote_config
from rsisr.standins import ConvX4
from rsisr.upscale import upscale_file


@pytest.fixture(scope="module")
def cogs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("served")
    return {"rgb": make_cog(folder / "scene.tif", 1024, 3, "uint8", 64),
            "u16": make_cog(folder / "scene16.tif", 2048, 1, "uint16", 128)}


def _bounds(path, window: Window) -> list[str]:
    with rasterio.open(path) as src:
        return [str(v) for v in window_bounds(window, src.transform)]


def _read(path):
    with rasterio.open(path) as src:
        return src.read(), src.read_masks(), src.tags(), src.transform


def test_remote_paths_and_their_gdal_settings(monkeypatch):
    for url in ("https://example.com/a.tif", "s3://bucket/a.tif", "gs://bucket/a.tif", "/vsicurl/https://x/a.tif",
                "/vsizip//vsis3/bucket/a.zip/a.tif"):
        assert is_remote(url) and gdal_path(url) == url, url
    assert gdal_path("/vsimem/a.tif") == "/vsimem/a.tif" and not is_remote("/vsimem/a.tif")
    assert not is_remote("scene.tif") and gdal_path("scene.tif") is None
    assert remote_config("scene.tif") == {}
    config = remote_config("https://example.com/a.tif")
    assert config["GDAL_DISABLE_READDIR_ON_OPEN"] == "EMPTY_DIR"
    assert config["GDAL_HTTP_MERGE_CONSECUTIVE_RANGES"] == "YES"
    monkeypatch.setenv("GDAL_HTTP_MULTIRANGE", "SERIAL")  # the user's own setting wins
    assert "GDAL_HTTP_MULTIRANGE" not in remote_config("s3://bucket/a.tif")
    assert set(remote_config("s3://bucket/a.tif")) == set(REMOTE_GDAL_CONFIG) - {"GDAL_HTTP_MULTIRANGE"}


def test_cli_window_over_http_reads_a_fraction_and_equals_the_local_run(cogs, tmp_path, tiny_model_file, one_thread):
    """A window a sixteenth of the scene (256 x 256 of 1024 x 1024): less than a quarter of the
    file's bytes are served, and the output (values, mask, tags) equals the local run's."""
    path = cogs["rgb"]
    args = ["--bounds", *_bounds(path, Window(384, 384, 256, 256)), "--model", tiny_model_file, "--tile", "64",
            "--overlap", "8", "--device", "cpu", "--seed", "3", "-q"]
    with serve(path.parent) as served:
        result = rsisr_cli(["upscale", f"{served.url}/{path.name}", "-o", tmp_path / "remote.tif", *args])
        assert result.exit_code == 0, result.output
        sent, requests = served.bytes(), served.requests
    result = rsisr_cli(["upscale", path, "-o", tmp_path / "local.tif", *args])
    assert result.exit_code == 0, result.output
    size = path.stat().st_size
    assert sent < size / 4, (sent, size, requests)
    assert all(method == "HEAD" or rng for method, rng, _ in requests)  # never the whole file
    remote, local = _read(tmp_path / "remote.tif"), _read(tmp_path / "local.tif")
    assert remote[0].shape == (3, 1024, 1024)
    assert np.array_equal(remote[0], local[0]) and np.array_equal(remote[1], local[1])
    assert remote[2] == local[2] and remote[3] == local[3]
    assert (remote[1] == 0).any()  # the mask's hole reached the window's output (masks were read remotely)


def test_scale_auto_sample_comes_from_an_overview(cogs, tmp_path):
    """uint16 with --scale auto: the whole-scene statistics sample is a decimated read that GDAL
    serves from the 1024 x 1024 overview (a quarter of the full-resolution bytes), the window's
    pixels and masks cost what the window needs, and the output equals the local run's."""
    from rsisr.rasterio_io import open_raster
    from rsisr.upscale.source import statistics_sample

    path = cogs["u16"]
    shutil.copy(path, tmp_path / "copy.tif")  # a second URL: GDAL's cache holds what it fetched
    window = Window(768, 768, 512, 512)  # a sixteenth of the scene
    kwargs = dict(bounds=[float(v) for v in _bounds(path, window)], tile=64, overlap=8, device="cpu", seed=1)
    with serve(tmp_path) as served:
        url = f"{served.url}/copy.tif"
        with gdal_env(**remote_config(url)):
            src = open_raster(url)
            opened = served.bytes()
            sample, valid = statistics_sample(src, [1], has_mask=True)
            src.close()
        sample_bytes = served.bytes() - opened
    with serve(path.parent) as served:
        upscale_file(f"{served.url}/{path.name}", tmp_path / "remote.tif", ConvX4(), **kwargs)
        total = served.bytes()
    upscale_file(path, tmp_path / "local.tif", ConvX4(), **kwargs)
    size = path.stat().st_size
    assert sample.shape == (1, 1024, 1024) and not valid.all()
    assert sample_bytes < 0.25 * size, (sample_bytes, size)
    assert total - sample_bytes - opened < 0.15 * size, (total, sample_bytes, size)
    remote, local = _read(tmp_path / "remote.tif"), _read(tmp_path / "local.tif")
    assert np.array_equal(remote[0], local[0]) and np.array_equal(remote[1], local[1]) and remote[2] == local[2]


def test_missing_remote_file_is_one_line(tmp_path):
    with serve(tmp_path) as served:
        url = f"{served.url}/missing.tif"
        result = rsisr_cli(["upscale", url, "-o", tmp_path / "out.tif", "--device", "cpu"])
        line = one_line_error(result, "cannot open", "missing.tif", "range requests")
        with pytest.raises(InputError, match="cannot open"):
            upscale_file(url, tmp_path / "out.tif", ConvX4())
    assert "does not exist" not in line
    assert not list(tmp_path.iterdir())
