"""upscale_file's output: COG and creation options, atomic writes on failure, bad inputs and
outputs, open datasets, model identity."""

import os
import struct
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from affine import Affine
from rasterio.windows import Window, bounds as window_bounds

from rsisr.errors import (
    ConfigError, InputError, OutputError,
)
from rsisr.standins import NearestX4
from rsisr.upscale import upscale_file
from upscale_helpers import check_against_input, leftovers, up4

pytestmark = pytest.mark.usefixtures("one_thread")


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
