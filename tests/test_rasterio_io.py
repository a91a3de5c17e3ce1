"""rsisr.rasterio_io: GDAL failures as one InputError, text that is not UTF-8, absurd headers and
outputs that cannot fit, checked before the first pixel (issue 20)."""

from __future__ import annotations

import shutil
from collections import namedtuple
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import rasterio
from click.testing import CliRunner

import fuzzing
from conftest import one_line_error
from rsisr import rasterio_io
from rsisr.errors import ConfigError, InputError, OutputError
from rsisr.rasterio_io import TextDroppedWarning, check_output_space, check_raster, gdal_message, reading
from rsisr.standins import NearestX4
from rsisr.upscale import upscale_file
from rsisr_cli.main import cli

pytestmark = pytest.mark.usefixtures("one_thread")


def test_gdal_message_reads_the_chain():
    from rasterio.errors import RasterioIOError

    try:
        try:
            raise ValueError("ZIPDecode:Decoding error at scanline 256")
        except ValueError as inner:
            raise RasterioIOError("Read failed. See previous exception for details.") from inner
    except RasterioIOError as exc:
        assert gdal_message(exc) == "ZIPDecode:Decoding error at scanline 256"
    assert len(gdal_message(RuntimeError("x" * 1000))) == 300


def test_reading_names_the_file_what_and_gdal(tmp_path):
    from rasterio.errors import RasterioIOError

    with pytest.raises(InputError) as info:
        with reading("scene.tif", "pixels (band 1, rows 0-128, columns 0-128)"):
            raise RasterioIOError("TIFFReadEncodedTile() failed.")
    msg = str(info.value)
    assert msg.startswith("cannot read pixels (band 1, rows 0-128, columns 0-128) of scene.tif")
    assert '"TIFFReadEncodedTile() failed."' in msg and "gdalinfo -checksum" in msg
    with pytest.raises(ConfigError, match="own"):  # rsisr's own errors pass through as they are
        with reading("scene.tif", "pixels"):
            raise ConfigError("own")


def fake(width=64, height=64, count=3, dtypes=None, block=(16, 16), interleave="pixel"):
    return SimpleNamespace(name="fake.tif", width=width, height=height, count=count,
                           dtypes=tuple(dtypes or ["uint8"] * count), block_shapes=[block] * count,
                           profile={"interleave": interleave})


@pytest.mark.parametrize("kwargs, match", [
    (dict(block=(0, 64)), "blocks of 64 x 0 pixels"),
    (dict(block=(40000, 40000)), "GDAL decodes a block whole"),
    (dict(count=20000), "declares 20000 bands"),
    (dict(count=2, dtypes=["complex64", "complex64"]), "data type complex64"),
    (dict(width=0), "declares 0 x 64 pixels"),
])
def test_absurd_headers_are_refused(kwargs, match):
    with pytest.raises(InputError, match=match):
        check_raster(fake(**kwargs))


def test_plausible_headers_pass():
    check_raster(fake(count=425, dtypes=["int16"] * 425, block=(1, 4096)))  # a hyperspectral scene
    check_raster(fake(width=20000, height=20000, block=(20000, 20000), count=1))  # one strip, 400 MB
    check_raster(fake(count=4000, block=(512, 512), interleave="band"))


def test_complex_raster_is_one_line(make_geotiff, tiny_model_file, tmp_path):
    src = make_geotiff(count=1, dtype="complex64", data=np.ones((1, 48, 64), np.complex64))
    result = CliRunner().invoke(cli, ["upscale", str(src), "-o", str(tmp_path / "o.tif"), "--model",
                                      str(tiny_model_file), "--device", "cpu", "-q"])
    one_line_error(result, "complex64", "gdal_translate -ot Float32")
    assert not (tmp_path / "o.tif").exists()


def _patch(path: Path, old: bytes, new: bytes) -> None:
    data = path.read_bytes()
    assert data.count(old) == 1
    path.write_bytes(data.replace(old, new))


def test_text_that_is_not_utf8_never_fails_a_run(make_geotiff, tmp_path):
    """A band description and a tag with a Latin-1 byte (0xb5, the survey's case): the run
    succeeds, the description is dropped with one warning, the other bands' texts are kept."""
    src = make_geotiff(width=32, height=32, name="latin1.tif")
    with rasterio.open(src, "r+") as ds:
        ds.set_band_description(1, "Rot-abcde")
        ds.set_band_description(2, "Gruen")
        ds.update_tags(SENSOR="qwerty", PLATFORM="plane")
    _patch(src, b"Rot-abcde", b"Rot-ab\xb5de")
    _patch(src, b"qwerty", b"qw\xb5rty")
    out = tmp_path / "out.tif"
    with pytest.warns(TextDroppedWarning, match="band descriptions of .*latin1.tif are not UTF-8"):
        upscale_file(src, out, NearestX4(), device="cpu")
    with rasterio.open(out) as o:
        assert o.descriptions == (None, None, None)  # rasterio gives all descriptions or none
        assert o.tags()["PLATFORM"] == "plane" and "SENSOR" not in o.tags()


def _declare_size(path: Path, width: int, height: int) -> None:
    data = path.read_bytes()
    recipe = fuzzing.Recipe(path.name, 0, "hand", {"patches": [fuzzing.tag_patch(data, 256, width),
                                                               fuzzing.tag_patch(data, 257, height)]})
    path.write_bytes(fuzzing.apply_recipe(recipe, data))


