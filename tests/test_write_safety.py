"""The write side of data safety: full disks, failing closes, killed and terminated writers,
stale temporary files, output names, and failing commands that print one line and nothing else."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio
from click.testing import CliRunner

from conftest import one_line_error
from rsisr.atomic import SUFFIX, atomic_open, pid_alive, remove_stale, temp_path, write_text
from rsisr.errors import OutputError
from rsisr.standins import NearestX4
from rsisr.upscale import upscale_file
from rsisr_cli.main import cli

CLI = [sys.executable, "-c", "from rsisr_cli.main import cli; cli()"]
BIG = "rasterio_cogeo_rgb_u8_3857_0.6m.tif"  # 1024 x 1024: long enough to be caught mid-write


def temporaries(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if SUFFIX in p.name)


@pytest.fixture
def small_disk(tmp_path):
    """Factory: a tmpfs of ``size`` bytes mounted in tmp_path (a full disk in miniature); skips
    where this process may not mount one."""
    mounted: list[Path] = []

    def mount(size: int) -> Path:
        folder = tmp_path / f"disk{len(mounted)}"
        folder.mkdir()
        if os.geteuid() != 0:
            pytest.skip("mounting a small tmpfs needs root; test_failing_close_* cover the same path without one")
        proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
                              capture_output=True, text=True)
        if proc.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here ({proc.stderr.strip() or proc.returncode}); "
                        "test_failing_close_* cover the same path without one")
        mounted.append(folder)
        return folder

    yield mount
    for folder in mounted:
        subprocess.run(["umount", "-l", str(folder)], capture_output=True)


# -- a full disk -----------------------------------------------------------------------------------

@pytest.mark.parametrize("cog", [False, True])
def test_full_disk_is_one_line_and_leaves_nothing(make_geotiff, tiny_model_file, tmp_path, small_disk, capfd, cog):
    """The output folder's disk fills up: exit 1, one line saying so, no file; libtiff's own
    "_tiffWriteProc: No space left on device." lines (printed by C code to fd 2) do not show."""
    src = make_geotiff(width=64, height=64)
    args = ["upscale", str(src), "--model", str(tiny_model_file), "--device", "cpu", "-q", *(["--cog"] if cog else [])]
    roomy = tmp_path / "roomy.tif"
    assert CliRunner().invoke(cli, [*args, "-o", str(roomy)]).exit_code == 0
    size = roomy.stat().st_size
    # plain: half the output fits; COG: the plain temporary fits, the COG copy beside it does not
    disk = small_disk(size // 2 if not cog else size + size // 4)
    capfd.readouterr()
    result = CliRunner().invoke(cli, [*args, "-o", str(disk / "out.tif")])
    assert result.exit_code == 1, result.output
    line = one_line_error(result.output, "No space left on device")
    assert str(disk / "out.tif") in line and "free some space" in line
    if cog:
        assert "Cloud Optimized" in line
    assert capfd.readouterr().err == ""
    assert list(disk.iterdir()) == []


def _full_disk_close(real_close):
    """What a full disk does to a GTiff on close: GDAL's flush fails, libtiff prints the reason
    to fd 2 and the file is cut short; rasterio's close() raises nothing."""

    def close(dataset):
        path = dataset.name
        real_close(dataset)
        os.write(2, b"_tiffWriteProc: No space left on device.\n")
        with open(path, "r+b") as f:
            f.truncate(os.path.getsize(path) // 2)

    return close


def test_failing_close_is_an_output_error(make_geotiff, tmp_path, monkeypatch, capfd):
    src = make_geotiff(width=40, height=30)
    out = tmp_path / "out" / "o.tif"
    out.parent.mkdir()
    monkeypatch.setattr(rasterio.io.DatasetWriter, "close", _full_disk_close(rasterio.io.DatasetWriter.close))
    with pytest.raises(OutputError, match="writing output .*o.tif failed: No space left on device"):
        upscale_file(src, out, NearestX4(), device="cpu")
    assert list(out.parent.iterdir()) == []
    assert capfd.readouterr().err == ""


def test_failing_close_detected_without_libtiff_output(make_geotiff, tmp_path, monkeypatch):
    """No message from libtiff (another GDAL build), a truncated file: the reopen check finds it."""
    src = make_geotiff(width=40, height=30)
    real = rasterio.io.DatasetWriter.close

    def cut(dataset):
        path = dataset.name
        real(dataset)
        with open(path, "r+b") as f:
            f.truncate(os.path.getsize(path) // 2)

    monkeypatch.setattr(rasterio.io.DatasetWriter, "close", cut)
    (tmp_path / "out").mkdir()
    with pytest.raises(OutputError, match="writing output .*o.tif failed"):
        upscale_file(src, tmp_path / "out" / "o.tif", NearestX4(), device="cpu")
    assert list((tmp_path / "out").iterdir()) == []


def test_failing_write_is_an_output_error(make_geotiff, tmp_path, monkeypatch):
    src = make_geotiff(width=40, height=30)
    old = tmp_path / "o.tif"
    old.write_bytes(b"old")

    def fail(self, *args, **kwargs):
        raise rasterio.errors.RasterioIOError("Write failed (injected)")

    monkeypatch.setattr(rasterio.io.DatasetWriter, "write", fail)
    with pytest.raises(OutputError, match="writing output .*o.tif failed: Write failed .injected."):
        upscale_file(src, old, NearestX4(), device="cpu", overwrite=True)
    assert old.read_bytes() == b"old"
    assert temporaries(tmp_path) == []


def test_a_good_write_still_shows_what_c_code_printed(make_geotiff, tmp_path, monkeypatch, capfd):
    """Held-back C output is printed again when the write succeeds: nothing is hidden then."""
    src = make_geotiff(width=40, height=30)
    real = rasterio.io.DatasetWriter.close

    def chatty(dataset):
        real(dataset)
        os.write(2, b"TIFFSomething: a harmless note.\n")

    monkeypatch.setattr(rasterio.io.DatasetWriter, "close", chatty)
    upscale_file(src, tmp_path / "o.tif", NearestX4(), device="cpu")
    assert "a harmless note" in capfd.readouterr().err


# -- output names ----------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["out.png", "out.jpg", "out", "out.tif.bak"])
def test_output_must_be_a_geotiff_name(make_geotiff, tiny_model_file, tmp_path, name):
    src = make_geotiff(width=16, height=16)
    result = CliRunner().invoke(cli, ["upscale", str(src), "-o", str(tmp_path / name), "--model",
                                      str(tiny_model_file), "--device", "cpu"])
    assert result.exit_code == 1, result.output
    one_line_error(result.output, "rsisr writes GeoTIFF")
    assert not (tmp_path / name).exists() and temporaries(tmp_path) == []


@pytest.mark.parametrize("name", ["out.TIF", "out.tiff", "out.Tiff"])
def test_geotiff_names_in_any_case(make_geotiff, tmp_path, name):
    upscale_file(make_geotiff(width=16, height=16), tmp_path / name, NearestX4(), device="cpu")
    with rasterio.open(tmp_path / name) as o:
        assert o.driver == "GTiff" and o.width == 64


# -- temporary files of killed writers ---------------------------------------------------------------

def _start(args, env=None):
    return subprocess.Popen([*CLI, *map(str, args)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})})


