"""Multispectral training end to end (issue 14): a tiny 4-band model trained on crops of the NAIP
RGB+NIR raster and a tiny 10-band uint16 model with a stored reflectance scaling on a synthetic
raster, each trained, resumed, exported, reloaded and run through ``rsisr upscale`` and
``rsisr evaluate``; crops never hold nodata; refusals are one line with nothing written."""

from __future__ import annotations

import json

import numpy as np
import pytest
import rasterio
import torch
from rasterio.transform import from_origin
from rasterio.windows import Window

import rsisr
from conftest import TRAIN_FAST, metrics_rows, one_line_error, rsisr_cli, torch_threads
from rsisr.config import get_preset
from rsisr.training.data import CropDataset, scan_folder
from upscale_helpers import check_against_input, up4

NAIP = "naip_m_4709963_se_14_2020_rgbn_u8_26914_5m.tif"
#: Sentinel-2 L2A's ten 10 m and 20 m bands, in the order the synthetic raster stores them
S2_BANDS = ("B2", "B3", "B4", "B8", "B5", "B6", "B7", "B8A", "B11", "B12")
RGBN = ["--set", "model.bands=4", "--set", "model.rgb_bands=[1,2,3]"]
S2 = ["--set", "model.bands=10", "--set", "model.scaling=0,10000", "--set", "model.rgb_bands=[3,2,1]"]


def _train(stage, data, out, steps, *extra):
    with torch_threads(1):
        result = rsisr_cli(["train", stage, "--data", data, "--out", out, "--max-steps", str(steps), *TRAIN_FAST,
                            "--set", "train.checkpoint_every=1", *extra])
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture(scope="session")
def naip_crops(geotiff_dir, tmp_path_factory):
    """Four 96 px crops of the NAIP raster (4 bands, uint8, nodata 0); one has a nodata hole."""
    folder = tmp_path_factory.mktemp("naip")
    with rasterio.open(geotiff_dir / NAIP) as src:
        profile = {k: v for k, v in src.profile.items() if k not in ("blockxsize", "blockysize", "tiled")}
        for i, (col, row) in enumerate([(0, 0), (300, 100), (600, 400), (100, 500)]):
            window = Window(col, row, 96, 96)
            data = src.read(window=window)
            if i == 3:
                data[:, :40, :30] = 0
            profile.update(width=96, height=96, transform=src.window_transform(window), photometric="MINISBLACK")
            with rasterio.open(folder / f"crop{i}.tif", "w", **profile) as dst:
                dst.write(data)
    return folder


@pytest.fixture(scope="session")
def s2_raster(tmp_path_factory):
    """A synthetic 10-band uint16 Sentinel-2 L2A-like raster (DN = reflectance x 10000), a nodata
    collar (0) and a few very bright pixels above 10000."""
    folder = tmp_path_factory.mktemp("s2")
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:80, 96:192]
    data = np.stack([(np.sin(xx / (4 + b)) + np.cos(yy / (5 + b / 2)) + 2) / 4 * 3000 * (1 + b / 10)
                     + rng.normal(0, 50, xx.shape) for b in range(10)]).clip(1, 9000).astype(np.uint16)
    data[:, :20, :25] = 0
    data[:, 50, 60] = 14000
    with rasterio.open(folder / "s2.tif", "w", driver="GTiff", width=96, height=80, count=10, dtype="uint16",
                       crs="EPSG:32633", transform=from_origin(500000, 5000000, 10, 10), nodata=0) as dst:
        dst.write(data)
        dst.descriptions = S2_BANDS
    return folder


@pytest.fixture(scope="session")
def rgbn_runs(naip_crops, tmp_path_factory):
    """Stage 1 of a 4-band model (2 steps, then --resume to 3) and stage 2 on it (2 steps)."""
    runs = tmp_path_factory.mktemp("rgbn")
    _train("ae", naip_crops, runs / "ae", 2, *RGBN)
    _train("ae", naip_crops, runs / "ae", 3, "--resume")
    _train("lcm", naip_crops, runs / "lcm", 2, "--ae", runs / "ae")
    return runs


@pytest.fixture(scope="session")
def s2_runs(s2_raster, tmp_path_factory):
    runs = tmp_path_factory.mktemp("s2runs")
    _train("ae", s2_raster, runs / "ae", 2, *S2)
    _train("lcm", s2_raster, runs / "lcm", 1, "--ae", runs / "ae")
    _train("lcm", s2_raster, runs / "lcm", 2, "--resume")
    return runs