def test_declared_size_beyond_the_block_index_is_refused_first(make_geotiff, tiny_model_file, tmp_path):
    """A damaged header declaring 400,000 x 400,000 pixels over a 64 x 64 file: libtiff would
    read the missing blocks as empty (a run of days); refused before any pixel, nothing written,
    and GDAL's warnings folded into the one line."""
    src = make_geotiff(width=64, height=64, dtype="uint16", name="huge.tif")
    _declare_size(src, 400_000, 400_000)
    with rasterio.open(src) as ds:
        assert (ds.width, ds.height) == (400_000, 400_000)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    result = CliRunner().invoke(cli, ["upscale", str(src), "-o", str(out_dir / "o.tif"), "--model",
                                      str(tiny_model_file), "--device", "cpu"])
    one_line_error(result, "declares 400000 x 400000 pixels", "block index is shorter", "StripOffsets")
    assert list(out_dir.iterdir()) == []


def test_output_that_cannot_fit_is_refused_unless_bounds_cut_it(tiny_model_file, tmp_path):
    """A valid sparse 400,000 x 400,000 GeoTIFF (5 MB of block index): the whole output (7.7 TB,
    1.9 TB at 4:1) is refused with its size and the free space; a --bounds window runs."""
    from rasterio.transform import from_origin

    src = tmp_path / "sparse.tif"
    with rasterio.open(src, "w", driver="GTiff", width=400_000, height=400_000, count=3, dtype="uint8", tiled=True,
                       blockxsize=512, blockysize=512, sparse_ok=True, compress="deflate", crs="EPSG:32633",
                       transform=from_origin(500000.0, 5000000.0, 1.0, 1.0)):
        pass
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    args = ["upscale", str(src), "-o", str(out_dir / "o.tif"), "--model", str(tiny_model_file), "--device", "cpu",
            "--tile", "32", "--overlap", "8", "-q"]
    result = CliRunner().invoke(cli, args)
    one_line_error(result, "1600000 x 1600000 pixels x 3 band(s) of uint8: 7.7 TB uncompressed, at least 1.9 TB "
                           "compressed, but", "free; upscale a part with --bounds or --aoi")
    assert list(out_dir.iterdir()) == []
    result = CliRunner().invoke(cli, [*args, "--bounds", "500000", "4999968", "500032", "5000000"])
    assert result.exit_code == 0, result.output
    with rasterio.open(out_dir / "o.tif") as o:
        assert (o.width, o.height) == (128, 128)


def test_output_space_counts_the_window(make_geotiff, tmp_path, monkeypatch):
    """Little free space: the whole raster is refused, a --bounds window that fits is not."""
    src = make_geotiff(width=64, height=64, crs="EPSG:32633")
    usage = namedtuple("usage", "total used free")
    # the whole output: 256 x 256 x 3 = 196,608 bytes, at best 49,152 compressed; 10 KB free
    monkeypatch.setattr(rasterio_io.shutil, "disk_usage", lambda p: usage(10**9, 10**9, 10_000))
    with pytest.raises(OutputError, match=r"196.6 KB uncompressed, at least 49.2 KB compressed, but .* has 10.0 KB"):
        upscale_file(src, tmp_path / "whole.tif", NearestX4(), device="cpu")
    # 16 x 16 LR pixels: 64 x 64 x 3 = 12,288 bytes, at best 3 KB
    upscale_file(src, tmp_path / "part.tif", NearestX4(), device="cpu",
                 bounds=(500000.0, 4999840.0, 500160.0, 5000000.0))
    assert sorted(p.name for p in tmp_path.iterdir() if p.suffix == ".tif") == ["part.tif", "synthetic_1.tif"]


def test_check_output_space_arithmetic(tmp_path):
    check_output_space(tmp_path / "o.tif", 1000, 1000, 3, "uint16", free=1_500_000)  # 6 MB / 4 fits
    with pytest.raises(OutputError, match="6.0 MB uncompressed"):
        check_output_space(tmp_path / "o.tif", 1000, 1000, 3, "uint16", free=1_400_000)
    with pytest.raises(OutputError, match="7.0 MB"):  # the mask band counts
        check_output_space(tmp_path / "o.tif", 1000, 1000, 3, "uint16", mask=True, free=1_000)


def test_open_raster_errors(tmp_path, geotiff_dir):
    with pytest.raises(InputError, match="does not exist"):
        rasterio_io.open_raster(tmp_path / "missing.tif")
    cut = tmp_path / "cut.tif"
    cut.write_bytes((geotiff_dir / "usgs_hro_colorado_rgb_u8_26913_0.15m.tif").read_bytes()[:5000])
    with pytest.raises(InputError, match=r"cut.tif is not a readable raster, or is truncated or damaged: GDAL says"):
        rasterio_io.open_raster(cut)


def test_corrupt_block_mid_run_leaves_nothing(geotiff_dir, tiny_model_file, tmp_path):
    """Blocks of the real uint16 scene zeroed past the first tile rows: the statistics sample
    (from the overview-less decimated read) or a later tile read fails; either way one line,
    exit 1, and the output folder stays empty."""
    src = tmp_path / "in" / "l8.tif"
    src.parent.mkdir()
    corpus = fuzzing.build_corpus(tmp_path / "corpus", geotiff_dir)
    data = bytearray(corpus["landsat8_LC08_224078_crop1024_3band_u16_32621_30m.tif"].read_bytes())
    data[len(data) // 2: len(data) // 2 + 4096] = bytes(4096)
    src.write_bytes(bytes(data))
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    for scale in ("auto", "0,3000"):
        result = CliRunner().invoke(cli, ["upscale", str(src), "-o", str(out_dir / "o.tif"), "--model",
                                          str(tiny_model_file), "--device", "cpu", "--tile", "32", "--overlap", "8",
                                          "--scale", scale, "-q"])
        one_line_error(result, "cannot read", "l8.tif: GDAL says")
        assert list(out_dir.iterdir()) == []
    shutil.rmtree(tmp_path / "corpus")