def _wait_for_temporary(proc, folder: Path) -> Path:
    """Block until ``proc`` has its temporary output open in ``folder`` (or fail if it ends first)."""
    import time

    while proc.poll() is None:
        found = [p for p in folder.iterdir() if p.name.endswith(SUFFIX)]
        if found:
            return found[0]
        time.sleep(0.05)
    pytest.fail(f"rsisr upscale ended (exit {proc.returncode}) before it started writing: {proc.communicate()}")


def test_sigterm_is_handled_like_ctrl_c(geotiff_dir, tiny_model_file, tmp_path):
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    proc = _start(["upscale", geotiff_dir / BIG, "-o", out_dir / "out.tif", "--model", tiny_model_file,
                   "--tile", "32", "--overlap", "8", "--batch-size", "1", "--device", "cpu"])
    try:
        tmp = _wait_for_temporary(proc, out_dir)
        assert f".{os.getpid()}." not in tmp.name and f".{proc.pid}." in tmp.name  # the writer's PID
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 1, err
    one_line_error(err, "interrupted by SIGTERM")
    assert list(out_dir.iterdir()) == []


def test_temporaries_of_killed_writers_are_removed_by_the_next_run(geotiff_dir, tiny_model_file, tmp_path,
                                                                   make_geotiff):
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    proc = _start(["upscale", geotiff_dir / BIG, "-o", out_dir / "out.tif", "--model", tiny_model_file,
                   "--tile", "32", "--overlap", "8", "--batch-size", "1", "--device", "cpu", "-q"])
    try:
        stale = _wait_for_temporary(proc, out_dir)
    finally:
        proc.kill()  # SIGKILL: no handler, no cleanup
        proc.wait()
    assert stale.exists() and not pid_alive(proc.pid)
    # what must survive: a live process's temporary, another host's, a legacy name, other files
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    try:
        live = Path(str(temp_path(out_dir / "other.tif")).replace(f".{os.getpid()}.", f".{sleeper.pid}."))
        foreign = out_dir / f".x.tif.another-host.{proc.pid}.0123abcd{SUFFIX}"
        legacy = out_dir / f".x.tif.0123abcd{SUFFIX}"
        notes = out_dir / f"notes.{proc.pid}.txt"
        for p in (live, foreign, legacy, notes):
            p.write_bytes(b"keep")
        upscale_file(make_geotiff(width=16, height=16), out_dir / "next.tif", NearestX4(), device="cpu")
        assert not stale.exists()
        assert sorted(p.name for p in out_dir.iterdir()) == sorted(
            ["next.tif", live.name, foreign.name, legacy.name, notes.name])
    finally:
        sleeper.kill()
        sleeper.wait()


