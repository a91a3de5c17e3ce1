"""``rsisr upscale`` through click's CliRunner: a real run with the tiny model, then every bad
input as one line and exit status 1, with nothing written."""

import inspect
import json

import numpy as np
import rasterio
from click.testing import CliRunner

from rsisr.checkpoint import file_sha256
from rsisr_cli.main import cli


def run(*args):
    return CliRunner().invoke(cli, ["upscale", *map(str, args)])


def one_line_error(result, match):
    assert result.exit_code == 1, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
    assert "Traceback" not in result.output
    assert match in lines[0], lines[0]


def test_upscale_runs_with_a_model_file(make_geotiff, tiny_model_file, tmp_path):
    src = make_geotiff(width=40, height=24, nodata=0)
    out = tmp_path / "out.tif"
    result = run(src, "-o", out, "--model", tiny_model_file, "--tile", "32", "--overlap", "8", "--seed", "5",
                 "--steps", "2", "--device", "cpu", "-q")
    assert result.exit_code == 0, result.output
    assert result.output == ""  # -q: no progress bar, no log
    with rasterio.open(src) as s, rasterio.open(out) as o:
        assert (o.width, o.height, o.count, o.dtypes[0]) == (160, 96, 3, "uint8")
        assert o.crs == s.crs and o.transform.a == s.transform.a / 4 and o.nodata == 0
        tags = o.tags()
        assert tags["RSISR_MODEL_SHA256"] == file_sha256(tiny_model_file)
        assert (tags["RSISR_TILE"], tags["RSISR_OVERLAP"], tags["RSISR_SEED"], tags["RSISR_STEPS"]) == ("32", "8", "5", "2")
        assert json.loads(tags["RSISR_SCALING"])["mode"] == "uint8"
        assert np.array_equal(o.dataset_mask(), s.dataset_mask().repeat(4, 0).repeat(4, 1))


def test_cog_and_creation_options_from_the_cli(make_geotiff, tiny_model_file, tmp_path):
    src = make_geotiff(width=40, height=40)
    out = tmp_path / "cog.tif"
    result = run(src, "-o", out, "--model", tiny_model_file, "--device", "cpu", "--cog", "--co", "BLOCKSIZE=128",
                 "--co", "COMPRESS=LZW", "-q")
    assert result.exit_code == 0, result.output
    with rasterio.open(out) as o:
        assert o.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG" and o.block_shapes[0] == (128, 128)
        assert o.profile["compress"] == "lzw" and o.overviews(1)


def test_bad_inputs_are_one_line_errors(make_geotiff, tiny_model_file, tmp_path):
    src = make_geotiff()
    exists = tmp_path / "exists.tif"
    exists.write_bytes(b"x")
    far = tmp_path / "far.geojson"
    far.write_text(json.dumps({"type": "Polygon", "coordinates": [[[16, 40], [17, 40], [17, 41], [16, 40]]]}))
    m = ["--model", tiny_model_file, "--device", "cpu"]
    cases = [
        ([tmp_path / "missing.tif", "-o", tmp_path / "o.tif", *m], "does not exist"),
        ([tiny_model_file, "-o", tmp_path / "o.tif", *m], "not a readable raster"),
        ([src, "-o", exists, *m], "--overwrite"),
        ([src, "-o", src, *m, "--overwrite"], "is the input"),
        ([src, "-o", tmp_path / "no" / "o.tif", *m], "does not exist"),
        ([src, "-o", tmp_path / "o.tif", *m, "--bands", "1,2,7"], "band 7 does not exist"),
        ([src, "-o", tmp_path / "o.tif", *m, "--bounds", "0", "0", "1", "1"], "does not intersect"),
        ([src, "-o", tmp_path / "o.tif", *m, "--aoi", far], "does not intersect"),
        ([src, "-o", tmp_path / "o.tif", *m, "--co", "COMPRESS=NOPE"], "COMPRESS"),
        ([src, "-o", tmp_path / "o.tif", *m, "--co", "JUNK"], "KEY=VALUE"),
        ([src, "-o", tmp_path / "o.tif", *m, "--tile", "16", "--overlap", "8"], "larger than twice"),
        ([src, "-o", tmp_path / "o.tif", *m, "--scale", "9,1"], "MAX must be greater"),
        ([src, "-o", tmp_path / "o.tif", "--model", tmp_path / "nope.safetensors"], "does not exist"),
        ([src, "-o", tmp_path / "o.tif", *m, "--device", "cuda:7"], "cuda:7"),
        ([src, "-o", tmp_path / "o.tif", *m, "--precision", "fp8"], "fp8"),
        ([src, *m], "Missing option '-o'"),
    ]
    for args, match in cases:
        one_line_error(run(*args), match)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["exists.tif", "far.geojson", src.name,
                                                                "tiny.safetensors"])
    assert exists.read_bytes() == b"x"


def test_options_match_the_library():
    """--option names are upscale_file's keywords, with the same defaults (rsisr batch passes them on);
    the options of a split run are upscale_distributed's."""
    from rsisr.distributed import upscale_distributed
    from rsisr.upscale import upscale_file
    from rsisr_cli.upscale import upscale

    params = inspect.signature(upscale_file).parameters
    cluster = {"workers", "threads_per_worker", "scheduler", "part_size"}
    split = inspect.signature(upscale_distributed).parameters
    assert all(split[name].default is None for name in cluster)
    names = {p.name for p in upscale.params} - {"input_path", "output_path", "verbose", "quiet", "model_path"} - cluster
    assert names <= set(params), names - set(params)
    for p in upscale.params:
        if p.name not in names or p.name in ("co", "bounds"):
            continue
        if getattr(p, "is_flag", False):
            assert params[p.name].default is False, p.name
        else:
            assert p.default == params[p.name].default, p.name


def test_band_choice_warning_is_one_line(make_geotiff, tiny_model_file, tmp_path):
    """A real process (logging configured from scratch): rsisr's warning is one 'WARNING: ...'
    line, not Python's 'file:line: Category: ...' followed by a line of rsisr's source."""
    import subprocess
    import sys

    src = make_geotiff(width=16, height=16, count=5)  # (4 bands would be RGB + alpha)
    out = tmp_path / "o.tif"
    proc = subprocess.run(
        [sys.executable, "-c", "from rsisr_cli.main import cli; cli()", "upscale", str(src), "-o", str(out),
         "--model", str(tiny_model_file), "--device", "cpu"],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip() and "tile" not in line]
    assert lines == [f"WARNING: {src} has 5 bands; using bands 1,2,3 as red, green and blue "
                     "(choose others with --bands, e.g. --bands 4,3,2); bands 4,5 are not written "
                     "(--other-bands bicubic adds them, bicubic x4; --other-bands drop silences this)"], proc.stderr
