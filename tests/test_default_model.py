"""The bundled default model: the packaged weights are the ones the model card describes,
``rsisr upscale`` with no ``--model`` beats bicubic on a real aerial crop after a /4 round trip,
and an install without them fails in one line wherever the default model is used."""

import json

import numpy as np
import pytest
import rasterio
import torch
from click.testing import CliRunner
from rasterio.windows import Window

import rsisr
from conftest import one_line_error, rsisr_cli
from rsisr.api import DEFAULT_MODEL_PATH, DEFAULT_MODEL_SHA256, default_model_path
from rsisr.checkpoint import file_sha256
from rsisr.imageops import bicubic_up, degrade, to_8bit, to_model_range
from rsisr_cli.main import cli

#: A fixed 256x192 crop of the 0.15 m USGS orthophoto (383x232): roofs, road and trees.
CROP = Window(col_off=96, row_off=24, width=256, height=192)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10 * np.log10(255.0**2 / mse))


def test_packaged_weights_are_the_documented_ones():
    assert default_model_path() == DEFAULT_MODEL_PATH, "rsisr/weights/default.safetensors is missing"
    assert DEFAULT_MODEL_PATH.stat().st_size <= 20 * 2**20
    assert file_sha256(DEFAULT_MODEL_PATH) == DEFAULT_MODEL_SHA256
    model = rsisr.load_model()
    assert model.config.preset == "small"
    assert model.config.diffusion.prediction == "x0"
    assert torch.isfinite(model.scale_factor) and float(model.scale_factor) > 0


def test_info_names_the_default_model():
    result = CliRunner().invoke(cli, ["info", "--json"])
    assert result.exit_code == 0, result.output
    info = json.loads(result.output)
    assert info["default_model"] == {"path": str(DEFAULT_MODEL_PATH), "sha256": DEFAULT_MODEL_SHA256}


def test_upscale_without_model_beats_bicubic_on_a_real_crop(geotiff_dir, tmp_path):
    """Original crop -> bicubic /4 (the training degradation) -> GeoTIFF -> ``rsisr upscale`` with
    no --model; PSNR against the original crop must beat bicubic x4 of the same LR image."""
    with rasterio.open(geotiff_dir / "usgs_hro_colorado_rgb_u8_26913_0.15m.tif") as src:
        hr = src.read(window=CROP)
        profile = src.profile
        transform = src.window_transform(CROP)
    x = to_model_range(torch.from_numpy(hr)[None].float() / 255.0)
    lr = to_8bit(degrade(x))[0].numpy().astype(np.uint8)
    profile.update(width=64, height=48, transform=transform * transform.scale(4), tiled=False)
    profile.pop("blockxsize", None), profile.pop("blockysize", None)
    lr_path, out = tmp_path / "lr.tif", tmp_path / "sr.tif"
    with rasterio.open(lr_path, "w", **profile) as dst:
        dst.write(lr)

    result = CliRunner().invoke(cli, ["upscale", str(lr_path), "-o", str(out), "--seed", "0", "-q"])
    assert result.exit_code == 0, result.output
    with rasterio.open(out) as o:
        assert o.tags()["RSISR_MODEL_SHA256"] == DEFAULT_MODEL_SHA256
        assert (o.width, o.height) == (256, 192) and o.transform == transform
        sr = o.read()

    lr_read = to_model_range(torch.from_numpy(lr)[None].float() / 255.0)
    bic = to_8bit(bicubic_up(lr_read, 4))[0].numpy()
    p_model, p_bicubic = psnr(sr, hr), psnr(bic, hr)
    assert p_model > p_bicubic, f"default model {p_model:.2f} dB vs bicubic {p_bicubic:.2f} dB"



@pytest.mark.parametrize("name, col, row", [("usgs_hro_colorado_rgb_u8_26913_0.15m.tif", 0, 0),
                                           ("rasterio_cogeo_rgb_u8_3857_0.6m.tif", 400, 400)])
