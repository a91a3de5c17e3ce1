"""One scene split over a Dask cluster (rsisr.distributed): bit-identical to the single-process run,
a worker killed mid-part, an interrupted job resumed, cleanup on errors, rsisr batch's split scenes."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from rasterio.windows import Window
from rasterio.windows import bounds as window_bounds

from conftest import ROOT, dask_processes, free_port, one_line_error, rsisr_cli, torch_threads
from rsisr.distributed import upscale_distributed
from rsisr.errors import InputError
from rsisr.standins import ConvX4, NearestX4, NoiseX4
from rsisr.upscale import upscale_file
from upscale_helpers import leftovers

NODATA = "rasterio_RGB.byte_u8_32618_300m.tif"  # nodata=0 collar
MASKED = "rasterio_cogeo_rgb_u8_3857_0.6m.tif"  # internal mask
UINT16 = "landsat8_LC08_224078_crop1024_3band_u16_32621_30m.tif"  # --scale auto, clipped values carried


@pytest.fixture(scope="module")
def client():
    """A LocalCluster of two worker processes with one thread each, shared by this module."""
    import cloudpickle
    from distributed import Client, LocalCluster

    from rsisr.batch.run import _worker_environ

    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # DieOnce, defined here
    with _worker_environ():
        cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0")
    with cluster, Client(cluster) as c:
        yield c


def _bounds(path, window):
    with rasterio.open(path) as s:
        return window_bounds(window, s.transform)


def _same(a_path, b_path) -> None:
    """What a user would compare: pixels, masks (dataset and per band), profile, tags, metadata."""
    with rasterio.open(a_path) as a, rasterio.open(b_path) as b:
        assert np.array_equal(a.read(), b.read())
        assert np.array_equal(a.dataset_mask(), b.dataset_mask())
        assert np.array_equal(a.read_masks(), b.read_masks())
        assert a.mask_flag_enums == b.mask_flag_enums
        assert a.profile == b.profile
        assert a.tags() == b.tags()
        assert (a.colorinterp, a.descriptions, a.units) == (b.colorinterp, b.descriptions, b.units)


def _single(tmp_path, src, model, **kw) -> Path:
    out = tmp_path / "single.tif"
    with torch_threads(1):
        upscale_file(src, out, model, device="cpu", **kw)
    return out


@pytest.mark.parametrize("name,window,model", [
    (NODATA, Window(500, 0, 200, 220), NoiseX4()),  # a third nodata; noise from scene coordinates
    (MASKED, Window(700, 300, 100, 170), "tiny"),  # internal mask; the tiny model (precision auto)
    pytest.param(MASKED, Window(700, 300, 200, 250), ConvX4(), marks=pytest.mark.slow),  # 3x3 receptive field
    (UINT16, Window(100, 120, 200, 230), NearestX4()),  # whole-scene percentiles, carry of clipped values
])
def test_two_workers_match_the_single_process_run(name, window, model, client, geotiff_dir, tmp_path):
    if model == "tiny":
        import rsisr

        torch.manual_seed(0)
        model = rsisr.build_model("tiny").eval()
    src = geotiff_dir / name
    kw = dict(bounds=_bounds(src, window), tile=64, overlap=8)
    single = _single(tmp_path, src, model, **kw)
    out = tmp_path / "split.tif"
    result = upscale_distributed(src, out, model, client=client, threads_per_worker=1, part_size=48, **kw)
    assert len(result.parts) >= 4 and result.parts_run == len(result.parts) and result.parts_kept == 0
    assert len(client.scheduler_info()["workers"]) == 2  # (which worker computes which part is Dask's choice)
    _same(single, out)
    assert leftovers(tmp_path) == [] and not list(tmp_path.glob(".*rsisr-parts"))


def test_internal_mask_with_holes_and_cog(client, geotiff_dir, tmp_path):
    """The nodata raster rewritten with an internal mask instead: masked pixels, filled before
    inference, written as a mask; and a COG with the user's creation options, like a single run."""
    src = tmp_path / "masked.tif"
    with rasterio.open(geotiff_dir / NODATA) as s:
        profile = {**s.profile, "nodata": None}
        data, mask = s.read(), s.dataset_mask()
    with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True), rasterio.open(src, "w", **profile) as d:
        d.write(data)
        d.write_mask(mask)
    kw = dict(bounds=_bounds(src, Window(480, 10, 280, 250)), tile=64, overlap=8, cog=True,
              co=["COMPRESS=ZSTD", "BLOCKSIZE=256"])
    single = _single(tmp_path, src, ConvX4(), **kw)
    out = tmp_path / "split.tif"
    upscale_distributed(src, out, ConvX4(), client=client, threads_per_worker=1, part_size=40, **kw)
    _same(single, out)
    with rasterio.open(out) as o:
        assert o.mask_flag_enums[0] == [rasterio.enums.MaskFlags.per_dataset]
        assert 0 < (o.dataset_mask() == 0).mean() < 1
        assert o.overviews(1) and o.profile["compress"] == "zstd"


