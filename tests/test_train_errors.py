"""`rsisr train` on bad input: one line, exit status 1, no run directory left behind."""

from __future__ import annotations

import pytest

from conftest import TRAIN_FAST, one_line_error, rsisr_cli

pytestmark = pytest.mark.usefixtures("one_thread")


def test_init_bad_input(ae_run, image_dir, tmp_path, tiny_model_file):
    out = tmp_path / "r"
    result = rsisr_cli(["train", "ae", "--data", image_dir, "--decoder-only", "--out", out, *TRAIN_FAST])
    one_line_error(result, "--init")
    for bad in (tiny_model_file, tmp_path / "missing.safetensors"):
        result = rsisr_cli(["train", "ae", "--data", image_dir, "--init", bad, "--out", out, *TRAIN_FAST])
        one_line_error(result)
    result = rsisr_cli(["train", "ae", "--data", image_dir, "--init", ae_run, "--out", out, *TRAIN_FAST,
                        "--preset", "small"])
    one_line_error(result, "--init")
    assert not (tmp_path / "r").exists()


def test_missing_and_empty_data_folder(tmp_path):
    result = rsisr_cli(["train", "ae", "--data", tmp_path / "nope", "--out", tmp_path / "run", *TRAIN_FAST])
    one_line_error(result, "does not exist")
    (tmp_path / "empty").mkdir()
    result = rsisr_cli(["train", "ae", "--data", tmp_path / "empty", "--out", tmp_path / "run", *TRAIN_FAST])
    one_line_error(result, "holds no images")
    assert not (tmp_path / "run").exists()


def test_every_image_smaller_than_crop(image_dir, tmp_path):
    result = rsisr_cli(["train", "ae", "--data", image_dir, "--out", tmp_path / "run", *TRAIN_FAST,
                        "--set", "data.crop=128"])
    one_line_error(result, "smaller than the 128x128 crop")


def test_unreadable_images_are_skipped_and_counted(image_dir, tmp_path):
    import shutil

    data = tmp_path / "data"
    shutil.copytree(image_dir, data)
    (data / "broken.png").write_bytes(b"not a png")
    (data / "truncated.jpg").write_bytes((image_dir / "img4.jpg").read_bytes()[:200])
    out = tmp_path / "run"
    result = rsisr_cli(["train", "ae", "--data", data, "--out", out, "--max-steps", "1", *TRAIN_FAST])
    assert result.exit_code == 0, result.output
    assert "2 unreadable images" in (out / "train.log").read_text()
    only_broken = tmp_path / "broken"
    only_broken.mkdir()
    (only_broken / "a.png").write_bytes(b"junk")
    result = rsisr_cli(["train", "ae", "--data", only_broken, "--out", tmp_path / "r2", *TRAIN_FAST])
    one_line_error(result, "none of the 1 images", "readable")


def test_ae_file_that_is_not_an_autoencoder(image_dir, tmp_path, tiny_model_file):
    for bad in (tiny_model_file, tmp_path / "missing.safetensors"):
        result = rsisr_cli(["train", "lcm", "--data", image_dir, "--ae", bad, "--out", tmp_path / "r", *TRAIN_FAST])
        one_line_error(result)
    result = rsisr_cli(["train", "lcm", "--data", image_dir, "--ae", tiny_model_file, "--out", tmp_path / "r",
                        *TRAIN_FAST])
    assert "autoencoder" in result.output


def test_resume_with_a_different_config(ae_run, image_dir):
    result = rsisr_cli(["train", "ae", "--data", image_dir, "--out", ae_run, "--max-steps", "3", *TRAIN_FAST,
                        "--set", "data.val_fraction=0.3", "--set", "train.val_every=3", "--lr", "0.001", "--resume"])
    one_line_error(result, "ae.lr")
    result = rsisr_cli(["train", "ae", "--data", image_dir, "--out", ae_run, *TRAIN_FAST])
    one_line_error(result, "--resume")


def test_unknown_config_keys_are_named(image_dir, tmp_path):
    result = rsisr_cli(["train", "ae", "--data", image_dir, "--out", tmp_path / "r", *TRAIN_FAST, "--set", "ae.lrr=1"])
    one_line_error(result, "ae.lrr")
    cfg = tmp_path / "c.yaml"
    cfg.write_text("model:\n  unet:\n    chh: 3\n")
    result = rsisr_cli(["train", "ae", "--data", image_dir, "--out", tmp_path / "r", "--config", cfg, *TRAIN_FAST])
    one_line_error(result, "model.unet.chh")


def test_perceptual_loss_without_weights_is_one_line(image_dir, tmp_path, monkeypatch, metric_weights):
    import shutil

    monkeypatch.delenv("RSISR_METRIC_WEIGHTS", raising=False)
    run = tmp_path / "run"
    args = ["train", "ae", "--data", image_dir, "--out", run, *TRAIN_FAST, "--max-steps", "1",
            "--set", "ae.perceptual_weight=1"]
    one_line_error(rsisr_cli(args), "needs the LPIPS(VGG) weights", "--metric-weights")
    partial = tmp_path / "partial"
    shutil.copytree(metric_weights, partial)
    (partial / "vgg16_features.pth").unlink()
    one_line_error(rsisr_cli([*args, "--metric-weights", partial]), "has no vgg16_features.pth")
    assert not run.exists()


def test_damaged_checkpoint_is_one_line(ae_run, image_dir, tmp_path):
    """A training checkpoint cut short (a full disk, a copy stopped half way): --resume stops in one
    line naming it (a CheckpointError), and the run is left as it was."""
    import shutil

    run = tmp_path / "run"
    shutil.copytree(ae_run, run)
    ckpt = run / "checkpoints" / "step_00000003.pt"
    ckpt.write_bytes(ckpt.read_bytes()[:1000])
    before = sorted(p.name for p in run.rglob("*"))
    result = rsisr_cli(["train", "ae", "--data", image_dir, "--out", run, "--max-steps", "4", *TRAIN_FAST,
                        "--set", "data.val_fraction=0.3", "--set", "train.val_every=3", "--resume"])
    one_line_error(result, "step_00000003.pt cannot be read", "delete it")
    assert sorted(p.name for p in run.rglob("*")) == before
