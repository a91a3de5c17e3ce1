"""rsisr: 4x super-resolution of remote-sensing rasters with LCMSR, a single-step latent
consistency model.

Heavy modules (torch) load on first use of an attribute, so ``import rsisr`` is cheap::

    import rsisr
    model = rsisr.load_model("model.safetensors")
    sr = model.upscale(image)            # numpy HxWxC / CxHxW or torch tensor, same dtype back
"""

from __future__ import annotations

import importlib
import logging

from rsisr.errors import CheckpointError, ConfigError, DeviceError, InputError, OutputError, RsisrError

__version__ = "0.1.0"

logging.getLogger(__name__).addHandler(logging.NullHandler())

_LAZY = {
    "build_model": "rsisr.api",
    "build_autoencoder": "rsisr.api",
    "load_model": "rsisr.api",
    "describe": "rsisr.api",
    "parameter_counts": "rsisr.api",
    "default_model_path": "rsisr.api",
    "save_model": "rsisr.checkpoint",
    "load_autoencoder": "rsisr.checkpoint",
    "ModelConfig": "rsisr.config",
    "PRESETS": "rsisr.config",
    "LCMSR": "rsisr.models.lcmsr",
    "upscale_file": "rsisr.upscale",
    "upscale_dataarray": "rsisr.dataarray",
}

__all__ = [
    "__version__", "RsisrError", "CheckpointError", "ConfigError", "DeviceError", "InputError",
    "OutputError", *_LAZY,
]


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'rsisr' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
