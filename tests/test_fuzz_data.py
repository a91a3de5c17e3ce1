"""Mutated real images through the training data loader, ``rsisr batch`` and ``rsisr evaluate``
(issue 20): a damaged image is skipped with one warning naming it (training), reported as a
failed scene with one line naming it (batch), or stops the run with one line (evaluate); never
a traceback or an exception of another type."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import fuzzing
from rsisr.errors import InputError
from rsisr.training import data as tdata
from rsisr_cli.main import cli

pytestmark = pytest.mark.usefixtures("one_thread")

#: Real 8-bit tiles beside the GeoTIFF miniatures: JPEG and PNG from train/, PNG from eval/.
PIL_SOURCES = ("train/daressalaam_TZ__OAM-1277168-1083840-21.jpg", "train/kampala_UG__OAM-1238424-1046545-21.png",
               "eval/HARV_001.png", "eval/SJER_002.png")


@pytest.fixture(scope="module")
def corpus(shared_data, geotiff_dir, tmp_path_factory) -> dict[str, Path]:
    """{name: file}: the GeoTIFF miniatures and four real PNG/JPEG tiles (copied to a temp folder)."""
    base = tmp_path_factory.mktemp("fuzz-data")
    out = fuzzing.build_corpus(base / "corpus", geotiff_dir)
    for rel in PIL_SOURCES:
        src = shared_data / rel
        out[src.name] = Path(shutil.copy(src, base / "corpus" / src.name))
    return out


def mutated(corpus, folder: Path, seed: int, count: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    return [fuzzing.write_case(r, corpus, folder) for r in fuzzing.recipes(corpus, seed, count)]


def test_training_scan_skips_every_damaged_image_and_keeps_the_rest_readable(corpus, tmp_path, caplog):
    """24 mutated images among the 12 intact ones: the scan keeps each intact one, names each one
    it skips in one warning, and every image it keeps reads at any window (the old scan read a
    decimated sample only, so damaged blocks surfaced in the middle of training)."""
    folder = tmp_path / "data"
    folder.mkdir()
    for p in corpus.values():
        shutil.copy(p, folder / p.name)
    bad = mutated(corpus, folder, seed=3, count=24)
    with caplog.at_level(logging.WARNING, logger="rsisr"):
        scan = tdata.scan_folder(folder, crop=32)
    warnings = [r.getMessage() for r in caplog.records if r.name.startswith("rsisr")]
    kept = {Path(r.path).name for r in scan.images}
    assert {p.name for p in corpus.values()} <= kept  # every intact image is kept
    assert scan.unreadable == len(scan.skipped) == len(warnings) > 0
    for path, why in scan.skipped:
        assert Path(path).name in {p.name for p in bad}
        assert sum(Path(path).name in w for w in warnings) == 1 and "\n" not in why
    dataset = tdata.CropDataset(scan.images, crop=32, seed=0)
    for index in range(len(scan.images)):
        for position in range(3):
            x = dataset[(index, position)]
            assert x.shape == (3, 32, 32) and bool(x.isfinite().all())


@pytest.mark.parametrize("recipe_seed", range(3))
def test_scan_one_raises_only_input_errors(corpus, tmp_path, recipe_seed):
    for path in mutated(corpus, tmp_path, seed=100 + recipe_seed, count=12):
        try:
            rec = tdata._scan_one(path, "auto")
        except InputError as exc:
            assert path.name in str(exc) and "\n" not in str(exc)
            continue
        arr = tdata.read_window(rec, 0, 0, min(32, rec.height, rec.width))
        assert np.isfinite(arr).all()


def _train(data: Path, out: Path, *extra: str):
    return CliRunner().invoke(cli, ["train", "ae", "--data", str(data), "--out", str(out), "--preset", "tiny",
                                    "--batch-size", "2", "--set", "data.crop=32", "--set", "ae.disc_channels=8",
                                    "--max-steps", "1", "-q", *extra])


def test_train_skips_and_logs_or_stops_with_strict_data(corpus, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    for name in ("rasterio_cogeo_rgb_u8_3857_0.6m.tif", "HARV_001.png", "SJER_002.png"):
        shutil.copy(corpus[name], data / name)
    broken = data / "broken_zeroed.tif"
    raw = bytearray(corpus["landsat8_LC08_224078_crop1024_3band_u16_32621_30m.tif"].read_bytes())
    raw[4096:8192] = bytes(4096)  # opens, and its header reads; blocks fail to decode
    broken.write_bytes(bytes(raw))
    result = _train(data, tmp_path / "run")
    assert result.exit_code == 0, result.output
    log = (tmp_path / "run" / "train.log").read_text()
    assert f"skipped unreadable image {broken}: cannot read pixels" in log
    assert "1 unreadable images" in log and "(1 unreadable and 0 smaller than the crop skipped)" in log
    result = _train(data, tmp_path / "strict", "--strict-data")
    assert result.exit_code == 1
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: cannot read pixels"), result.output
    assert "broken_zeroed.tif" in lines[0] and "--strict-data" in lines[0]
    assert not (tmp_path / "strict").exists()  # bad input leaves no run directory


def test_a_loader_worker_error_is_one_line(corpus, tmp_path):
    """A file damaged after the scan, read in a loader worker process: the InputError reaches the
    caller with its own message, not torch's copy of the worker's traceback."""
    path = tmp_path / "tile.tif"
    shutil.copy(corpus["landsat8_LC08_224078_crop1024_3band_u16_32621_30m.tif"], path)
    scan = tdata.scan_folder(tmp_path, crop=32)
    raw = bytearray(path.read_bytes())
    raw[4096:len(raw) - 4096] = bytes(len(raw) - 8192)
    path.write_bytes(bytes(raw))
    batches = tdata.make_loader(tdata.CropDataset(scan.images, 32, seed=0), 2, 0, workers=1, pin=False)
    with pytest.raises(InputError) as info:
        next(batches)
    assert str(info.value).startswith("cannot read pixels") and "tile.tif" in str(info.value)
    assert "\n" not in str(info.value) and "Traceback" not in str(info.value)


def test_batch_scenes_fail_with_one_line_naming_the_file(corpus, tmp_path):
    """rsisr batch's per-scene function on 8 mutated scenes: done with a readable output, or
    failed with one line that names the input; nothing else in the output folder."""
    import rasterio

    from rsisr.batch import is_complete, upscale_scene

    model = fuzzing.tiny_model_file(tmp_path / "tiny.safetensors")
    tifs = {k: v for k, v in corpus.items() if k.endswith(".tif")}
    inputs = mutated(tifs, tmp_path / "in", seed=5, count=8)
    out_dir = tmp_path / "out"
    statuses = []
    for src in inputs:
        dst = out_dir / src.name
        res = upscale_scene(src, dst, model=str(model), tile=32, overlap=8, device="cpu")
        statuses.append(res.status)
        if res.status == "done":
            with rasterio.open(dst) as ds:
                ds.read(1, window=((0, 8), (0, 8)))
            assert is_complete(dst)
        else:
            assert res.status == "failed" and src.name in res.error and "\n" not in res.error, res.error
            assert "Traceback" not in res.error and not dst.exists()
        assert is_complete(src) in (True, False)  # a damaged file never raises here
    assert {p.name for p in out_dir.iterdir()} == {s.name for s, st in zip(inputs, statuses) if st == "done"}
    assert "failed" in statuses


def test_evaluate_stops_with_one_line_on_a_damaged_image(corpus, tmp_path, tiny_model_file):
    from rsisr.evaluation.evaluate import read_hr

    pngs = {k: v for k, v in corpus.items() if k.endswith((".png", ".jpg"))}
    for path in mutated(pngs, tmp_path / "m", seed=6, count=16):
        try:
            hr = read_hr(path)
        except InputError as exc:
            assert str(path) in str(exc)
            continue
        assert hr.ndim == 4 and hr.shape[1] == 3
    data = tmp_path / "eval"
    data.mkdir()
    shutil.copy(corpus["HARV_001.png"], data / "a.png")
    (data / "b.png").write_bytes(corpus["SJER_002.png"].read_bytes()[:3000])
    result = CliRunner().invoke(cli, ["evaluate", "--data", str(data), "--out", str(tmp_path / "r.json"), "--model",
                                      str(tiny_model_file), "--metrics", "psnr", "--device", "cpu", "-q"])
    assert result.exit_code == 1
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: cannot read image") and "b.png" in lines[0], result.output
    assert not (tmp_path / "r.json").exists()


@pytest.mark.slow
def test_rsisr_batch_on_a_folder_of_damaged_scenes(corpus, tmp_path):
    """The real command with a one-worker LocalCluster: exit 1, a table row per failed scene,
    outputs only for the scenes that were done."""
    import subprocess
    import sys

    model = fuzzing.tiny_model_file(tmp_path / "tiny.safetensors")
    tifs = {k: v for k, v in corpus.items() if k.endswith(".tif")}
    inputs = mutated(tifs, tmp_path / "in", seed=7, count=10)
    rsisr = Path(sys.executable).parent / "rsisr"
    proc = subprocess.run([str(rsisr), "batch", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--model",
                           str(model), "--workers", "1", "--threads-per-worker", "1", "--tile", "32", "--overlap",
                           "8", "--device", "cpu", "--report", str(tmp_path / "report.json")],
                          capture_output=True, text=True, timeout=600)
    assert "Traceback" not in proc.stderr + proc.stdout
    import json

    report = json.loads((tmp_path / "report.json").read_text())
    failed = [s for s in report["scenes"] if s["status"] == "failed"]
    assert proc.returncode == (1 if failed else 0)
    for s in failed:
        assert Path(s["input"]).name in s["error"] and "\n" not in s["error"]
    done = {Path(s["output"]).name for s in report["scenes"] if s["status"] == "done"}
    assert {p.name for p in (tmp_path / "out").iterdir()} == done
    assert len(report["scenes"]) == len(inputs)
