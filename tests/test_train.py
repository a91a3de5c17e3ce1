"""`rsisr train ae` / `rsisr train lcm` on the tiny preset: smoke runs, outputs, resume, bad input."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from rsisr_cli.main import cli

#: Fast settings for every test run: tiny model, small crops, a small discriminator.
FAST = ["--preset", "tiny", "--batch-size", "2", "--set", "data.crop=32", "--set", "train.log_every=1",
        "--set", "ae.disc_channels=8", "--set", "ae.disc_start=1", "-q"]


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """The tiny model gains nothing from more threads; one avoids oversubscribing a shared CPU."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _rows(run: Path) -> list[dict[str, str]]:
    with open(run / "metrics.csv", newline="") as f:
        return list(csv.DictReader(f))


def _invoke(args: list[str]):
    result = CliRunner().invoke(cli, args)
    return result


def _one_line_error(result, *fragments: str) -> None:
    assert result.exit_code == 1, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


@pytest.fixture(scope="module")
def image_dir(tmp_path_factory) -> Path:
    """Six synthetic 96x96 RGB images: four PNG, two JPEG."""
    from PIL import Image

    folder = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:96, 0:96]
    for i in range(6):
        base = np.stack([np.sin(xx / (3 + i + c)) + np.cos(yy / (4 + c)) for c in range(3)], axis=-1)
        img = ((base + 2) / 4 * 200 + rng.normal(0, 8, base.shape)).clip(0, 255).astype(np.uint8)
        Image.fromarray(img).save(folder / (f"img{i}.png" if i < 4 else f"img{i}.jpg"))
    return folder