def test_ensemble_uncertainty_and_other_bands(client, geotiff_dir, tmp_path):
    """--ensemble with --uncertainty (two files, both assembled) and --other-bands bicubic on a
    4-band raster with nodata, split as in a single run."""
    src = geotiff_dir / "naip_m_4709963_se_14_2020_rgbn_u8_26914_5m.tif"
    kw = dict(bounds=_bounds(src, Window(300, 200, 150, 230)), tile=64, overlap=8, ensemble=3, seed=4,
              other_bands="bicubic")
    with torch_threads(1):
        upscale_file(src, tmp_path / "single.tif", NoiseX4(), device="cpu", uncertainty=tmp_path / "single_std.tif",
                     **kw)
    result = upscale_distributed(src, tmp_path / "split.tif", NoiseX4(), client=client, threads_per_worker=1,
                                 part_size=48, uncertainty=tmp_path / "split_std.tif", **kw)
    assert result.uncertainty == tmp_path / "split_std.tif" and len(result.parts) >= 4
    _same(tmp_path / "single.tif", tmp_path / "split.tif")
    with rasterio.open(tmp_path / "single_std.tif") as a, rasterio.open(tmp_path / "split_std.tif") as b:
        assert np.array_equal(a.read(), b.read(), equal_nan=True) and np.isfinite(a.read()).any()
        assert {**a.profile, "nodata": repr(a.nodata)} == {**b.profile, "nodata": repr(b.nodata)}  # nan != nan
        assert np.array_equal(a.dataset_mask(), b.dataset_mask())
        assert {**a.tags(), "RSISR_OUTPUT": ""} == {**b.tags(), "RSISR_OUTPUT": ""}
    with rasterio.open(tmp_path / "split.tif") as o:
        assert o.count == 4 and o.tags()["RSISR_ENSEMBLE"] == "3"
    assert leftovers(tmp_path) == [] and not list(tmp_path.glob(".*rsisr-parts"))


@pytest.mark.parametrize("model", [NoiseX4(), pytest.param("tiny", marks=pytest.mark.slow)])
def test_columns_and_rows_at_fp32(model, client, make_geotiff, tmp_path):
    """Wider than the engine's 2048-column panel: parts cut at panel edges as well as tile rows;
    with the tiny model at fp32 too, where batches of other compositions would differ by 1e-6."""
    if model == "tiny":
        import rsisr

        torch.manual_seed(0)
        model = rsisr.build_model("tiny").eval()
    src = make_geotiff(width=2150, height=70)
    kw = dict(tile=64, overlap=8, precision="fp32", seed=5)
    single = _single(tmp_path, src, model, **kw)
    out = tmp_path / "split.tif"
    result = upscale_distributed(src, out, model, client=client, threads_per_worker=1, part_size=56, **kw)
    assert {(p.col_off, p.width) for p in result.parts} == {(0, 2048), (2048, 102)}
    assert len({p.row_off for p in result.parts}) == 2
    _same(single, out)


