"""Device and precision selection: ``auto`` means CUDA when present, else the CPU."""

from __future__ import annotations

import contextlib

import torch

from rsisr.errors import DeviceError

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_device(spec: str | torch.device | None = "auto") -> torch.device:
    """``auto`` | ``cpu`` | ``cuda`` | ``cuda:N`` -> torch.device, checking that it exists."""
    if isinstance(spec, torch.device):
        return spec
    spec = (spec or "auto").strip().lower()
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if spec == "cpu":
        return torch.device("cpu")
    if spec == "cuda" or spec.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise DeviceError(f"device {spec!r} was requested but CUDA is not available here; use --device cpu or auto")
        try:
            dev = torch.device(spec)
        except RuntimeError:
            raise DeviceError(f"invalid device {spec!r}; use auto, cpu, cuda or cuda:N") from None
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise DeviceError(
                f"device {spec!r} does not exist: this machine has {torch.cuda.device_count()} CUDA device(s)"
            )
        return dev
    raise DeviceError(f"invalid device {spec!r}; use auto, cpu, cuda or cuda:N")


def autocast(device: torch.device, precision: str = "fp32"):
    """Autocast context for ``precision`` (fp32 | bf16 | fp16) on ``device``."""
    if precision not in PRECISIONS:
        raise DeviceError(f"invalid precision {precision!r}; use one of: {', '.join(PRECISIONS)}")
    dtype = PRECISIONS[precision]
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)