def test_two_tilings_agree_far_better_than_two_seeds(geotiff_dir, name, col, row, one_thread):
    """The tiling decision: exact tile invariance is impossible with this architecture
    (GroupNorm, channel attention and the UNet's attention see the whole tile), so what users
    need is checked on real rasters with the shipped model: tiles of 64 and 96 differ by a mean
    of at most 1/255, and no row or column of the difference stands out (no seam): even the
    worst one stays within 2/255. Measured with the issue-19 model (stage 5): usgs 0.32 (worst
    row 1.37, column 0.76), cogeo 0.24 (worst row 0.51, column 0.67), all /255. (Two noise seeds
    differ by 0.31 and 0.30/255 with this model, 2.25 and 2.60 with the stage-3 one: end-to-end
    training made it lean far less on the noise, so the seeds are no yardstick any more.)"""
    from rsisr.upscale import upscale_array

    with rasterio.open(geotiff_dir / name) as src:
        image = src.read(window=Window(col, row, 160, 160)).astype(np.float32) / 255
    model = rsisr.load_model().eval()
    a = upscale_array(image, model, tile=64, overlap=16, device="cpu", seed=1)
    b = upscale_array(image, model, tile=96, overlap=16, device="cpu", seed=1)
    diff = np.abs(a - b).mean(axis=0) * 255
    assert diff.mean() <= 1.0, diff.mean()
    worst_row, worst_col = diff.mean(axis=1).max(), diff.mean(axis=0).max()
    assert max(worst_row, worst_col) <= 2.0, (worst_row, worst_col)


def test_batch_scene_without_model_uses_the_default(make_geotiff, tmp_path):
    """``rsisr batch`` workers run ``upscale_scene``; with no model they load the bundled one."""
    from rsisr.batch import upscale_scene

    out = tmp_path / "out" / "scene_x4.tif"
    result = upscale_scene(make_geotiff(width=40, height=24), out, device="cpu", seed=0)
    assert result.status == "done", result.error
    with rasterio.open(out) as o:
        assert (o.width, o.height) == (160, 96)
        assert o.tags()["RSISR_MODEL_SHA256"] == DEFAULT_MODEL_SHA256


def test_without_the_bundled_weights_every_entry_point_fails_in_one_line(make_geotiff, tmp_path, no_default_model,
                                                                          monkeypatch):
    """A stripped install (no rsisr/weights/default.safetensors): ``load_model()``, ``evaluate`` and
    ``upscale_folder`` raise a CheckpointError, and ``rsisr upscale``, ``rsisr evaluate`` and
    ``rsisr batch`` stop in one line naming --model, before any work: no output, no cluster."""
    import distributed
    from PIL import Image

    from rsisr.batch import upscale_folder
    from rsisr.evaluation.evaluate import evaluate

    def no_cluster(*args, **kwargs):
        raise AssertionError("a cluster was started")

    monkeypatch.setattr(distributed, "LocalCluster", no_cluster)
    (tmp_path / "scenes").mkdir()
    scene = make_geotiff(name="scenes/a.tif")
    (tmp_path / "hr").mkdir()
    Image.new("RGB", (64, 64)).save(tmp_path / "hr" / "a.png")
    out = tmp_path / "out"
    for call in (lambda: rsisr.load_model(), lambda: evaluate(tmp_path / "hr", metrics="psnr"),
                 lambda: upscale_folder(tmp_path / "scenes", out)):
        with pytest.raises(rsisr.CheckpointError, match=r"no default model .* reinstall rsisr or pass .*--model"):
            call()
    for args in (["upscale", scene, "-o", tmp_path / "sr.tif"],
                 ["evaluate", "--data", tmp_path / "hr", "--out", tmp_path / "report.json"],
                 ["batch", tmp_path / "scenes", "-o", out]):
        one_line_error(rsisr_cli(args), "no default model", "--model")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hr", "scenes"]