class DieOnce(torch.nn.Module):
    """Nearest x4 that kills its worker process at its second tile batch while ``marker`` exists
    (removing it), i.e. in the middle of a part, with the part's file half written."""

    def __init__(self, marker: str):
        super().__init__()
        self.marker = marker
        self.calls = 0

    def forward(self, lr, noises=(), steps=1):
        self.calls += 1
        if self.calls >= 2 and os.path.exists(self.marker):
            os.unlink(self.marker)
            os._exit(1)
        return torch.nn.functional.interpolate(lr, scale_factor=4, mode="nearest")


def test_worker_killed_mid_part(client, geotiff_dir, tmp_path):
    marker = tmp_path / "die"
    marker.write_text("x")
    src = geotiff_dir / NODATA
    kw = dict(bounds=_bounds(src, Window(500, 0, 260, 300)), tile=64, overlap=8)
    out = tmp_path / "split.tif"
    result = upscale_distributed(src, out, DieOnce(str(marker)), client=client, threads_per_worker=1, part_size=48,
                                 **kw)
    assert not marker.exists()  # a worker really died, mid-part
    assert result.parts_run == len(result.parts)
    _same(_single(tmp_path, src, DieOnce(str(marker)), **kw), out)  # the marker is gone: it lives here
    assert leftovers(tmp_path) == [] and not list(tmp_path.glob(".*rsisr-parts"))
    client.wait_for_workers(2, timeout=60)  # the nanny restarted it, for the next tests


class Broken(NearestX4):
    def forward(self, lr, noises=(), steps=1):
        raise InputError("this stand-in fails on purpose")


def test_failing_part_removes_everything(client, geotiff_dir, tmp_path):
    src = geotiff_dir / NODATA
    out = tmp_path / "split.tif"
    with pytest.raises(InputError, match="on purpose"):
        upscale_distributed(src, out, Broken(), client=client, threads_per_worker=1, retries=0, part_size=48,
                            bounds=_bounds(src, Window(500, 0, 200, 200)), tile=64, overlap=8)
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []  # no parts folder, no temporary files


class Slow(NearestX4):
    def forward(self, lr, noises=(), steps=1):
        import time

        time.sleep(0.05)
        return super().forward(lr, noises, steps)


def test_ctrl_c_removes_everything(client, geotiff_dir, tmp_path):
    """Interrupted while the other worker is mid-part, on a cluster that stays up: that part
    stops at its next tile and removes its temporary file, and nothing is left."""
    import time

    src = geotiff_dir / NODATA

    def interrupt(done, total):
        if done:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        upscale_distributed(src, tmp_path / "split.tif", Slow(), client=client, threads_per_worker=1,
                            part_size=48, progress=interrupt, bounds=_bounds(src, Window(500, 0, 200, 300)),
                            tile=64, overlap=8)
    assert list(tmp_path.iterdir()) == []  # no output, no parts folder, no temporary files
    deadline = time.monotonic() + 30
    while any(client.processing().values()) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert list(tmp_path.iterdir()) == []  # and the part that was running did not come back


def test_discard_goes_on_while_tasks_remove_their_files(tmp_path, monkeypatch):
    """A task that notices the cancel removes its temporary file while the folder is being removed:
    the removal starts again rather than stopping half way."""
    from rsisr.distributed.job import discard, running

    folder = tmp_path / ".o.tif.rsisr-parts"
    folder.mkdir()
    (folder / "job").write_text("key")
    (folder / "part-00000.tif").write_bytes(b"x")
    assert running(folder)
    real, calls = shutil.rmtree, []

    def racing(path, *args, **kwargs):
        calls.append(path)
        if len(calls) == 1:
            raise FileNotFoundError(2, "No such file or directory", str(folder / ".part-00001.tif.tmp"))
        real(path, *args, **kwargs)

    monkeypatch.setattr(shutil, "rmtree", racing)
    discard(folder)
    assert not folder.exists() and len(calls) == 2


