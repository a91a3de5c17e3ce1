"""Stage 1 from a trained autoencoder: `rsisr train ae --init`, `--decoder-only`."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from conftest import TRAIN_FAST, metrics_rows, rsisr_cli, torch_threads

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def decoder_run(ae_run, image_dir, tmp_path_factory) -> Path:
    """Two steps of decoder-only L1 fine-tuning of ``ae_run``."""
    out = tmp_path_factory.mktemp("runs") / "dec"
    with torch_threads(1):
        result = rsisr_cli(["train", "ae", "--data", image_dir, "--init", ae_run, "--decoder-only",
                            "--out", out, "--max-steps", "2", *TRAIN_FAST, "--set", "ae.adv_weight=0", "--lr", "0.01"])
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
    rows = metrics_rows(decoder_run)
    assert [int(r["step"]) for r in rows] == [1, 2] and all(r["g"] == "" and r["d"] == "" for r in rows)


def test_init_starts_from_the_given_weights(decoder_run, image_dir, tmp_path):
    """With a vanishing learning rate, a run started with --init ends where its autoencoder was
    (the fine-tuned one, far from the seed's random initialisation)."""
    import rsisr

    out = tmp_path / "init"
    result = rsisr_cli(["train", "ae", "--data", image_dir, "--init", decoder_run / "model.safetensors",
                        "--out", out, "--max-steps", "1", *TRAIN_FAST, "--lr", "1e-12"])
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
        result = rsisr_cli(["train", "lcm", "--data", image_dir, "--ae", ae / "model.safetensors",
                            "--out", out, "--max-steps", "2", *TRAIN_FAST])
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
    result = rsisr_cli(["train", "ae", "--data", image_dir, "--init", ae_run, "--decoder-only",
                        "--out", run, "--max-steps", "3", *TRAIN_FAST, "--set", "ae.adv_weight=0", "--lr", "0.01",
                        "--resume"])
    assert result.exit_code == 0, result.output
    assert [int(r["step"]) for r in metrics_rows(run)] == [1, 2, 3]