def test_remove_stale_touches_only_dead_processes_of_this_host(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    mine = temp_path(tmp_path / "a.tif")
    gone = Path(str(temp_path(tmp_path / "a.tif")).replace(f".{os.getpid()}.", f".{dead.pid}."))
    sidecar = Path(f"{gone}.aux.xml")
    for p in (mine, gone, sidecar):
        p.write_bytes(b"x")
    assert sorted(remove_stale(tmp_path)) == sorted([gone, sidecar])
    assert [p.name for p in tmp_path.iterdir()] == [mine.name]
    assert remove_stale(tmp_path / "missing") == []


# -- other files written atomically -------------------------------------------------------------------

def test_atomic_text_write_replaces_the_target(tmp_path):
    target = tmp_path / "report.json"
    target.write_text("old")
    write_text(target, "new\n")
    assert target.read_text() == "new\n" and temporaries(tmp_path) == []


def test_atomic_writes_on_a_full_disk(small_disk):
    disk = small_disk(64 * 1024)
    with pytest.raises(OutputError, match=r"cannot write report .*r.json: No space left on device; free some space"):
        write_text(disk / "r.json", "x" * 1_000_000, "report")
    import torch

    with pytest.raises(OutputError, match="No space left on device"):
        with atomic_open(disk / "c.pt", "wb", "checkpoint") as f:
            torch.save({"w": torch.zeros(100_000)}, f)  # torch's own error hides the cause; it is kept
    assert list(disk.iterdir()) == []


def test_failing_fsync_is_an_output_error(tmp_path, monkeypatch):
    import errno

    def eio(fd):
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    (tmp_path / "r.json").write_text("old")
    monkeypatch.setattr(os, "fsync", eio)
    with pytest.raises(OutputError, match="cannot write report .*r.json: Input/output error"):
        write_text(tmp_path / "r.json", "new", "report")
    assert (tmp_path / "r.json").read_text() == "old" and temporaries(tmp_path) == []


# -- failing commands print their error and nothing else -------------------------------------------

def _stderr_of(args) -> tuple[int, str]:
    proc = subprocess.run([*CLI, *map(str, args)], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    return proc.returncode, proc.stderr


def test_bad_creation_option_prints_only_the_error(make_geotiff, tiny_model_file, tmp_path):
    rc, err = _stderr_of(["upscale", make_geotiff(width=16, height=16), "-o", tmp_path / "o.tif", "--model",
                          tiny_model_file, "--co", "FOO=BAR"])
    assert rc == 1
    one_line_error(err, "FOO")


def test_truncated_four_band_input_prints_only_the_error(geotiff_dir, tiny_model_file, tmp_path):
    """The band-choice warning comes before the read fails; the failing command shows the error alone.
    (The file is a cut copy in tmp_path, as a broken download would be.)"""
    data = (geotiff_dir / "naip_m_4709963_se_14_2020_rgbn_u8_26914_5m.tif").read_bytes()
    cut = tmp_path / "cut.tif"
    cut.write_bytes(data[:600_000])
    rc, err = _stderr_of(["upscale", cut, "-o", tmp_path / "o.tif", "--model", tiny_model_file])
    assert rc == 1
    one_line_error(err, "truncated")
    assert not (tmp_path / "o.tif").exists()


# -- model files, training checkpoints and run files, evaluation reports --------------------------------

def test_model_file_on_a_full_disk(small_disk, tiny_model):
    import rsisr

    disk = small_disk(128 * 1024)  # the tiny model's file is ~450 KB
    with pytest.raises(OutputError, match=r"cannot write model file .*m.safetensors: No space left on device; free"):
        rsisr.save_model(tiny_model, disk / "m.safetensors")
    assert list(disk.iterdir()) == []


def test_model_file_write_error_is_an_output_error(tmp_path, tiny_model, monkeypatch):
    import safetensors.torch
    from safetensors import SafetensorError

    import rsisr

    def full(*args, **kwargs):
        raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")

    monkeypatch.setattr(safetensors.torch, "save_file", full)
    with pytest.raises(OutputError, match="cannot write model file .*m.safetensors: No space left on device"):
        rsisr.save_model(tiny_model, tmp_path / "m.safetensors")
    assert list(tmp_path.iterdir()) == []


class _Trainer:
    def __init__(self, n):
        import torch

        self.state = {"w": torch.zeros(n)}

    def state_dict(self):
        return self.state


def test_training_checkpoint_on_a_full_disk_keeps_the_older_one(small_disk):
    from rsisr.training.state import latest_checkpoint, load_checkpoint, save_checkpoint

    run = small_disk(256 * 1024)
    first = save_checkpoint(run, 10, _Trainer(1000), "a: 1\n", keep=1)
    with pytest.raises(OutputError, match=r"cannot write training checkpoint .*step_00000020.pt: No space left"):
        save_checkpoint(run, 20, _Trainer(1_000_000), "a: 1\n", keep=1)
    assert latest_checkpoint(run) == first and load_checkpoint(first)["step"] == 10
    assert [p.name for p in (run / "checkpoints").iterdir()] == [first.name]


def test_training_checkpoint_fsync_error_keeps_the_older_one(tmp_path, monkeypatch):
    import errno

    from rsisr.training.state import latest_checkpoint, save_checkpoint

    first = save_checkpoint(tmp_path, 10, _Trainer(10), "a: 1\n", keep=1)

    def eio(fd):
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    monkeypatch.setattr(os, "fsync", eio)
    with pytest.raises(OutputError, match="cannot write training checkpoint .*step_00000020.pt: Input/output error"):
        save_checkpoint(tmp_path, 20, _Trainer(10), "a: 1\n", keep=1)
    assert latest_checkpoint(tmp_path) == first
    assert [p.name for p in (tmp_path / "checkpoints").iterdir()] == [first.name]


def test_metrics_row_that_does_not_fit_is_cut_back(small_disk):
    from rsisr.training.metrics import MetricsLog, read_metrics

    run = small_disk(64 * 1024)
    metrics = MetricsLog(run / "metrics.csv", ["step", "loss"])
    metrics.write({"step": 1, "loss": 0.5})
    before = (run / "metrics.csv").read_bytes()
    (run / "filler").write_bytes(b"\0" * (64 * 1024 - 4096 - len(before)))  # what is left is one page
    with pytest.raises(OutputError, match="cannot write metrics file .*metrics.csv: No space left"):
        metrics.write({"step": 2, "loss": "x" * 10_000})
    assert (run / "metrics.csv").read_bytes() == before
    assert read_metrics(run / "metrics.csv") == [{"step": 1.0, "loss": 0.5}]


def test_evaluation_report_on_a_full_disk(small_disk):
    from rsisr.evaluation.evaluate import write_report

    disk = small_disk(64 * 1024)
    with pytest.raises(OutputError, match="cannot write report .*report.json: No space left"):
        write_report({"values": list(range(100_000))}, disk / "report.json")
    assert list(disk.iterdir()) == []


# -- signals ------------------------------------------------------------------------------------------

def test_sigterm_runs_the_sigint_handler_in_force():
    """Training's handler (stop after this step, write a checkpoint) gets SIGTERM too; without
    one, SIGTERM unwinds like Ctrl-C."""
    from rsisr_cli.main import Terminated, _sigterm_as_sigint

    seen = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: seen.append(signum))
    try:
        _sigterm_as_sigint(signal.SIGTERM, None)
        assert seen == [signal.SIGINT]
        signal.signal(signal.SIGINT, signal.default_int_handler)
        with pytest.raises(Terminated):
            _sigterm_as_sigint(signal.SIGTERM, None)
    finally:
        signal.signal(signal.SIGINT, previous)


@pytest.mark.parametrize("exc, message", [(KeyboardInterrupt, "Error: interrupted"),
                                          ("terminated", "Error: interrupted by SIGTERM")])
def test_interrupts_are_one_line(make_geotiff, tmp_path, monkeypatch, exc, message):
    import rsisr.upscale
    from rsisr_cli.main import Terminated

    def interrupted(*args, **kwargs):
        raise Terminated() if exc == "terminated" else exc()

    monkeypatch.setattr(rsisr.upscale, "upscale_file", interrupted)
    result = CliRunner().invoke(cli, ["upscale", str(make_geotiff(width=16, height=16)), "-o", str(tmp_path / "o.tif")])
    assert result.exit_code == 1
    assert [line for line in result.output.splitlines() if line.strip()] == [message]