@pytest.fixture(scope="module")
def ae_run(image_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "ae"
    result = _invoke(["train", "ae", "--data", str(image_dir), "--out", str(out), "--max-steps", "3", *FAST,
                      "--set", "data.val_fraction=0.3", "--set", "train.val_every=3"])
    assert result.exit_code == 0, result.output
    return out


def test_ae_smoke_run_writes_everything(ae_run):
    import rsisr

    for name in ("config.yaml", "metrics.csv", "losses.png", "model.safetensors", "train.log"):
        assert (ae_run / name).is_file(), name
    assert sorted(p.name for p in (ae_run / "checkpoints").iterdir()) == ["step_00000003.pt"]
    rows = _rows(ae_run)
    assert [int(r["step"]) for r in rows] == [1, 2, 3]
    for r in rows:
        assert math.isfinite(float(r["loss"])) and math.isfinite(float(r["l1"])) and float(r["samples_per_s"]) > 0
    # L1 only before ae.disc_start=1, then the adversarial terms.
    assert rows[0]["g"] == "" and rows[1]["g"] != "" and rows[2]["d"] != ""
    assert float(rows[-1]["val_psnr"]) > 5 and float(rows[-1]["bicubic_psnr"]) > 20
    ae = rsisr.load_autoencoder(ae_run / "model.safetensors")
    assert ae.full_config.preset == "tiny"
    state = torch.load(ae_run / "checkpoints" / "step_00000003.pt", weights_only=True)
    assert state["step"] == 3 and {"torch", "numpy", "python"} <= set(state["rng"])
    assert set(state["trainer"]["optimizers"]) == {"ae", "disc"}


def test_lcm_smoke_run_and_upscale(ae_run, image_dir, tmp_path):
    import rsisr

    out = tmp_path / "lcm"
    result = _invoke(["train", "lcm", "--data", str(image_dir), "--ae", str(ae_run / "model.safetensors"),
                      "--out", str(out), "--max-steps", "2", *FAST, "--set", "data.val_fraction=0.3"])
    assert result.exit_code == 0, result.output
    rows = _rows(out)
    assert [int(r["step"]) for r in rows] == [1, 2]
    assert all(math.isfinite(float(r[k])) for r in rows for k in ("loss", "ct", "kd"))
    assert rows[-1]["val_psnr"] != ""
    model = rsisr.load_model(out / "model.safetensors")
    assert float(model.scale_factor) > 0 and float(model.scale_factor) != 1.0
    # The decoder is the autoencoder's, frozen; the exported weights are the EMA's.
    ae = rsisr.load_autoencoder(ae_run / "model.safetensors")
    for k, v in ae.decoder.state_dict().items():
        assert torch.equal(model.decoder.state_dict()[k], v), k
    state = torch.load(next((out / "checkpoints").iterdir()), weights_only=True)
    ema = state["trainer"]["models"]["ema"]
    for k, v in model.state_dict().items():
        assert torch.equal(ema[k], v), k
    sr = model.upscale(np.full((12, 20, 3), 128, np.uint8), seed=0)
    assert sr.shape == (48, 80, 3) and sr.dtype == np.uint8


def test_resume_equals_uninterrupted(image_dir, tmp_path):
    """4 steps at once == 2 steps, then --resume to 4 (losses equal to 1e-6, here exactly)."""
    common = ["--data", str(image_dir), *FAST, "--set", "train.checkpoint_every=2"]
    full, part = tmp_path / "full", tmp_path / "part"
    assert _invoke(["train", "ae", "--out", str(full), "--max-steps", "4", *common]).exit_code == 0
    assert _invoke(["train", "ae", "--out", str(part), "--max-steps", "2", *common]).exit_code == 0
    result = _invoke(["train", "ae", "--out", str(part), "--max-steps", "4", "--resume", *common])
    assert result.exit_code == 0, result.output
    a, b = _rows(full), _rows(part)
    assert [r["step"] for r in b] == ["1", "2", "3", "4"]
    for ra, rb in zip(a, b):
        for key in ("loss", "l1", "kl", "g", "d"):
            if ra[key] or rb[key]:
                assert abs(float(ra[key]) - float(rb[key])) <= 1e-6, (ra["step"], key, ra[key], rb[key])


def test_lcm_resume_equals_uninterrupted(ae_run, image_dir, tmp_path):
    common = ["--data", str(image_dir), "--ae", str(ae_run / "model.safetensors"), *FAST,
              "--set", "train.checkpoint_every=2"]
    full, part = tmp_path / "full", tmp_path / "part"
    assert _invoke(["train", "lcm", "--out", str(full), "--max-steps", "4", *common]).exit_code == 0
    assert _invoke(["train", "lcm", "--out", str(part), "--max-steps", "2", *common]).exit_code == 0
    result = _invoke(["train", "lcm", "--out", str(part), "--max-steps", "4", "--resume", *common])
    assert result.exit_code == 0, result.output
    a, b = _rows(full), _rows(part)
    assert len(a) == len(b) == 4
    for ra, rb in zip(a, b):
        for key in ("loss", "ct", "kd"):
            assert abs(float(ra[key]) - float(rb[key])) <= 1e-6, (ra["step"], key, ra[key], rb[key])
    import rsisr

    ma = rsisr.load_model(full / "model.safetensors").state_dict()
    mb = rsisr.load_model(part / "model.safetensors").state_dict()
    assert all(torch.allclose(ma[k], mb[k], atol=1e-6) for k in ma)


# ----------------------------------------------------------------------------------------------
# Starting from a trained autoencoder: --init, --decoder-only


@pytest.fixture(scope="module")
def decoder_run(ae_run, image_dir, tmp_path_factory) -> Path:
    """Two steps of decoder-only L1 fine-tuning of ``ae_run``."""
    out = tmp_path_factory.mktemp("runs") / "dec"
    result = _invoke(["train", "ae", "--data", str(image_dir), "--init", str(ae_run), "--decoder-only",
                      "--out", str(out), "--max-steps", "2", *FAST, "--set", "ae.adv_weight=0", "--lr", "0.01"])
    assert result.exit_code == 0, result.output
    return out


def test_decoder_only_fine_tuning_keeps_the_encoder(ae_run, decoder_run):
    import rsisr

    before = rsisr.load_autoencoder(ae_run / "model.safetensors").state_dict()
    after = rsisr.load_autoencoder(decoder_run / "model.safetensors").state_dict()
    encoder = [k for k in before if not k.startswith("decoder.")]
    assert encoder and all(torch.equal(before[k], after[k]) for k in encoder)
    changed = [k for k in before if k.startswith("decoder.") and not torch.equal(before[k], after[k])]
    assert len(changed) > 10
    # ae.adv_weight=0: no adversarial term, the discriminator is never trained.
    rows = _rows(decoder_run)
    assert [int(r["step"]) for r in rows] == [1, 2] and all(r["g"] == "" and r["d"] == "" for r in rows)


def test_init_starts_from_the_given_weights(decoder_run, image_dir, tmp_path):
    """With a vanishing learning rate, a run started with --init ends where its autoencoder was
    (the fine-tuned one, far from the seed's random initialisation)."""
    import rsisr

    out = tmp_path / "init"
    result = _invoke(["train", "ae", "--data", str(image_dir), "--init", str(decoder_run / "model.safetensors"),
                      "--out", str(out), "--max-steps", "1", *FAST, "--lr", "1e-12"])
    assert result.exit_code == 0, result.output
    before = rsisr.load_autoencoder(decoder_run / "model.safetensors").state_dict()
    after = rsisr.load_autoencoder(out / "model.safetensors").state_dict()
    assert all(torch.allclose(before[k], after[k], atol=1e-6) for k in before)
    torch.manual_seed(0)
    random_init = rsisr.build_autoencoder("tiny").state_dict()
    assert max((random_init[k] - after[k]).abs().max().item() for k in after if k.startswith("decoder.")) > 1e-3


def test_stage2_is_unchanged_by_a_decoder_only_fine_tune(ae_run, decoder_run, image_dir, tmp_path):
    """Stage 2 reads only the encoder, so on the fine-tuned autoencoder it learns the same weights;
    only the decoder it exports differs (this is what examples/train_default.sh relies on)."""
    import rsisr

    models = {}
    for name, ae in (("orig", ae_run), ("ft", decoder_run)):
        out = tmp_path / name
        result = _invoke(["train", "lcm", "--data", str(image_dir), "--ae", str(ae / "model.safetensors"),
                          "--out", str(out), "--max-steps", "2", *FAST])
        assert result.exit_code == 0, result.output
        models[name] = rsisr.load_model(out / "model.safetensors").state_dict()
    a, b = models["orig"], models["ft"]
    rest = [k for k in a if not k.startswith("decoder.")]
    assert any(k.startswith("consistency.unet.") for k in rest) and all(torch.equal(a[k], b[k]) for k in rest)
    ft = rsisr.load_autoencoder(decoder_run / "model.safetensors").decoder.state_dict()
    assert all(torch.equal(b["decoder." + k], v) for k, v in ft.items())
    assert any(not torch.equal(a["decoder." + k], v) for k, v in ft.items())


def test_decoder_only_run_resumes(ae_run, decoder_run, image_dir, tmp_path):
    import shutil

    run = tmp_path / "dec"
    shutil.copytree(decoder_run, run)
    result = _invoke(["train", "ae", "--data", str(image_dir), "--init", str(ae_run), "--decoder-only",
                      "--out", str(run), "--max-steps", "3", *FAST, "--set", "ae.adv_weight=0", "--lr", "0.01",
                      "--resume"])
    assert result.exit_code == 0, result.output
    assert [int(r["step"]) for r in _rows(run)] == [1, 2, 3]


def test_init_bad_input(ae_run, image_dir, tmp_path, tiny_model_file):
    out = str(tmp_path / "r")
    result = _invoke(["train", "ae", "--data", str(image_dir), "--decoder-only", "--out", out, *FAST])
    _one_line_error(result, "--init")
    for bad in (tiny_model_file, tmp_path / "missing.safetensors"):
        result = _invoke(["train", "ae", "--data", str(image_dir), "--init", str(bad), "--out", out, *FAST])
        _one_line_error(result)
    result = _invoke(["train", "ae", "--data", str(image_dir), "--init", str(ae_run), "--out", out, *FAST,
                      "--preset", "small"])
    _one_line_error(result, "--init")
    assert not (tmp_path / "r").exists()


# ----------------------------------------------------------------------------------------------
# Bad input: one line, exit 1


def test_missing_and_empty_data_folder(tmp_path):
    result = _invoke(["train", "ae", "--data", str(tmp_path / "nope"), "--out", str(tmp_path / "run"), *FAST])
    _one_line_error(result, "does not exist")
    (tmp_path / "empty").mkdir()
    result = _invoke(["train", "ae", "--data", str(tmp_path / "empty"), "--out", str(tmp_path / "run"), *FAST])
    _one_line_error(result, "holds no images")
    assert not (tmp_path / "run").exists()


def test_every_image_smaller_than_crop(image_dir, tmp_path):
    result = _invoke(["train", "ae", "--data", str(image_dir), "--out", str(tmp_path / "run"), *FAST,
                      "--set", "data.crop=128"])
    _one_line_error(result, "smaller than the 128x128 crop")


def test_unreadable_images_are_skipped_and_counted(image_dir, tmp_path):
    import shutil

    data = tmp_path / "data"
    shutil.copytree(image_dir, data)
    (data / "broken.png").write_bytes(b"not a png")
    (data / "truncated.jpg").write_bytes((image_dir / "img4.jpg").read_bytes()[:200])
    out = tmp_path / "run"
    result = _invoke(["train", "ae", "--data", str(data), "--out", str(out), "--max-steps", "1", *FAST])
    assert result.exit_code == 0, result.output
    assert "2 unreadable images" in (out / "train.log").read_text()
    only_broken = tmp_path / "broken"
    only_broken.mkdir()
    (only_broken / "a.png").write_bytes(b"junk")
    result = _invoke(["train", "ae", "--data", str(only_broken), "--out", str(tmp_path / "r2"), *FAST])
    _one_line_error(result, "none of the 1 images", "readable")


def test_ae_file_that_is_not_an_autoencoder(image_dir, tmp_path, tiny_model_file):
    for bad in (tiny_model_file, tmp_path / "missing.safetensors"):
        result = _invoke(["train", "lcm", "--data", str(image_dir), "--ae", str(bad), "--out", str(tmp_path / "r"), *FAST])
        _one_line_error(result)
    result = _invoke(["train", "lcm", "--data", str(image_dir), "--ae", str(tiny_model_file), "--out", str(tmp_path / "r"), *FAST])
    assert "autoencoder" in result.output


def test_resume_with_a_different_config(ae_run, image_dir):
    result = _invoke(["train", "ae", "--data", str(image_dir), "--out", str(ae_run), "--max-steps", "3", *FAST,
                      "--set", "data.val_fraction=0.3", "--set", "train.val_every=3", "--lr", "0.001", "--resume"])
    _one_line_error(result, "ae.lr")
    result = _invoke(["train", "ae", "--data", str(image_dir), "--out", str(ae_run), *FAST])
    _one_line_error(result, "--resume")


def test_resume_a_run_written_before_a_config_key_existed(ae_run, image_dir, tmp_path):
    """A run whose config.yaml lacks a key added later (here model.diffusion.prediction) resumes:
    the missing key takes today's default instead of counting as a changed setting."""
    import shutil

    import yaml

    run = tmp_path / "old"
    shutil.copytree(ae_run, run)
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    del cfg["model"]["diffusion"]["prediction"]
    (run / "config.yaml").write_text(yaml.safe_dump(cfg))
    result = _invoke(["train", "ae", "--data", str(image_dir), "--out", str(run), "--resume", "--max-steps", "4", "-q"])
    assert result.exit_code == 0, result.output
    assert [int(r["step"]) for r in _rows(run)] == [1, 2, 3, 4]


def test_unknown_config_keys_are_named(image_dir, tmp_path):
    result = _invoke(["train", "ae", "--data", str(image_dir), "--out", str(tmp_path / "r"), *FAST, "--set", "ae.lrr=1"])
    _one_line_error(result, "ae.lrr")
    cfg = tmp_path / "c.yaml"
    cfg.write_text("model:\n  unet:\n    chh: 3\n")
    result = _invoke(["train", "ae", "--data", str(image_dir), "--out", str(tmp_path / "r"), "--config", str(cfg), *FAST])
    _one_line_error(result, "model.unet.chh")


def test_ablation_flags(ae_run, image_dir, tmp_path):
    import yaml

    out = tmp_path / "abl"
    result = _invoke(["train", "lcm", "--data", str(image_dir), "--ae", str(ae_run / "model.safetensors"),
                      "--out", str(out), "--max-steps", "2", "--no-kd", "--no-consistency", *FAST])
    assert result.exit_code == 0, result.output
    cfg = yaml.safe_load((out / "config.yaml").read_text())
    assert cfg["lcm"]["kd"] is False and cfg["lcm"]["consistency"] is False
    for row in _rows(out):  # without KD the loss is the (here: direct L1) consistency term alone
        assert float(row["loss"]) == float(row["ct"]) and float(row["kd"]) > 0


def test_ctrl_c_writes_a_resumable_checkpoint(image_dir, tmp_path):
    """SIGINT during step 2: the step finishes, a checkpoint is written, and resuming gives the
    losses of an uninterrupted run."""
    import os
    import signal

    from rsisr.training import train
    from rsisr.training.common import TrainingInterrupted

    kwargs = dict(data=image_dir, preset="tiny", progress=False,
                  sets=["data.crop=32", "train.log_every=1", "ae.disc_channels=8", "ae.disc_start=1"],
                  flags={"ae.batch_size": 2, "ae.max_steps": 4})

    def interrupt(step, row):
        if step == 2:
            os.kill(os.getpid(), signal.SIGINT)

    run = tmp_path / "run"
    with pytest.raises(TrainingInterrupted, match="--resume"):
        train("ae", run, callback=interrupt, **kwargs)
    assert [p.name for p in (run / "checkpoints").iterdir()] == ["step_00000002.pt"]
    assert not (run / "model.safetensors").exists()
    assert signal.getsignal(signal.SIGINT) is not None  # our handler is gone again
    # Stopping for good: --resume with --max-steps at the step reached exports without training.
    early = dict(kwargs, flags={**kwargs["flags"], "ae.max_steps": 2})
    assert train("ae", run, resume=True, **early).is_file()
    assert [r["step"] for r in _rows(run)] == ["1", "2"]
    train("ae", run, resume=True, **kwargs)
    train("ae", tmp_path / "full", **kwargs)
    a, b = _rows(tmp_path / "full"), _rows(run)
    assert [r["step"] for r in b] == ["1", "2", "3", "4"]
    assert all(ra[k] == rb[k] for ra, rb in zip(a, b) for k in ("loss", "l1", "g", "d"))


def test_val_folder_and_geotiff_training(make_geotiff, image_dir, tmp_path):
    """A folder of uint16 GeoTIFFs trains (values scaled as upscale does); --val scores another folder."""
    yy, xx = np.mgrid[0:128, 0:128]
    for i in range(2):
        data = np.stack([2000 + 1500 * np.sin(xx / (5.0 + i + b)) * np.cos(yy / 7.0) for b in range(3)])
        make_geotiff(width=128, height=128, count=3, dtype="uint16", data=data.astype(np.uint16), name=f"g{i}.tif")
    out = tmp_path / "run"
    result = _invoke(["train", "ae", "--data", str(tmp_path), "--val", str(image_dir), "--out", str(out),
                      "--max-steps", "2", *FAST, "--set", "train.val_every=2"])
    assert result.exit_code == 0, result.output
    row = _rows(out)[-1]
    assert math.isfinite(float(row["loss"])) and float(row["bicubic_psnr"]) > 20


def test_overfit_real_tiles_loss_falls(shared_data, tmp_path):
    """A few real tiles, a high learning rate: stage 1's L1 and stage 2's loss fall."""
    data = tmp_path / "tiles"
    data.mkdir()
    for src in sorted((shared_data / "train").glob("*.png"))[:2]:
        (data / src.name).symlink_to(src)
    ae_out = tmp_path / "ae"
    result = _invoke(["train", "ae", "--data", str(data), "--out", str(ae_out), "--max-steps", "30", *FAST,
                      "--lr", "2e-3", "--set", "ae.disc_start=1000", "--set", "data.val_fraction=0"])
    assert result.exit_code == 0, result.output
    l1 = [float(r["l1"]) for r in _rows(ae_out)]
    assert np.mean(l1[-8:]) < 0.8 * np.mean(l1[:8]), l1
    lcm_out = tmp_path / "lcm"
    result = _invoke(["train", "lcm", "--data", str(data), "--ae", str(ae_out / "model.safetensors"),
                      "--out", str(lcm_out), "--max-steps", "30", *FAST, "--lr", "2e-3", "--set", "data.val_fraction=0",
                      "--set", "lcm.latent=mode"])
    assert result.exit_code == 0, result.output
    # L_CT jumps with the random timestep (errors at t near T are amplified by 1/sqrt(alpha_bar));
    # L_KD against the posterior mean is a steady measure.
    kd = [float(r["kd"]) for r in _rows(lcm_out)]
    assert np.mean(kd[-8:]) < 0.8 * np.mean(kd[:8]), kd


def test_loader_workers_do_not_change_the_numbers(image_dir, tmp_path):
    """Samples depend only on (seed, position): 2 loader processes give the losses of 0."""
    runs = []
    for workers in ("0", "2"):
        out = tmp_path / f"w{workers}"
        result = _invoke(["train", "ae", "--data", str(image_dir), "--out", str(out), "--max-steps", "2",
                          "--workers", workers, *FAST])
        assert result.exit_code == 0, result.output
        runs.append([(r["loss"], r["l1"]) for r in _rows(out)])
    assert runs[0] == runs[1]


def test_perceptual_loss_and_validation_lpips_from_local_weights(image_dir, tmp_path, metric_weights):
    """ae.perceptual_weight loads LPIPS(VGG) from the metric weights folder (never a download), and
    validation logs LPIPS(AlexNet), the evaluation metric, next to bicubic's."""
    run = tmp_path / "run"
    result = _invoke(["train", "ae", "--data", str(image_dir), "--val", str(image_dir), "--out", str(run), *FAST,
                      "--max-steps", "2",
                      "--set", "ae.perceptual_weight=1", "--set", "ae.perceptual_layers=3",
                      "--set", "train.val_every=2", "--metric-weights", str(metric_weights)])
    assert result.exit_code == 0, result.output
    row = _rows(run)[-1]
    assert float(row["lpips"]) > 0
    assert 0 < float(row["val_lpips"]) < 1 and 0 < float(row["bicubic_lpips"]) < 1


def test_perceptual_loss_without_weights_is_one_line(image_dir, tmp_path, monkeypatch, metric_weights):
    import shutil

    monkeypatch.delenv("RSISR_METRIC_WEIGHTS", raising=False)
    run = tmp_path / "run"
    args = ["train", "ae", "--data", str(image_dir), "--out", str(run), *FAST, "--max-steps", "1",
            "--set", "ae.perceptual_weight=1"]
    _one_line_error(_invoke(args), "needs the LPIPS(VGG) weights", "--metric-weights")
    partial = tmp_path / "partial"
    shutil.copytree(metric_weights, partial)
    (partial / "vgg16_features.pth").unlink()
    _one_line_error(_invoke([*args, "--metric-weights", str(partial)]), "has no vgg16_features.pth")
    assert not run.exists()


def test_lpips_vgg_levels(metric_weights):
    from rsisr.evaluation.perceptual import build_lpips_local

    full, three = build_lpips_local(metric_weights, "vgg"), build_lpips_local(metric_weights, "vgg", 3)
    g = torch.Generator().manual_seed(0)
    a = torch.rand(2, 3, 64, 64, generator=g) * 2 - 1
    b = (a + 0.3 * torch.randn(a.shape, generator=g)).clamp(-1, 1)
    d_full, d_three = full(a, b).flatten(), three(a, b).flatten()
    assert (d_three > 0).all() and (d_three < d_full).all()  # fewer levels, fewer summed terms
    assert float(full(a, a).abs().max()) == 0.0
