"""Training configuration: defaults, layers, keys, resume differences (no training)."""

from __future__ import annotations

import json

import pytest

from rsisr.errors import ConfigError
from rsisr.training import config as tc


def test_defaults_follow_the_paper():
    cfg = tc.resolve("ae")
    assert cfg.model.preset == "small"
    assert (cfg.ae.batch_size, cfg.ae.lr, cfg.ae.betas) == (8, 3.6e-5, (0.5, 0.9))
    assert (cfg.ae.kl_weight, cfg.ae.adv_weight, cfg.ae.perceptual_weight) == (1e-6, 0.5, 0.0)
    assert cfg.data.crop == 256
    lcm = tc.resolve("lcm")
    assert (lcm.lcm.batch_size, lcm.lcm.lr, lcm.lcm.ema_decay) == (16, 8e-5, 0.9999)
    assert lcm.total_steps(1600) == 200 * 1600 // 16  # 200 epochs


def test_layers_override_in_order_and_bare_keys_resolve(tmp_path):
    f = tmp_path / "c.json"
    f.write_text(json.dumps({"data": {"crop": 128}, "ae": {"lr": 1e-4}, "model": {"preset": "tiny", "unet": {"ch": 16}}}))
    cfg = tc.resolve("ae", files=[tc.load_config_file(f)], sets=tc.parse_set(["lr=2e-4", "unet.head_dim=16"]),
                     flags={"ae.batch_size": 4, "ae.lr": None})
    assert cfg.data.crop == 128 and cfg.ae.lr == 2e-4 and cfg.ae.batch_size == 4
    assert cfg.model.preset == "tiny" and cfg.model.unet.ch == 16 and cfg.model.unet.head_dim == 16
    assert cfg.model.autoencoder == tc.get_preset("tiny").autoencoder


def test_max_steps_replaces_epochs_and_vice_versa():
    cfg = tc.resolve("ae", flags={"ae.max_steps": 7})
    assert cfg.ae.max_steps == 7 and cfg.ae.epochs is None and cfg.total_steps(100) == 7
    again = tc.resolve("ae", base=cfg.to_dict(), flags={"ae.epochs": 2})
    assert again.ae.max_steps is None and again.total_steps(100) == 25 and again.total_steps(101) == 26


@pytest.mark.parametrize("key", ["ae.lrr", "nope", "model.unet.chh", "data.crop.x", "unet"])
def test_unknown_keys_are_named(key):
    with pytest.raises(ConfigError, match=key.split(".")[-1] if key != "unet" else "section"):
        tc.resolve("ae", sets={key: 1})


def test_bad_values_and_yaml_errors(tmp_path):
    with pytest.raises(ConfigError, match="data.crop"):
        tc.resolve("ae", sets={"data.crop": 100})
    with pytest.raises(ConfigError, match="lcm.kd"):
        tc.resolve("lcm", sets={"lcm.kd": "maybe"})
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        tc.load_config_file(bad)
    with pytest.raises(ConfigError, match="key=value"):
        tc.parse_set(["crop"])


def test_other_stage_section_is_checked_not_used():
    cfg = tc.resolve("ae", files=[{"lcm": {"batch_size": 3}, "ae": {"batch_size": 5}}])
    assert cfg.ae.batch_size == 5 and "lcm" not in cfg.to_dict()
    with pytest.raises(ConfigError, match="lcm.batchsize"):
        tc.resolve("ae", files=[{"lcm": {"batchsize": 3}}])


def test_config_differences_ignore_run_and_length():
    a = tc.resolve("ae", flags={"ae.max_steps": 10}).to_dict()
    b = tc.resolve("ae", flags={"ae.max_steps": 20, "run.workers": 3, "run.device": "cpu"}).to_dict()
    assert tc.config_differences(a, b) == []
    c = tc.resolve("ae", flags={"ae.max_steps": 10, "ae.kl_weight": 1e-5}).to_dict()
    assert [d[0] for d in tc.config_differences(a, c)] == ["ae.kl_weight"]


def test_config_differences_same_folder_behind_a_symlink(tmp_path):
    """A run resumed after its folders moved behind a symlink (or named by another path to the
    same place) resumes; another folder is still a difference."""
    (tmp_path / "data").mkdir()
    (tmp_path / "other").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "data")
    a = tc.resolve("ae", flags={"data.train": str(tmp_path / "data")}).to_dict()
    b = tc.resolve("ae", flags={"data.train": str(tmp_path / "link")}).to_dict()
    assert tc.config_differences(a, b) == []
    c = tc.resolve("ae", flags={"data.train": str(tmp_path / "other")}).to_dict()
    assert [d[0] for d in tc.config_differences(a, c)] == ["data.train"]


def test_example_config_resolves():
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "examples" / "train_small_cpu.yaml"
    data = tc.load_config_file(path)
    for stage in ("ae", "lcm"):
        cfg = tc.resolve(stage, files=[data])
        assert cfg.model.preset == "small" and cfg.data.crop % (4 * cfg.model.lr_multiple) == 0


def test_default_model_recipe_resolves():
    """examples/train_default*.yaml say what README's model card says the default model had."""
    from pathlib import Path

    examples = Path(__file__).resolve().parents[1] / "examples"
    main = tc.load_config_file(examples / "train_default.yaml")
    ae, lcm = tc.resolve("ae", files=[main]), tc.resolve("lcm", files=[main])
    assert (ae.ae.max_steps, ae.ae.disc_start, ae.ae.lr, ae.ae.batch_size, ae.data.crop) == (1760, 1000, 2e-4, 8, 128)
    assert ae.data.hr_scales == (1, 2) and ae.data.val_images == 32
    assert (lcm.lcm.max_steps, lcm.lcm.lr, lcm.model.diffusion.prediction) == (7803, 2e-4, "x0")
    decoder = tc.load_config_file(examples / "train_default_decoder.yaml")
    dec = tc.resolve("ae", files=[decoder], flags={"ae.lcm": "runs/default_lcm/model.safetensors"})
    assert (dec.ae.max_steps, dec.ae.lr, dec.ae.adv_weight, dec.ae.perceptual_weight, dec.data.crop) == \
        (DECODER_STEPS, 5e-5, 0.0, 0.2, 128)
    e2e = tc.resolve("ae", files=[tc.load_config_file(examples / "train_default_e2e.yaml")],
                     flags={"ae.lcm": "runs/default_dec/model.safetensors"})
    assert (e2e.ae.max_steps, e2e.ae.lr, e2e.ae.adv_weight, e2e.ae.perceptual_weight, e2e.ae.lcm_unet) == \
        (E2E_STEPS, 5e-5, 0.0, 0.5, True)
    gan = tc.resolve("ae", files=[tc.load_config_file(examples / "train_default_gan.yaml")],
                     flags={"ae.lcm": "runs/default_e2e/model.safetensors"})
    assert (gan.ae.max_steps, gan.ae.lr, gan.ae.disc_start, gan.ae.adv_weight, gan.ae.perceptual_weight,
            gan.ae.lcm_unet, gan.data.hr_scales) == (GAN_STEPS, 5e-5, 0, 0.1, 1.0, True, (1, 2))


#: Stage 3, 4 and 5 steps of the shipped default model (README, "Default model").
DECODER_STEPS = 800
E2E_STEPS = 1950
GAN_STEPS = 250


def test_hr_scales_are_validated():
    with pytest.raises(ConfigError, match="hr_scales"):
        tc.DataConfig(hr_scales=(0,))