RESUME = textwrap.dedent("""
    import os, signal, sys
    from distributed import Client, LocalCluster
    from rsisr.distributed import upscale_distributed
    from rsisr.standins import ConvX4

    def progress(done, total):
        if done >= 2:  # the client dies outright after two parts: no cleanup can run
            os.kill(os.getpid(), signal.SIGKILL)

    if __name__ == "__main__":
        src, out, left, bottom, right, top = sys.argv[1:]
        with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=":0") as lc, \\
                Client(lc) as c:
            upscale_distributed(src, out, ConvX4(), client=c, threads_per_worker=1, part_size=40, tile=64,
                                overlap=8, progress=progress,
                                bounds=(float(left), float(bottom), float(right), float(top)))
""")


def test_interrupted_job_resumes_with_only_the_missing_parts(client, geotiff_dir, tmp_path):
    src = geotiff_dir / NODATA
    bounds = _bounds(src, Window(480, 10, 280, 260))
    out = tmp_path / "out" / "split.tif"
    out.parent.mkdir()
    script = tmp_path / "resume.py"
    script.write_text(RESUME)
    killed = subprocess.run([sys.executable, str(script), str(src), str(out), *map(str, bounds)], cwd=ROOT,
                            capture_output=True, text=True, timeout=300)
    assert killed.returncode == -9, killed.stderr
    folder = out.parent / ".split.tif.rsisr-parts"
    kept = sorted(p.name for p in folder.glob("part-*.tif"))
    assert len(kept) >= 2 and not out.exists()
    saved = tmp_path / "saved"
    shutil.copytree(folder, saved)
    kw = dict(bounds=bounds, tile=64, overlap=8)
    # another plan (another seed) keeps nothing
    other = upscale_distributed(src, out, ConvX4(), client=client, threads_per_worker=1, part_size=40, seed=1, **kw)
    assert other.parts_kept == 0 and other.parts_run == len(other.parts)
    out.unlink()
    shutil.copytree(saved, folder)
    result = upscale_distributed(src, out, ConvX4(), client=client, threads_per_worker=1, part_size=40, **kw)
    assert result.parts_kept == len(kept) and result.parts_run == len(result.parts) - len(kept)
    ran = {s.index for s in result.stats}
    assert ran == {p.index for p in result.parts} - {int(name[5:10]) for name in kept}  # only the missing ones
    assert result.tiles == sum(result.parts[i].tiles for i in ran)
    _same(_single(tmp_path, src, ConvX4(), **kw), out)
    assert not folder.exists() and leftovers(out.parent) == []


@pytest.mark.slow
def test_cli_workers_tiny_model_one_thread(geotiff_dir, tiny_model_file, tmp_path):
    """`rsisr upscale --workers 2 --threads-per-worker 1` (its own LocalCluster) with the tiny
    model equals `rsisr upscale` at one thread, on the internal-mask raster."""
    src = geotiff_dir / MASKED
    args = ["--model", tiny_model_file, "--tile", "64", "--overlap", "8", "--seed", "2", "--bounds",
            *_bounds(src, Window(600, 100, 150, 200)), "-q"]
    with torch_threads(1):
        single = rsisr_cli(["upscale", src, "-o", tmp_path / "single.tif", *args])
    assert single.exit_code == 0, single.output
    split = rsisr_cli(["upscale", src, "-o", tmp_path / "split.tif", "--workers", "2", "--threads-per-worker", "1",
                       "--part-size", "40", *args])
    assert split.exit_code == 0 and split.output == "", split.output
    _same(tmp_path / "single.tif", tmp_path / "split.tif")


def test_batch_splits_the_last_scenes(client, make_geotiff, tiny_model_file, tmp_path, caplog):
    """Fewer scenes than workers: rsisr batch cuts the scene into parts; same output as upscale."""
    import logging

    from rsisr.batch import upscale_folder

    scenes = tmp_path / "in"
    scenes.mkdir()
    make_geotiff(width=90, height=150, name="in/a.tif", nodata=0)
    kw = dict(tile=64, overlap=8, seed=3)
    with caplog.at_level(logging.INFO, logger="rsisr.distributed"):
        report = upscale_folder(scenes, tmp_path / "out", tiny_model_file, scheduler=client.scheduler.address,
                                threads_per_worker=1, part_size=64, **kw)
    assert report.counts == {"done": 1, "skipped": 0, "failed": 0}, report.to_dict()
    assert any("parts" in r.getMessage() for r in caplog.records if r.name == "rsisr.distributed.scenes")
    with torch_threads(1):
        upscale_file(scenes / "a.tif", tmp_path / "single.tif", tiny_model_file, device="cpu", **kw)
    _same(tmp_path / "single.tif", tmp_path / "out" / "a.tif")
    assert leftovers(tmp_path / "out") == [] and not list((tmp_path / "out").glob(".*"))


