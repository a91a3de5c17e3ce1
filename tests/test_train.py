"""`rsisr train ae` / `rsisr train lcm` on the tiny preset: what a run writes, resume (bit for bit),
Ctrl-C, loader workers, GeoTIFF data, validation LPIPS, the loss falling on real tiles."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from conftest import TRAIN_FAST, metrics_rows, rsisr_cli

pytestmark = pytest.mark.usefixtures("one_thread")


def test_ae_smoke_run_writes_everything(ae_run):
    import rsisr

    for name in ("config.yaml", "metrics.csv", "losses.png", "model.safetensors", "train.log"):
        assert (ae_run / name).is_file(), name
    assert sorted(p.name for p in (ae_run / "checkpoints").iterdir()) == ["step_00000003.pt"]
    rows = metrics_rows(ae_run)
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
    result = rsisr_cli(["train", "lcm", "--data", image_dir, "--ae", ae_run / "model.safetensors",
                        "--out", out, "--max-steps", "2", *TRAIN_FAST, "--set", "data.val_fraction=0.3"])
    assert result.exit_code == 0, result.output
    rows = metrics_rows(out)
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


@pytest.mark.parametrize("stage", ["ae", "lcm"])
def test_resume_equals_uninterrupted(stage, ae_run, image_dir, tmp_path):
    """4 steps at once == 2 steps, then --resume to 4: the same metrics.csv (losses, learning rate,
    validation scores) and the same exported weights, bit for bit."""
    import rsisr

    common = ["--data", image_dir, *TRAIN_FAST, "--set", "train.checkpoint_every=2", "--set", "train.val_every=2",
              "--set", "data.val_fraction=0.3"]
    if stage == "lcm":
        common += ["--ae", ae_run / "model.safetensors"]
    full, part = tmp_path / "full", tmp_path / "part"
    for out, steps, resume in ((full, "4", []), (part, "2", []), (part, "4", ["--resume"])):
        result = rsisr_cli(["train", stage, "--out", out, "--max-steps", steps, *resume, *common])
        assert result.exit_code == 0, result.output
    a, b = ([{k: v for k, v in r.items() if k != "samples_per_s"} for r in metrics_rows(run)] for run in (full, part))
    assert [r["step"] for r in b] == ["1", "2", "3", "4"] and b[-1]["val_psnr"] != ""
    assert a == b
    load = rsisr.load_model if stage == "lcm" else rsisr.load_autoencoder
    ma, mb = (load(run / "model.safetensors").state_dict() for run in (full, part))
    assert all(torch.equal(ma[k], mb[k]) for k in ma)


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
    result = rsisr_cli(["train", "ae", "--data", image_dir, "--out", run, "--resume", "--max-steps", "4", "-q"])
    assert result.exit_code == 0, result.output
    assert [int(r["step"]) for r in metrics_rows(run)] == [1, 2, 3, 4]


def test_ablation_flags(ae_run, image_dir, tmp_path):
    import yaml

    out = tmp_path / "abl"
    result = rsisr_cli(["train", "lcm", "--data", image_dir, "--ae", ae_run / "model.safetensors",
                        "--out", out, "--max-steps", "2", "--no-kd", "--no-consistency", *TRAIN_FAST])
    assert result.exit_code == 0, result.output
    cfg = yaml.safe_load((out / "config.yaml").read_text())
    assert cfg["lcm"]["kd"] is False and cfg["lcm"]["consistency"] is False
    for row in metrics_rows(out):  # without KD the loss is the (here: direct L1) consistency term alone
        assert float(row["loss"]) == float(row["ct"]) and float(row["kd"]) > 0


def test_ctrl_c_writes_a_resumable_checkpoint(image_dir, tmp_path):
    """SIGINT during step 2: the step finishes, a checkpoint is written, and resuming gives the
    losses of an uninterrupted run."""
    import os
    import signal

    from rsisr.training import train
    from rsisr.errors import TrainingInterrupted

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
    assert [r["step"] for r in metrics_rows(run)] == ["1", "2"]
    train("ae", run, resume=True, **kwargs)
    train("ae", tmp_path / "full", **kwargs)
    a, b = metrics_rows(tmp_path / "full"), metrics_rows(run)
    assert [r["step"] for r in b] == ["1", "2", "3", "4"]
    assert all(ra[k] == rb[k] for ra, rb in zip(a, b) for k in ("loss", "l1", "g", "d"))


def test_val_folder_and_geotiff_training(make_geotiff, image_dir, tmp_path):
    """A folder of uint16 GeoTIFFs trains (values scaled as upscale does); --val scores another folder."""
    yy, xx = np.mgrid[0:128, 0:128]
    for i in range(2):
        data = np.stack([2000 + 1500 * np.sin(xx / (5.0 + i + b)) * np.cos(yy / 7.0) for b in range(3)])
        make_geotiff(width=128, height=128, count=3, dtype="uint16", data=data.astype(np.uint16), name=f"g{i}.tif")
    out = tmp_path / "run"
    result = rsisr_cli(["train", "ae", "--data", tmp_path, "--val", image_dir, "--out", out,
                        "--max-steps", "2", *TRAIN_FAST, "--set", "train.val_every=2"])
    assert result.exit_code == 0, result.output
    row = metrics_rows(out)[-1]
    assert math.isfinite(float(row["loss"])) and float(row["bicubic_psnr"]) > 20


def test_overfit_real_tiles_loss_falls(shared_data, tmp_path):
    """A few real tiles, a high learning rate: stage 1's L1 and stage 2's loss fall."""
    data = tmp_path / "tiles"
    data.mkdir()
    for src in sorted((shared_data / "train").glob("*.png"))[:2]:
        (data / src.name).symlink_to(src)
    ae_out = tmp_path / "ae"
    result = rsisr_cli(["train", "ae", "--data", data, "--out", ae_out, "--max-steps", "30", *TRAIN_FAST,
                        "--lr", "2e-3", "--set", "ae.disc_start=1000", "--set", "data.val_fraction=0"])
    assert result.exit_code == 0, result.output
    l1 = [float(r["l1"]) for r in metrics_rows(ae_out)]
    assert np.mean(l1[-8:]) < 0.8 * np.mean(l1[:8]), l1
    lcm_out = tmp_path / "lcm"
    result = rsisr_cli(["train", "lcm", "--data", data, "--ae", ae_out / "model.safetensors", "--out", lcm_out,
                        "--max-steps", "30", *TRAIN_FAST, "--lr", "2e-3", "--set", "data.val_fraction=0",
                        "--set", "lcm.latent=mode"])
    assert result.exit_code == 0, result.output
    # L_CT jumps with the random timestep (errors at t near T are amplified by 1/sqrt(alpha_bar));
    # L_KD against the posterior mean is a steady measure.
    kd = [float(r["kd"]) for r in metrics_rows(lcm_out)]
    assert np.mean(kd[-8:]) < 0.8 * np.mean(kd[:8]), kd


def test_loader_workers_do_not_change_the_numbers(image_dir, tmp_path):
    """Samples depend only on (seed, position): 2 loader processes give the losses of 0."""
    runs = []
    for workers in ("0", "2"):
        out = tmp_path / f"w{workers}"
        result = rsisr_cli(["train", "ae", "--data", image_dir, "--out", out, "--max-steps", "2",
                            "--workers", workers, *TRAIN_FAST])
        assert result.exit_code == 0, result.output
        runs.append([(r["loss"], r["l1"]) for r in metrics_rows(out)])
    assert runs[0] == runs[1]


def test_perceptual_loss_and_validation_lpips_from_local_weights(image_dir, tmp_path, metric_weights):
    """ae.perceptual_weight loads LPIPS(VGG) from the metric weights folder (never a download), and
    validation logs LPIPS(AlexNet), the evaluation metric, next to bicubic's."""
    run = tmp_path / "run"
    result = rsisr_cli(["train", "ae", "--data", image_dir, "--val", image_dir, "--out", run, *TRAIN_FAST,
                        "--max-steps", "2",
                        "--set", "ae.perceptual_weight=1", "--set", "ae.perceptual_layers=3",
                        "--set", "train.val_every=2", "--metric-weights", metric_weights])
    assert result.exit_code == 0, result.output
    row = metrics_rows(run)[-1]
    assert float(row["lpips"]) > 0
    assert 0 < float(row["val_lpips"]) < 1 and 0 < float(row["bicubic_lpips"]) < 1
