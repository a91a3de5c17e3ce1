"""Inference weights: one ``.safetensors`` file whose metadata holds the JSON config and the
format version, so :func:`load_model` needs nothing else. Never unpickled.

Metadata keys: ``format`` = "rsisr", ``format_version``, ``kind`` ("lcmsr" for the inference
model, "autoencoder" for a stage-1 autoencoder), ``config`` (ModelConfig JSON), ``rsisr_version``.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import torch
from torch import nn

from rsisr.atomic import atomic_path, write_error
from rsisr.config import ModelConfig
from rsisr.errors import CheckpointError, ConfigError

FORMAT = "rsisr"
FORMAT_VERSION = "1"
KINDS = ("lcmsr", "autoencoder")


def _plain(module: nn.Module) -> nn.Module:
    """The module behind a torch.compile wrapper (whose keys carry an ``_orig_mod.`` prefix)."""
    return getattr(module, "_orig_mod", module)


def _kind_of(module: nn.Module) -> str:
    from rsisr.models.autoencoder import ResidualAutoencoder
    from rsisr.models.lcmsr import LCMSR

    if isinstance(module, LCMSR):
        return "lcmsr"
    if isinstance(module, ResidualAutoencoder):
        return "autoencoder"
    raise TypeError(f"save_model takes an LCMSR or ResidualAutoencoder, got {type(module).__name__}")


def save_model(model: nn.Module, path: str | os.PathLike, config: ModelConfig | None = None) -> Path:
    """Write ``model``'s weights and config to ``path`` atomically (temporary file + rename; a
    failed write is a one-line :class:`~rsisr.errors.OutputError` and leaves nothing behind)."""
    from safetensors import SafetensorError
    from safetensors.torch import save_file

    from rsisr import __version__

    model = _plain(model)
    kind = _kind_of(model)
    config = config or model_config(model)
    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    metadata = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "kind": kind,
        "config": config.to_json(),
        "rsisr_version": __version__,
    }
    path = Path(path)
    try:
        with atomic_path(path, "model file") as tmp:
            save_file(state, str(tmp), metadata=metadata)
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp, 0o666 & ~umask)  # safetensors makes 0600; a model file is as readable as any other
    except SafetensorError as exc:
        if "os error" in str(exc):  # the I/O error of the Rust writer: a full disk, say
            raise write_error(path, exc, "model file") from None
        raise
    return path


def model_config(model: nn.Module) -> ModelConfig:
    cfg = getattr(_plain(model), "full_config", None) or getattr(_plain(model), "config", None)
    if isinstance(cfg, ModelConfig):
        return cfg
    raise CheckpointError("model carries no ModelConfig; pass config= to save_model")


def read_metadata(path: str | os.PathLike) -> dict[str, str]:
    """Read and validate a checkpoint's metadata without loading its tensors."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"model file {str(path)!r} does not exist; pass the path of a .safetensors model")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except Exception as exc:  # safetensors raises its own error types for bad headers
        raise CheckpointError(
            f"{path} is not a readable safetensors file ({exc}); it may be truncated or of another format"
        ) from None
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{path} is a safetensors file but not an rsisr model (no rsisr metadata)")
    if meta.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"{path} has rsisr format version {meta.get('format_version')!r}; this rsisr reads "
            f"version {FORMAT_VERSION}: upgrade rsisr or re-export the model"
        )
    if meta.get("kind") not in KINDS:
        raise CheckpointError(f"{path} holds an unknown model kind {meta.get('kind')!r}")
    return meta


def _load(path: str | os.PathLike, expect: str, device: str | torch.device | None) -> nn.Module:
    from safetensors import safe_open

    from rsisr.models.autoencoder import ResidualAutoencoder
    from rsisr.models.lcmsr import LCMSR

    meta = read_metadata(path)
    if meta["kind"] != expect:
        hint = "an inference model from `rsisr train lcm`" if expect == "lcmsr" else "an autoencoder from `rsisr train ae`"
        raise CheckpointError(f"{path} holds a {meta['kind']} model, but {hint} is needed here")
    try:
        config = ModelConfig.from_json(meta["config"])
    except (ConfigError, KeyError) as exc:
        raise CheckpointError(f"{path} has an invalid config: {exc}") from None
    model = LCMSR(config) if expect == "lcmsr" else ResidualAutoencoder(config.autoencoder, config.bands)
    if expect == "autoencoder":
        model.full_config = config
    state = {}
    try:
        with safe_open(str(path), framework="pt") as f:
            for key in f.keys():
                state[key] = f.get_tensor(key)
    except Exception as exc:
        raise CheckpointError(f"{path} could not be read ({exc}); the file may be truncated") from None
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} tensors (e.g. {missing[0]!r})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected tensors (e.g. {unexpected[0]!r})")
        raise CheckpointError(f"{path} does not match its config: {', '.join(parts)}")
    for key, tensor in state.items():
        if tuple(tensor.shape) != tuple(expected[key].shape):
            raise CheckpointError(
                f"{path} does not match its config: {key!r} has shape {tuple(tensor.shape)}, "
                f"expected {tuple(expected[key].shape)}"
            )
    model.load_state_dict(state, strict=True)
    model.eval()
    # Where the weights came from, so outputs can record the model file's hash (rsisr upscale tags).
    model.source_path = Path(path)
    if device is not None:
        model.to(device)
    return model


def load_model(path: str | os.PathLike, device: str | torch.device | None = None) -> nn.Module:
    """Load an inference model (:class:`~rsisr.models.lcmsr.LCMSR`) from a ``.safetensors`` file."""
    return _load(path, "lcmsr", device)


def load_autoencoder(path: str | os.PathLike, device: str | torch.device | None = None) -> nn.Module:
    """Load a stage-1 :class:`~rsisr.models.autoencoder.ResidualAutoencoder`; its ``full_config``
    attribute holds the whole ModelConfig it was trained with."""
    return _load(path, "autoencoder", device)


def file_sha256(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
