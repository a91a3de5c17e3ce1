"""`rsisr train ae --lcm`: fine-tune a stage-2 model's decoder on the latents it predicts."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import TRAIN_FAST, metrics_rows, rsisr_cli, torch_threads

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def lcm_run(ae_run, image_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "lcm"
    with torch_threads(1):
        result = rsisr_cli(["train", "lcm", "--data", image_dir, "--ae", ae_run / "model.safetensors",
                            "--out", out, "--max-steps", "2", *TRAIN_FAST])
    assert result.exit_code == 0, result.output
    return out


def _decoder_run(image_dir, lcm, out, steps, *extra):
    return rsisr_cli(["train", "ae", "--data", image_dir, "--lcm", lcm, "--out", out, "--max-steps", str(steps),
                      *TRAIN_FAST, "--set", "ae.adv_weight=0", "--lr", "0.01", "--set", "data.val_fraction=0.3",
                      "--set", "train.val_every=2", *extra])


@pytest.fixture(scope="module")
def tuned_run(lcm_run, image_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "tuned"
    with torch_threads(1):
        result = _decoder_run(image_dir, lcm_run, out, 2)
    assert result.exit_code == 0, result.output
    return out


def test_only_the_decoder_changes_and_a_stage2_model_is_written(lcm_run, tuned_run):
    import rsisr

    before = rsisr.load_model(lcm_run / "model.safetensors").state_dict()
    model = rsisr.load_model(tuned_run / "model.safetensors")  # an inference model, not an autoencoder
    after = model.state_dict()
    rest = [k for k in before if not k.startswith("decoder.")]
    assert "scale_factor" in rest and any(k.startswith("consistency.unet.") for k in rest)
    assert all(torch.equal(before[k], after[k]) for k in rest)
    changed = [k for k in before if k.startswith("decoder.") and not torch.equal(before[k], after[k])]
    assert len(changed) > 10
    rows = metrics_rows(tuned_run)
    assert [int(r["step"]) for r in rows] == [1, 2] and rows[-1]["val_psnr"] != ""
    assert all(float(r["kl"]) == 0 for r in rows)  # no posterior: the latents are the stage-2 model's
    sr = model.upscale(np.full((12, 20, 3), 128, np.uint8), seed=0)
    assert sr.shape == (48, 80, 3)


def test_the_decoder_learns_from_the_stage2_latents(lcm_run, image_dir, tmp_path, monkeypatch):
    """The latents fed to the decoder are those ``LCMSR.predict_latent`` gives for the LR crop."""
    from rsisr.models.lcmsr import LCMSR

    calls = []
    original = LCMSR.predict_latent

    def spy(self, lr, noises, steps=1):
        calls.append((tuple(lr.shape), steps, torch.is_grad_enabled()))
        return original(self, lr, noises, steps)

    monkeypatch.setattr(LCMSR, "predict_latent", spy)
    result = _decoder_run(image_dir, lcm_run, tmp_path / "spy", 1, "--set", "train.val_every=100")
    assert result.exit_code == 0, result.output
    # One call for the step's batch of 2 crops of 32 px (LR 8 px), without gradients.
    assert (( 2, 3, 8, 8), 1, False) in calls


def test_resume(lcm_run, tuned_run, image_dir, tmp_path):
    run = tmp_path / "tuned"
    shutil.copytree(tuned_run, run)
    result = _decoder_run(image_dir, lcm_run, run, 3, "--resume")
    assert result.exit_code == 0, result.output
    assert [int(r["step"]) for r in metrics_rows(run)] == [1, 2, 3]


def test_lcm_and_init_together_are_refused(ae_run, lcm_run, image_dir, tmp_path):
    out = tmp_path / "both"
    result = rsisr_cli(["train", "ae", "--data", image_dir, "--lcm", lcm_run, "--init", ae_run, "--out", out,
                        "--max-steps", "1", *TRAIN_FAST])
    assert result.exit_code == 1
    assert "--lcm" in result.output and "--init" in result.output and len(result.output.strip().splitlines()) == 1
    assert not out.exists()


def test_an_autoencoder_given_as_lcm_is_refused(ae_run, image_dir, tmp_path):
    out = tmp_path / "wrong"
    result = rsisr_cli(["train", "ae", "--data", image_dir, "--lcm", ae_run, "--out", out, "--max-steps", "1",
                        *TRAIN_FAST])
    assert result.exit_code == 1
    assert "autoencoder" in result.output and len(result.output.strip().splitlines()) == 1
    assert not out.exists()


def test_lcm_unet_trains_the_whole_one_step_model_end_to_end(lcm_run, image_dir, tmp_path):
    """``ae.lcm_unet``: CondNet, UNet and decoder all learn; the run resumes with them."""
    import rsisr

    out = tmp_path / "e2e"
    result = _decoder_run(image_dir, lcm_run, out, 2, "--set", "ae.lcm_unet=true")
    assert result.exit_code == 0, result.output
    before = rsisr.load_model(lcm_run / "model.safetensors").state_dict()
    after = rsisr.load_model(out / "model.safetensors").state_dict()
    for part in ("condnet.", "consistency.unet.", "decoder."):
        changed = [k for k in before if k.startswith(part) and not torch.equal(before[k], after[k])]
        assert len(changed) > 5, part
    assert torch.equal(before["scale_factor"], after["scale_factor"])
    result = _decoder_run(image_dir, lcm_run, out, 3, "--resume")
    assert result.exit_code == 0, result.output
    resumed = rsisr.load_model(out / "model.safetensors").state_dict()
    # the resumed run keeps training the UNet (ae.lcm_unet comes back from the run's config)
    assert any(not torch.equal(after[k], resumed[k]) for k in after if k.startswith("consistency.unet."))
    assert [int(r["step"]) for r in metrics_rows(out)] == [1, 2, 3]

def test_lcm_unet_without_lcm_is_refused(image_dir, tmp_path):
    out = tmp_path / "no-lcm"
    result = rsisr_cli(["train", "ae", "--data", image_dir, "--out", out, "--max-steps", "1", *TRAIN_FAST,
                        "--set", "ae.lcm_unet=true"])
    assert result.exit_code == 1
    assert "ae.lcm_unet" in result.output and "--lcm" in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert not out.exists()
