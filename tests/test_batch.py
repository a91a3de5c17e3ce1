"""rsisr batch: dask LocalCluster / existing scheduler, resumability, failures, dead workers."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio
from click.testing import CliRunner

from conftest import dask_processes, one_line_error, torch_threads
from rsisr.batch import plan_jobs, upscale_folder, upscale_scene
from rsisr.errors import InputError, OutputError
from rsisr_cli.main import cli

SCENES = (
    "usgs_hro_colorado_rgb_u8_26913_0.15m.tif",
    "stars_L7_ETMs_6band_u8_31985_28.5m.tif",
    "neon_SJER_image_477_rgb_u8_32611_0.1m.tif",
)


@pytest.fixture
def scene_dir(tmp_path, geotiff_dir):
    """A folder of links to three real rasters (referenced in place, never copied)."""
    d = tmp_path / "in"
    (d / "sub").mkdir(parents=True)
    for name in SCENES[:2]:
        (d / name).symlink_to(geotiff_dir / name)
    (d / "sub" / SCENES[2]).symlink_to(geotiff_dir / SCENES[2])
    return d


def _read(path):
    with rasterio.open(path) as ds:
        return ds.read(), ds.read_masks(), ds.profile, ds.tags()


def test_local_cluster_matches_single_runs_then_skips_and_reports_failures(tmp_path, scene_dir, tiny_model_file):
    (scene_dir / "corrupt.tif").write_bytes(b"II*\x00" + os.urandom(2000))
    out = tmp_path / "out"
    report_path = tmp_path / "report.json"
    report = upscale_folder(scene_dir, out, tiny_model_file, recursive=True, workers=2, threads_per_worker=1,
                            report=report_path, seed=3, tile=64, overlap=8)
    status = {Path(s.input).name: s.status for s in report.scenes}
    assert status == {"corrupt.tif": "failed", **{name: "done" for name in SCENES}}
    failed = report.failed[0]
    assert "corrupt.tif" in failed.input and failed.error
    assert not (out / "corrupt.tif").exists()
    data = json.loads(report_path.read_text())
    assert {s["status"] for s in data["scenes"]} == {"done", "failed"}
    assert data["summary"]["done"] == 3 and data["summary"]["failed"] == 1
    # identical to separate `rsisr upscale` runs with the same seed and options (and the same torch
    # thread count as the workers: float reductions depend on it, by 1 DN at a few pixels)
    for rel in (SCENES[0], SCENES[1], f"sub/{SCENES[2]}"):
        single = tmp_path / "single" / rel
        single.parent.mkdir(parents=True, exist_ok=True)
        with torch_threads(1):
            result = CliRunner().invoke(cli, ["upscale", str(scene_dir / rel), "-o", str(single), "--model",
                                              str(tiny_model_file), "--seed", "3", "--tile", "64", "--overlap", "8",
                                              "-q"])
        assert result.exit_code == 0, result.output
        a, b = _read(out / rel), _read(single)
        assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1]), rel
        assert a[2]["transform"] == b[2]["transform"] and a[2]["crs"] == b[2]["crs"]
        assert a[3] == b[3]  # same tags, model hash included
    # a rerun does no work: every finished scene is skipped, the corrupt one fails again
    mtimes = {p: p.stat().st_mtime_ns for p in out.rglob("*.tif")}
    again = upscale_folder(scene_dir, out, tiny_model_file, recursive=True, workers=1, seed=3, tile=64, overlap=8)
    assert again.counts == {"done": 0, "skipped": 3, "failed": 1}
    assert mtimes == {p: p.stat().st_mtime_ns for p in out.rglob("*.tif")}
    assert not [p for p in out.rglob("*") if "rsisr-tmp" in p.name]


def _die_once(src, dst, marker=None, **kwargs):
    """Kill the worker process the first time a scene runs, mid-scene; then behave normally."""
    if marker and os.path.exists(marker):
        os.unlink(marker)
        from rsisr.atomic import temp_path

        Path(dst).parent.mkdir(parents=True, exist_ok=True)
        temp_path(dst).write_bytes(b"partial")  # named for this worker's PID, which dies next
        os._exit(1)
    return upscale_scene(src, dst, **kwargs)


@pytest.mark.slow
def test_dead_worker_does_not_stop_the_batch(tmp_path, scene_dir, tiny_model_file):
    import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    marker = tmp_path / "die"
    marker.write_text("x")
    out = tmp_path / "out"
    report = upscale_folder(scene_dir, out, tiny_model_file, workers=2, threads_per_worker=1, scene_fn=_die_once,
                            marker=str(marker), tile=64, overlap=8, retries=2)
    assert not marker.exists()  # a worker really died
    assert report.counts["done"] == 2, report.to_dict()
    assert not [p for p in out.rglob("*") if "rsisr-tmp" in p.name]
    for name in SCENES[:2]:
        assert _read(out / name)[0].shape[1] > 0


@pytest.mark.slow
def test_existing_scheduler(tmp_path, scene_dir, tiny_model_file):
    with dask_processes(1) as address:
        out = tmp_path / "out"
        result = CliRunner().invoke(cli, ["batch", str(scene_dir), "-o", str(out), "--model", str(tiny_model_file),
                                          "--scheduler", address, "--tile", "64", "--overlap", "8", "-q"])
        assert result.exit_code == 0, result.output
        assert sorted(p.name for p in out.glob("*.tif")) == sorted(SCENES[:2])


def test_plan_rejects_bad_layouts(tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    (src / "a.tif").write_bytes(b"")
    (src / "a.tiff").write_bytes(b"")
    with pytest.raises(OutputError, match="inside the input folder"):
        plan_jobs(src, src / "out")
    with pytest.raises(OutputError, match="both be written"):
        plan_jobs(src, tmp_path / "out", pattern="*.tif*")
    with pytest.raises(InputError, match="no file"):
        plan_jobs(src, tmp_path / "out", pattern="*.jp2")
    with pytest.raises(InputError, match="does not exist"):
        plan_jobs(tmp_path / "missing", tmp_path / "out")
    jobs = plan_jobs(src, tmp_path / "out", pattern="a.tif")
    assert jobs == [(src / "a.tif", tmp_path / "out" / "a.tif")]


def test_cli_errors_are_one_line(tmp_path, tiny_model_file):
    src = tmp_path / "in"
    src.mkdir()
    for args in (["batch", str(tmp_path / "missing"), "-o", str(tmp_path / "o"), "--model", str(tiny_model_file)],
                 ["batch", str(src), "-o", str(src / "o"), "--model", str(tiny_model_file)],
                 ["batch", str(src), "-o", str(tmp_path / "o"), "--model", str(tmp_path / "none.safetensors")]):
        one_line_error(CliRunner().invoke(cli, args))


# -- reruns with other settings --------------------------------------------------------------------

def test_rerun_with_other_settings_redoes_and_says_why(tmp_path, make_geotiff, tiny_model_file, one_thread):
    """A finished output counts only when its RSISR_* tags match the request; otherwise the scene
    is redone and the result says what differed."""
    import torch

    import rsisr

    src = make_geotiff(width=24, height=20, count=5)  # 5 bands: the default choice is 1,2,3
    out = tmp_path / "out" / "a.tif"
    base = dict(tile=32, overlap=8, device="cpu")

    def run(**kw):
        return upscale_scene(src, out, tiny_model_file, **{**base, **kw})

    first = run()
    assert (first.status, first.reason) == ("done", None)
    assert run().status == "skipped"
    again = run(seed=4)
    assert again.status == "done" and again.reason == "the existing output was made with seed 0 (now 4)"
    with rasterio.open(out) as o:
        assert o.tags()["RSISR_SEED"] == "4"
    assert run(seed=4).status == "skipped"
    redo = run(seed=4, bands="3,2,1", steps=2)
    assert redo.status == "done" and "steps 1 (now 2)" in redo.reason and "bands 1,2,3 (now 3,2,1)" in redo.reason
    # the model's sha256, and tile/overlap as aligned to the model (33 -> 32 is no change)
    from rsisr.batch import request_for, scene_status

    torch.manual_seed(1)
    other = tmp_path / "other.safetensors"
    rsisr.save_model(rsisr.build_model("tiny"), other)
    same = dict(seed=4, bands="3,2,1", steps=2, tile=33, overlap=8)
    assert scene_status(src, out, request_for(tiny_model_file, **same)) == (True, None)
    complete, reason = scene_status(src, out, request_for(other, **same))
    assert not complete and reason.startswith("the existing output was made with model sha256 ")
    complete, reason = scene_status(src, out, request_for(tiny_model_file, **{**same, "tile": 64, "overlap": 16}))
    assert reason == "the existing output was made with tile 32 (now 64), overlap 8 (now 16)"
    # --overwrite always redoes; a damaged output is redone
    assert run(seed=4, bands="3,2,1", steps=2, overwrite=True).reason == "--overwrite"
    out.write_bytes(b"II*\x00garbage")
    assert run(seed=4, bands="3,2,1", steps=2).reason == "the existing output is unreadable or was not written by rsisr"


def test_scaling_is_compared_by_mode_for_auto_and_by_values_otherwise(tmp_path, make_geotiff, tiny_model_file,
                                                                       one_thread):
    from rsisr.batch import request_for, scene_status

    src = make_geotiff(width=24, height=20, dtype="uint16")
    out = tmp_path / "a.tif"
    assert upscale_scene(src, out, tiny_model_file, tile=32, overlap=8, device="cpu").status == "done"
    with rasterio.open(out) as o:
        assert json.loads(o.tags()["RSISR_SCALING"])["mode"] == "auto"  # the percentiles of this raster

    def status(scale):
        return scene_status(src, out, request_for(tiny_model_file, tile=32, overlap=8, scale=scale))

    assert status("auto") == (True, None)
    assert status("0,1000") == (False, "the existing output was made with scaling auto (now 0,1000)")
    assert status("none")[1] == "the existing output was made with scaling auto (now none)"
    done = upscale_scene(src, out, tiny_model_file, tile=32, overlap=8, scale="0,1000", device="cpu")
    assert done.status == "done" and "scaling auto (now 0,1000)" in done.reason
    assert status("0,1000") == (True, None)
    assert status("0,1000,0,1000,0,1000") == (True, None)  # the same range given per band
    assert status("0,2000")[1] == "the existing output was made with scaling 0,1000 (now 0,2000)"
    assert status("0,1000,0,1000,0,900")[1] == ("the existing output was made with scaling 0,1000 "
                                                 "(now 0,1000,0,1000,0,900)")
    # uint8 rasters are always taken as they are: every --scale gives the same output
    src8 = make_geotiff(width=24, height=20)
    out8 = tmp_path / "b.tif"
    upscale_scene(src8, out8, tiny_model_file, tile=32, overlap=8, device="cpu")
    assert scene_status(src8, out8, request_for(tiny_model_file, tile=32, overlap=8, scale="0,1000")) == (True, None)


def test_folder_rerun_that_matches_starts_no_cluster_and_bad_options_fail_first(tmp_path, make_geotiff,
                                                                                 tiny_model_file, monkeypatch):
    import distributed

    from rsisr.errors import ConfigError

    src_dir = tmp_path / "in"
    src_dir.mkdir()
    src = make_geotiff(width=24, height=20, name="in/a.tif")
    upscale_scene(src, tmp_path / "out" / "a.tif", tiny_model_file, seed=2, tile=32, overlap=8, device="cpu")

    def no_cluster(*args, **kwargs):
        raise AssertionError("a cluster was started")

    monkeypatch.setattr(distributed, "LocalCluster", no_cluster)
    report = upscale_folder(src_dir, tmp_path / "out", tiny_model_file, seed=2, tile=32, overlap=8,
                            report=tmp_path / "r.json")
    assert report.counts == {"done": 0, "skipped": 1, "failed": 0}
    assert json.loads((tmp_path / "r.json").read_text())["scenes"][0]["reason"] is None
    with pytest.raises(ConfigError, match="larger than twice"):
        upscale_folder(src_dir, tmp_path / "out", tiny_model_file, tile=16, overlap=8)
    with pytest.raises(InputError, match="invalid --scale"):
        upscale_folder(src_dir, tmp_path / "out", tiny_model_file, scale="x")


@pytest.mark.slow
def test_cli_rerun_with_another_seed_redoes_every_scene(tmp_path, make_geotiff, tiny_model_file):
    src_dir = tmp_path / "in"
    src_dir.mkdir()
    names = ["a.tif", "b.tif"]
    for name in names:
        make_geotiff(width=40, height=32, name=f"in/{name}")
    out, report = tmp_path / "out", tmp_path / "report.json"
    args = ["batch", str(src_dir), "-o", str(out), "--model", str(tiny_model_file), "--tile", "32",
            "--overlap", "8", "--workers", "1", "--threads-per-worker", "1", "--report", str(report)]
    assert CliRunner().invoke(cli, [*args, "-q"]).exit_code == 0
    result = CliRunner().invoke(cli, [*args, "--seed", "7"])
    assert result.exit_code == 0, result.output
    scenes = json.loads(report.read_text())["scenes"]
    assert [s["status"] for s in scenes] == ["done", "done"]
    assert all(s["reason"] == "the existing output was made with seed 0 (now 7)" for s in scenes)
    assert result.output.count("redone: the existing output was made with seed 0 (now 7)") == 2
    for name in names:
        with rasterio.open(out / name) as o:
            assert o.tags()["RSISR_SEED"] == "7"
    again = CliRunner().invoke(cli, [*args, "--seed", "7"])
    assert "0 done, 2 skipped, 0 failed" in again.output


# -- rsisr batch -q --------------------------------------------------------------------------------

def _chatty_scene(src, dst, **kwargs):
    """A real scene, then what dask's worker logs when the scheduler goes first at shutdown."""
    import logging

    result = upscale_scene(src, dst, **kwargs)
    logging.getLogger("distributed.worker").error("Failed to communicate with scheduler during heartbeat.")
    return result


def test_quiet_batch_prints_nothing(tmp_path, make_geotiff, tiny_model_file, capfd):
    """`rsisr batch -q` (the rsisr logger at ERROR): nothing on stderr, neither the workers'
    warnings (a 5-band scene's band choice) nor dask's shutdown errors."""
    import logging

    import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    src_dir = tmp_path / "in"
    src_dir.mkdir()
    make_geotiff(width=24, height=20, count=5, name="in/a.tif")
    rsisr_log = logging.getLogger("rsisr")
    level = rsisr_log.level
    rsisr_log.setLevel(logging.ERROR)
    try:
        capfd.readouterr()
        report = upscale_folder(src_dir, tmp_path / "out", tiny_model_file, workers=1, threads_per_worker=1,
                                scene_fn=_chatty_scene, tile=32, overlap=8, device="cpu")
    finally:
        rsisr_log.setLevel(level)
    assert report.counts["done"] == 1, report.to_dict()
    assert capfd.readouterr().err == ""