def test_local_workers_start_without_the_malloc_trim_threshold():
    """rsisr's LocalCluster drops dask's MALLOC_TRIM_THRESHOLD_=65536 for its workers: with it,
    the default model took 1.6x the CPU time per tile in a worker."""
    from rsisr.batch.run import _client

    with _client(None, 1, 1, True) as (c, n, threads):
        env = c.run(lambda: (os.environ.get("MALLOC_TRIM_THRESHOLD_"), os.environ.get("OMP_NUM_THREADS")))
    assert (n, threads) == (1, 1)
    assert list(env.values()) == [(None, "1")]


def test_cli_errors_before_any_cluster(geotiff_dir, tmp_path):
    src = geotiff_dir / NODATA
    one_line_error(rsisr_cli(["upscale", src, "-o", tmp_path / "o.tif", "--part-size", "64"]),
                   "--part-size needs --workers N or --scheduler ADDRESS")
    (tmp_path / "exists.tif").write_bytes(b"x")
    one_line_error(rsisr_cli(["upscale", src, "-o", tmp_path / "exists.tif", "--workers", "2"]), "--overwrite")
    one_line_error(rsisr_cli(["upscale", src, "-o", tmp_path / "o.tif", "--workers", "2", "--tile", "16",
                              "--overlap", "8"]), "--tile")
    one_line_error(rsisr_cli(["upscale", src, "-o", tmp_path / "o.tif", "--workers", "2", "--model",
                              tmp_path / "none.safetensors"]), "none.safetensors")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exists.tif"]


@pytest.mark.slow
def test_existing_scheduler(geotiff_dir, tiny_model_file, tmp_path):
    """`rsisr upscale --scheduler ADDRESS` on a `dask scheduler` and two `dask worker`s."""
    with dask_processes(2) as address:
        src = geotiff_dir / NODATA
        args = ["--model", tiny_model_file, "--tile", "64", "--overlap", "8", "--bounds",
                *_bounds(src, Window(500, 0, 200, 240)), "-q"]
        with torch_threads(1):
            assert rsisr_cli(["upscale", src, "-o", tmp_path / "single.tif", *args]).exit_code == 0
        result = rsisr_cli(["upscale", src, "-o", tmp_path / "split.tif", "--scheduler", address, "--part-size", "48",
                            "--threads-per-worker", "1", *args])
        assert result.exit_code == 0, result.output
        _same(tmp_path / "single.tif", tmp_path / "split.tif")


@pytest.mark.slow
def test_unreachable_scheduler_is_one_line(geotiff_dir, tmp_path):
    one_line_error(rsisr_cli(["upscale", geotiff_dir / NODATA, "-o", tmp_path / "o.tif", "--scheduler",
                              f"tcp://127.0.0.1:{free_port()}"]), "cannot reach the Dask scheduler")
    assert list(tmp_path.iterdir()) == []


def test_cli_workers_prints_no_dask_chatter(geotiff_dir, tiny_model_file, tmp_path):
    """A fresh `rsisr upscale --workers 1` process (dask not yet imported) prints nothing but the
    progress: dask's cluster start-up and shutdown INFO lines stay hidden without -v."""
    src = geotiff_dir / MASKED
    out = tmp_path / "out.tif"
    cmd = [sys.executable, "-c", "from rsisr_cli.main import cli; cli()", "upscale", str(src), "-o", str(out),
           "--model", str(tiny_model_file), "--tile", "64", "--overlap", "8", "--bounds",
           *map(str, _bounds(src, Window(600, 100, 40, 40))), "--workers", "1", "--threads-per-worker", "1"]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert out.exists()
    assert "INFO" not in done.stdout + done.stderr and "distributed" not in done.stdout + done.stderr
