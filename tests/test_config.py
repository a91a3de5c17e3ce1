import json

import pytest

from rsisr.config import PRESETS, AutoencoderConfig, DiffusionConfig, ModelConfig, UNetConfig, get_preset
from rsisr.errors import ConfigError, RsisrError


def test_presets_round_trip_through_json():
    for name, cfg in PRESETS.items():
        assert cfg.preset == name
        assert ModelConfig.from_json(cfg.to_json()) == cfg


def test_unknown_key_is_named():
    data = PRESETS["tiny"].to_dict()
    data["unet"]["heads"] = 4
    with pytest.raises(ConfigError, match="unet.heads"):
        ModelConfig.from_dict(data)
    with pytest.raises(ConfigError, match="'bogus'"):
        ModelConfig.from_dict({"bogus": 1})


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: AutoencoderConfig(ch=0), "autoencoder.ch"),
        (lambda: AutoencoderConfig(ch_mult=(1, 2)), "autoencoder.ch_mult"),
        (lambda: AutoencoderConfig(ch=48, norm_groups=32), "norm_groups"),
        (lambda: UNetConfig(ch=64, head_dim=48), "head_dim"),
        (lambda: ModelConfig.from_dict({"unet": {"ch": "wide"}}), "unet.ch"),
        (lambda: DiffusionConfig(prediction="v"), "diffusion.prediction must be one of eps, x0"),
    ],
)
def test_invalid_values_raise_config_error(make, match):
    with pytest.raises(ConfigError, match=match):
        make()


def test_prediction_defaults_to_the_papers_eps_for_older_configs():
    """Configs written before diffusion.prediction existed (no key) keep the paper's eps form."""
    data = PRESETS["small"].to_dict()
    del data["diffusion"]["prediction"]
    assert ModelConfig.from_dict(data).diffusion.prediction == "eps"
    assert PRESETS["paper"].diffusion.prediction == "eps"


def test_config_error_is_rsisr_and_value_error():
    with pytest.raises(RsisrError):
        get_preset("huge")
    with pytest.raises(ValueError, match="paper, small, tiny"):
        get_preset("huge")


def test_replace_dotted_keys():
    cfg = PRESETS["tiny"].replace({"unet.ch": 16, "diffusion.k": 100})
    assert cfg.unet.ch == 16 and cfg.diffusion.k == 100
    with pytest.raises(ConfigError, match="unet.nope"):
        PRESETS["tiny"].replace({"unet.nope": 1})


def test_presets_are_frozen():
    with pytest.raises(Exception):
        PRESETS["small"].unet.ch = 3  # type: ignore[misc]


def test_inference_param_counts_match_docstring_table():
    from rsisr.api import describe

    # The table in rsisr/config.py; if a preset changes, update both.
    expected_m = {"paper": 36.13, "small": 3.22, "tiny": 0.11}
    for name, millions in expected_m.items():
        assert round(describe(name)["inference_params"] / 1e6, 2) == millions
    json.dumps(describe("tiny"))  # JSON-serialisable