def test_four_band_model_trains_resumes_exports_and_upscales(rgbn_runs, naip_crops, tmp_path):
    ae = rsisr.load_autoencoder(rgbn_runs / "ae" / "model.safetensors")
    assert ae.full_config.bands == 4 and ae.encoder.conv_in.in_channels == 8
    assert [r["step"] for r in metrics_rows(rgbn_runs / "ae")] == ["1", "2", "3"]
    model = rsisr.load_model(rgbn_runs / "lcm" / "model.safetensors")
    assert model.config.bands == 4 and model.config.rgb == (1, 2, 3) and model.condnet.conv_in.in_channels == 4
    src, out = naip_crops / "crop3.tif", tmp_path / "x4.tif"
    result = rsisr_cli(["upscale", src, "-o", out, "--model", rgbn_runs / "lcm" / "model.safetensors", "-q"])
    assert result.exit_code == 0, result.output
    check_against_input(src, out, Window(0, 0, 96, 96), (1, 2, 3, 4), with_values=False)
    with rasterio.open(out) as o:
        assert o.count == 4 and (o.dataset_mask()[:160, :120] == 0).all()


@pytest.mark.slow
def test_four_band_resume_equals_uninterrupted(rgbn_runs, naip_crops, tmp_path):
    """The 4-band data stream is a function of seed and position, so 3 steps at once equal the
    fixture's 2 steps and --resume to 3."""
    _train("ae", naip_crops, tmp_path / "full", 3, *RGBN)
    a, b = ([{k: v for k, v in r.items() if k != "samples_per_s"} for r in metrics_rows(run)]
            for run in (tmp_path / "full", rgbn_runs / "ae"))
    assert a == b


def test_ten_band_reflectance_model_round_trips_physical_units(s2_runs, s2_raster, tmp_path):
    path = s2_runs / "lcm" / "model.safetensors"
    model = rsisr.load_model(path)
    assert model.config.bands == 10 and model.config.scaling == "0,10000"
    assert [r["step"] for r in metrics_rows(s2_runs / "lcm")] == ["1", "2"]
    src, out = s2_raster / "s2.tif", tmp_path / "s2_x4.tif"
    result = rsisr_cli(["upscale", src, "-o", out, "--model", path, "-q"])  # --scale auto: the model's scaling
    assert result.exit_code == 0, result.output
    check_against_input(src, out, Window(0, 0, 96, 80), tuple(range(1, 11)), with_values=False)
    with rasterio.open(out) as o:
        assert o.dtypes[0] == "uint16" and o.descriptions == S2_BANDS
        assert json.loads(o.tags()["RSISR_SCALING"])["hi"] == [10000.0] * 10
        assert o.read()[:, 196:212, 236:252].max() > 10000  # above the range: carried over in raster units
    report = tmp_path / "report.json"
    result = rsisr_cli(["evaluate", "--data", s2_raster, "--model", path, "--out", report, "--metrics", "psnr,ssim"])
    assert result.exit_code == 0, result.output
    metrics = json.loads(report.read_text())["metrics"]
    assert len(metrics["model"]["psnr_per_band"]) == 10 and len(metrics["bicubic"]["ssim_per_band"]) == 10


def test_evaluate_four_band_model_per_band_and_rgb_figures(rgbn_runs, naip_crops, tmp_path):
    report, figures = tmp_path / "report.json", tmp_path / "figures"
    result = rsisr_cli(["evaluate", "--data", naip_crops, "--model", rgbn_runs / "lcm" / "model.safetensors",
                        "--out", report, "--metrics", "psnr,ssim", "--figures", figures, "--n-figures", "1"])
    assert result.exit_code == 0, result.output
    rep = json.loads(report.read_text())
    assert rep["model"]["bands"] == 4 and rep["data"]["n_images"] == 4
    m = rep["metrics"]["bicubic"]
    assert len(m["psnr_per_band"]) == 4 and min(m["psnr_per_band"]) <= m["psnr"] <= max(m["psnr_per_band"])
    assert m["ssim"] == pytest.approx(np.mean(m["ssim_per_band"]), abs=1e-6)  # SSIM: the mean over the bands
    assert (figures / "crop0.png").is_file() and "PSNR per band 1-4" in (figures / "summary.md").read_text()


