"""The Python API that GIS scripts call: build, load, save and describe models."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from rsisr.checkpoint import file_sha256, load_model as _load_model
from rsisr.config import ModelConfig, get_preset
from rsisr.errors import CheckpointError
from rsisr.models.autoencoder import ResidualAutoencoder
from rsisr.models.lcmsr import LCMSR, build_condnet
from rsisr.models.unet import UNet

#: The bundled default model (README, "Default model": the model card and its recipe).
DEFAULT_MODEL_PATH = Path(__file__).parent / "weights" / "default.safetensors"
#: sha256 of the bundled default model file, as released.
DEFAULT_MODEL_SHA256 = "aa7305a5619aa89f5744303deabf61daf952f9f3d82fce798419ce05f3ba6c2e"


def _config(preset: str | ModelConfig) -> ModelConfig:
    return preset if isinstance(preset, ModelConfig) else get_preset(preset)


def build_model(preset: str | ModelConfig = "small") -> LCMSR:
    """A freshly initialised (untrained) inference model for a preset name or a ModelConfig."""
    return LCMSR(_config(preset))


def build_autoencoder(preset: str | ModelConfig = "small") -> ResidualAutoencoder:
    """A freshly initialised stage-1 residual autoencoder; ``full_config`` keeps the ModelConfig."""
    cfg = _config(preset)
    ae = ResidualAutoencoder(cfg.autoencoder, cfg.bands)
    ae.full_config = cfg
    return ae


def default_model_path() -> Path | None:
    """The bundled default model, or None when the weights file is missing from this install."""
    return DEFAULT_MODEL_PATH if DEFAULT_MODEL_PATH.is_file() else None


def require_default_model() -> Path:
    """The bundled default model's path, or a one-line CheckpointError when it is missing."""
    path = default_model_path()
    if path is None:
        raise CheckpointError(
            f"no default model at {DEFAULT_MODEL_PATH} (the bundled weights are missing from this install); "
            "reinstall rsisr or pass a model file (--model PATH)"
        )
    return path


def load_model(path: str | os.PathLike | None = None, device: str | torch.device | None = None) -> LCMSR:
    """Load an inference model; without ``path``, the bundled default model."""
    return _load_model(require_default_model() if path is None else path, device)


def _count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def parameter_counts(preset: str | ModelConfig) -> dict[str, int]:
    """Parameters of every component, built on the meta device (no memory, no init cost)."""
    cfg = _config(preset)
    with torch.device("meta"):
        ae = ResidualAutoencoder(cfg.autoencoder, cfg.bands)
        condnet = build_condnet(cfg)
        unet = UNet(cfg.unet, cfg.autoencoder.z_channels)
    dec = ae.decoder
    latent = sum(_count(m) for m in (dec.latent_in, dec.latent_mid, dec.latent_levels, dec.transfer))
    return {
        "encoder": _count(ae.encoder) + _count(ae.quant_conv),
        "decoder": _count(dec),
        "decoder.latent_branch": latent,
        "decoder.sr_branch": _count(dec) - latent,
        "condnet": _count(condnet),
        "unet": _count(unet),
    }


def describe(preset: str | ModelConfig | None = None, model_path: str | os.PathLike | None = None) -> dict[str, Any]:
    """What ``rsisr info`` prints: config, per-component and inference parameter counts."""
    info: dict[str, Any] = {}
    if model_path is not None:
        model = _load_model(model_path)
        cfg = model.config
        info["model"] = {"path": str(model_path), "sha256": file_sha256(model_path),
                         "scale_factor": float(model.scale_factor)}
    else:
        cfg = _config(preset or "small")
    counts = parameter_counts(cfg)
    info["preset"] = cfg.preset
    info["config"] = cfg.to_dict()
    info["params"] = counts
    info["inference_params"] = counts["decoder"] + counts["condnet"] + counts["unet"]
    default = default_model_path()
    info["default_model"] = (
        {"path": str(default), "sha256": file_sha256(default)} if default is not None else None
    )
    return info
