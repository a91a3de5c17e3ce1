"""``rsisr evaluate`` on a handful of real images with an untrained tiny model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from conftest import one_line_error
from rsisr.errors import InputError, MetricWeightsWarning, OutputError, RsisrWarning
from rsisr.evaluation.evaluate import evaluate, read_hr
from rsisr.imageops import degrade, to_8bit, to_model_range
from rsisr.evaluation.metrics import psnr, ssim

REPORT_KEYS = {"rsisr_version", "device", "model", "data", "metrics", "runtime_s_per_image"}
METRIC_KEYS = {"psnr", "ssim", "lpips", "fid"}



@pytest.fixture
def hr_dir(shared_data, tmp_path) -> Path:
    """Crops of three real evaluation images (small, to keep the CPU tests fast); one is 54x66,
    not a multiple of 4."""
    from PIL import Image

    folder = tmp_path / "hr"
    folder.mkdir()
    for name, box in (("HARV_001.png", (0, 0, 64, 64)), ("OSBS_001.png", (100, 60, 164, 124)),
                      ("SJER_002.png", (10, 20, 10 + 54, 20 + 66))):
        with Image.open(shared_data / "eval" / name) as img:
            img.crop(box).save(folder / name)
    (folder / "notes.txt").write_text("not an image")
    return folder



def _check_shape(report: dict, methods: set[str]) -> None:
    assert set(report) == REPORT_KEYS
    assert set(report["model"]) == {"path", "sha256", "preset", "inference_params"}
    assert set(report["data"]) == {"path", "n_images"}
    assert set(report["metrics"]) == methods
    for values in report["metrics"].values():
        assert set(values) == METRIC_KEYS
    assert set(report["runtime_s_per_image"]) == methods
    assert all(t > 0 for t in report["runtime_s_per_image"].values())


def test_report_has_the_fixed_keys_and_matches_a_direct_computation(hr_dir, tiny_model_file, metric_weights, tmp_path):
    import rsisr
    from rsisr.checkpoint import file_sha256

    out = tmp_path / "report.json"
    report = evaluate(hr_dir, tiny_model_file, out=out, metrics="psnr,ssim,lpips", metric_weights=metric_weights,
                      device="cpu", seed=3)
    assert json.loads(out.read_text()) == report
    _check_shape(report, {"model", "bicubic"})
    assert report["rsisr_version"] == rsisr.__version__ and report["device"] == "cpu"
    assert report["model"] == {
        "path": str(tiny_model_file.resolve()), "sha256": file_sha256(tiny_model_file), "preset": "tiny",
        "inference_params": rsisr.describe("tiny")["inference_params"],
    }
    assert report["data"] == {"path": str(hr_dir.resolve()), "n_images": 3}
    for method in ("model", "bicubic"):
        assert report["metrics"][method]["fid"] is None  # not requested
        assert 0.0 < report["metrics"][method]["lpips"] < 1.5

    # The same numbers, computed here image by image from the documented recipe.
    from rsisr.imageops import bicubic_up
    from rsisr.noise import tile_noises

    from rsisr.device import autocast, resolve_precision

    cpu = torch.device("cpu")
    precision = resolve_precision("auto", cpu)  # evaluate runs the model as `rsisr upscale` does
    model = rsisr.load_model(tiny_model_file).eval()
    if precision == "bf16":
        model = model.to(memory_format=torch.channels_last)
    values = {"model": [], "bicubic": []}
    for path in sorted(hr_dir.glob("*.png")):
        hr = read_hr(path)
        assert hr.shape[-2] % 4 == 0 and hr.shape[-1] % 4 == 0
        lr = degrade(to_model_range(hr / 255.0))
        with torch.no_grad(), autocast(cpu, precision):
            noises = [torch.from_numpy(n) for n in tile_noises(model.latent_shape, 3, 1, [(0, 0)], *lr.shape[-2:])]
            sr = to_8bit(model(lr, noises, 1).float().clamp(-1, 1))
        values["model"].append((psnr(sr, hr).item(), ssim(sr, hr).item()))
        values["bicubic"].append((psnr(to_8bit(bicubic_up(lr)), hr).item(), ssim(to_8bit(bicubic_up(lr)), hr).item()))
    for method, pairs in values.items():
        assert report["metrics"][method]["psnr"] == pytest.approx(np.mean([p for p, _ in pairs]), abs=1e-9)
        assert report["metrics"][method]["ssim"] == pytest.approx(np.mean([s for _, s in pairs]), abs=1e-9)
    # Real images: bicubic is far from random, and far better than an untrained model.
    assert 20.0 < report["metrics"]["bicubic"]["psnr"] < 35.0
    assert report["metrics"]["bicubic"]["psnr"] > report["metrics"]["model"]["psnr"]


def test_seed_steps_and_limit_are_honoured(hr_dir, tiny_model_file):
    run = dict(metrics="psnr", baselines="none", device="cpu")
    a = evaluate(hr_dir, tiny_model_file, seed=1, limit=1, **run)
    b = evaluate(hr_dir, tiny_model_file, seed=1, limit=1, **run)
    c = evaluate(hr_dir, tiny_model_file, seed=2, limit=1, **run)
    d = evaluate(hr_dir, tiny_model_file, seed=1, limit=1, steps=2, **run)
    assert a["data"]["n_images"] == 1 and set(a["metrics"]) == {"model"}
    assert a["metrics"] == b["metrics"]
    assert a["metrics"]["model"]["psnr"] != c["metrics"]["model"]["psnr"]
    assert a["metrics"]["model"]["psnr"] != d["metrics"]["model"]["psnr"]
    assert a["metrics"]["model"]["ssim"] is None and a["metrics"]["model"]["lpips"] is None


def test_without_weights_lpips_and_fid_are_null_with_a_warning(hr_dir, tiny_model_file, offline, tmp_path):
    with pytest.warns(MetricWeightsWarning) as caught:
        report = evaluate(hr_dir, tiny_model_file, out=tmp_path / "r.json", device="cpu", limit=2)
    assert {str(w.message).split(" is reported")[0] for w in caught if w.category is MetricWeightsWarning} == {
        "LPIPS", "FID"}
    for method in ("model", "bicubic"):
        assert report["metrics"][method]["lpips"] is None and report["metrics"][method]["fid"] is None
        assert report["metrics"][method]["psnr"] is not None
    assert json.loads((tmp_path / "r.json").read_text())["metrics"]["model"]["fid"] is None


def test_figures_and_summary(hr_dir, tiny_model_file, tmp_path):
    from PIL import Image

    figures = tmp_path / "figures"
    report = evaluate(hr_dir, tiny_model_file, figures=figures, n_figures=2, metrics="psnr,ssim", device="cpu")
    pngs = sorted(p.name for p in figures.glob("*.png"))
    assert pngs == ["HARV_001.png", "OSBS_001.png"]  # the first two images by name
    with Image.open(figures / "HARV_001.png") as img:
        assert img.width > 800 and img.height > 500
        assert img.getpixel((5, 5)) == (255, 255, 255, 255) or img.getpixel((5, 5))[:3] == (255, 255, 255)
        pixels = np.asarray(img.convert("RGB"))
    assert ((pixels[..., 0] > 200) & (pixels[..., 1] < 60) & (pixels[..., 2] < 60)).sum() > 100  # the red box
    summary = (figures / "summary.md").read_text()
    psnr_model = f"{report['metrics']['model']['psnr']:.3f}"
    assert f"| Bicubic | {report['metrics']['bicubic']['psnr']:.3f} |" in summary
    assert psnr_model in summary and "n/a" in summary  # LPIPS and FID were not requested
    assert "![HARV_001](HARV_001.png)" in summary


def test_subfolders_are_evaluated_and_their_panels_mirror_them(hr_dir, tiny_model_file, tmp_path):
    """--data is searched recursively, as training's folders are: a panel of sub/x.png is
    figures/sub/x.png; a --figures folder inside --data is refused (its panels would be scored)."""
    (hr_dir / "sub").mkdir()
    (hr_dir / "HARV_001.png").rename(hr_dir / "sub" / "HARV_001.png")
    figures = tmp_path / "figures"
    report = evaluate(hr_dir, tiny_model_file, figures=figures, n_figures=3, metrics="psnr", baselines="none",
                      device="cpu")
    assert report["data"]["n_images"] == 3
    panels = sorted(p.relative_to(figures).as_posix() for p in figures.rglob("*.png"))
    assert panels == ["OSBS_001.png", "SJER_002.png", "sub/HARV_001.png"]
    assert "![sub/HARV_001](sub/HARV_001.png)" in (figures / "summary.md").read_text()
    with pytest.raises(OutputError, match="inside --data"):
        evaluate(hr_dir, tiny_model_file, figures=hr_dir / "figures", metrics="psnr")


def test_zoom_box_finds_the_detailed_region():
    from rsisr.evaluation.figures import zoom_box

    img = np.full((200, 160, 3), 128, np.uint8)
    rng = np.random.default_rng(0)
    img[120:160, 40:80] = rng.integers(0, 255, (40, 40, 3))
    top, left, size = zoom_box(img)
    assert size == 32
    assert 120 - 8 <= top <= 128 and 40 - 8 <= left <= 48
    assert zoom_box(img[:40, :40])[2] == 8  # small images: never smaller than 8 px


@pytest.mark.slow  # FID: two 2048x2048 matrix square roots
def test_all_metrics_with_fid(hr_dir, tiny_model_file, metric_weights):
    report = evaluate(hr_dir, tiny_model_file, metric_weights=metric_weights, device="cpu")
    _check_shape(report, {"model", "bicubic"})
    for method in ("model", "bicubic"):
        assert all(report["metrics"][method][k] is not None for k in METRIC_KEYS)
        assert report["metrics"][method]["fid"] > 1.0
    # Bicubic outputs are much closer to the HR images than an untrained model's noise.
    assert report["metrics"]["bicubic"]["fid"] < report["metrics"]["model"]["fid"]


def test_fid_of_a_single_image_is_null_with_a_warning(hr_dir, tiny_model_file, metric_weights):
    with pytest.warns(RsisrWarning, match="at least 2 images"):
        report = evaluate(hr_dir, tiny_model_file, metrics="fid", metric_weights=metric_weights, device="cpu", limit=1)
    assert report["metrics"]["model"] == {"psnr": None, "ssim": None, "lpips": None, "fid": None}


def test_user_errors(hr_dir, tiny_model_file, tmp_path):
    with pytest.raises(InputError, match="unknown metric 'mse'"):
        evaluate(hr_dir, tiny_model_file, metrics="psnr,mse")
    with pytest.raises(InputError, match="unknown baseline 'lanczos'"):
        evaluate(hr_dir, tiny_model_file, baselines="lanczos")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="holds no images"):
        evaluate(tmp_path / "empty", tiny_model_file)
    with pytest.raises(InputError, match="not a folder"):
        evaluate(tmp_path / "missing", tiny_model_file)
    out = tmp_path / "report.json"
    out.write_text("{}")
    with pytest.raises(OutputError, match="--overwrite"):
        evaluate(hr_dir, tiny_model_file, out=out)
    small = tmp_path / "small"
    small.mkdir()
    from PIL import Image

    Image.new("RGB", (64, 30)).save(small / "tiny.png")
    with pytest.raises(InputError, match="at least 32x32"):
        evaluate(small, tiny_model_file, metrics="psnr")


def test_cli(hr_dir, tiny_model_file, metric_weights, tmp_path):
    from rsisr_cli.main import cli

    runner = CliRunner()
    out = tmp_path / "report.json"
    args = ["evaluate", "--data", str(hr_dir), "--out", str(out), "--model", str(tiny_model_file),
            "--metrics", "psnr,ssim,lpips", "--metric-weights", str(metric_weights), "--device", "cpu",
            "--limit", "2", "--seed", "5"]
    result = runner.invoke(cli, args)
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    _check_shape(report, {"model", "bicubic"})
    assert report["data"]["n_images"] == 2
    assert f"{report['metrics']['bicubic']['psnr']:.3f}" in result.output

    quick = [*args, "--metrics", "psnr", "--limit", "1"]  # the last --metrics/--limit win
    one_line_error(runner.invoke(cli, quick), "--overwrite")
    assert runner.invoke(cli, [*quick, "--overwrite"]).exit_code == 0
    assert json.loads(out.read_text())["metrics"]["model"]["lpips"] is None


def test_evaluate_scores_what_upscale_writes(tiny_model, one_thread):
    """One noise path: for the same LR image and seed, the model output that `rsisr evaluate`
    scores is bit for bit what `rsisr upscale` / `model.upscale` writes (it used to draw its
    noise from a torch generator instead of the scene-coordinate field)."""
    from rsisr.evaluation.evaluate import model_runner

    rng = np.random.default_rng(0)
    lr8 = rng.integers(0, 256, (40, 56, 3), dtype=np.uint8)
    written = tiny_model.upscale(lr8, seed=11)
    lr = torch.from_numpy(lr8).permute(2, 0, 1)[None].float() / 255.0 * 2.0 - 1.0
    with torch.no_grad():
        scored = to_8bit(model_runner(tiny_model, 1, 11, torch.device("cpu"))(lr))[0].permute(1, 2, 0)
    assert np.array_equal(scored.numpy().astype(np.uint8), written)