def test_crops_never_hold_nodata_or_masked_pixels(tmp_path):
    """A float32 4-band raster with a nodata collar and NaN holes: every crop of many is finite and
    free of the nodata value, at HR scales 1 and 2."""
    rng = np.random.default_rng(3)
    data = rng.uniform(0.2, 0.8, (4, 90, 100)).astype(np.float32)
    data[:, :, :30] = -1.0  # nodata collar
    data[:, 40:46, 60:64] = np.nan
    data[2, 10:12, 80:82] = -1.0  # nodata in one band only: masked for that band, so not a valid pixel
    with rasterio.open(tmp_path / "f.tif", "w", driver="GTiff", width=100, height=90, count=4, dtype="float32",
                       nodata=-1.0, crs="EPSG:32633", transform=from_origin(0, 0, 1, 1)) as dst:
        dst.write(data)
    cfg = get_preset("tiny").replace({"bands": 4, "scaling": "0,1"})
    scan = scan_folder(tmp_path, 32, model=cfg)
    (rec,) = scan.images
    assert rec.grid is not None and rec.channels == 4
    for scales in ((1,), (1, 2)):
        ds = CropDataset(scan.images, 32, seed=1, hr_scales=scales)
        crops = torch.stack([ds[(0, p)] for p in range(60)])
        assert crops.shape == (60, 4, 32, 32) and torch.isfinite(crops).all()
        assert (crops > -1.0).all()  # -1 is 0 after the 0,1 scaling; valid values are >= 0.2 (-0.6)
    with pytest.raises(Exception, match="every readable image .* smaller than the 96x96 crop"):
        scan_folder(tmp_path, 96, model=cfg)  # a 96 px window without nodata does not exist


def test_rgb_images_are_skipped_for_a_four_band_model(naip_crops, tmp_path):
    from PIL import Image

    folder = tmp_path / "mixed"
    folder.mkdir()
    (folder / "naip.tif").write_bytes((naip_crops / "crop0.tif").read_bytes())
    Image.new("RGB", (64, 64)).save(folder / "rgb.png")
    scan = scan_folder(folder, 32, model=get_preset("tiny").replace({"bands": 4}))
    assert [r.path.endswith("naip.tif") for r in scan.images] == [True]
    assert scan.unreadable == 1 and "is an RGB image; this 4-band model" in scan.skipped[0][1]


def test_training_refusals_are_one_line_and_write_nothing(naip_crops, s2_raster, rgbn_runs, tmp_path):
    cases = [
        (["train", "ae", "--data", naip_crops, *RGBN, "--set", "ae.perceptual_bands=[1,2,5]"],
         ["ae.perceptual_bands 1,2,5: the model has bands 1 to 4 only"]),
        (["train", "ae", "--data", s2_raster, "--set", "model.bands=10", "--set", "ae.perceptual_weight=1"],
         ["needs three of this 10-band model's bands as red, green and blue", "ae.perceptual_bands"]),
        (["train", "ae", "--data", naip_crops, "--set", "model.scaling=auto"], ["scaling must be fixed ranges"]),
        (["train", "lcm", "--data", naip_crops, "--ae", rgbn_runs / "ae", "--set", "model.bands=3"],
         ["model.bands/model.scaling (3, 'none') differ from the autoencoder in --ae (4, 'none')"]),
    ]
    for k, (args, fragments) in enumerate(cases):
        one_line_error(rsisr_cli([*args, "--out", tmp_path / f"run{k}", *TRAIN_FAST]), *fragments)
    assert list(tmp_path.iterdir()) == []


def test_example_rgbn_config_is_a_four_band_model():
    from pathlib import Path

    from rsisr.training import config as tc

    path = Path(__file__).resolve().parents[1] / "examples" / "train_rgbn.yaml"
    for stage in ("ae", "lcm"):
        cfg = tc.resolve(stage, files=[tc.load_config_file(path)])
        assert cfg.model.bands == 4 and cfg.model.rgb == (1, 2, 3) and not cfg.model.scaling
    assert tc.resolve("ae", files=[tc.load_config_file(path)]).ae.perceptual_bands == (1, 2, 3)
