"""Device and precision selection: ``auto`` means CUDA when present, else the CPU."""

from __future__ import annotations

import contextlib

import torch

from rsisr.errors import DeviceError

from rsisr.defaults import PRECISIONS as _NAMES

PRECISIONS = dict(zip(_NAMES, (None, torch.bfloat16, torch.float16)))


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


def native_bf16(device: torch.device) -> bool:
    """Whether ``device`` computes bf16 natively, checked at run time (machines differ: one CPU
    here had AVX512-BF16, another only AVX512-VNNI): CUDA with bf16 support, or a CPU with
    AVX512-BF16 or AMX tiles. Elsewhere bf16 is emulated and slower than fp32."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        cpu = getattr(torch, "cpu", None)
        checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
        return any(bool(getattr(cpu, name, lambda: False)()) for name in checks)
    return False


def resolve_precision(precision: str, device: torch.device) -> str:
    """``auto`` -> ``bf16`` where :func:`native_bf16`, else ``fp32``; other names are checked and kept."""
    if precision == "auto":
        return "bf16" if native_bf16(device) else "fp32"
    if precision not in PRECISIONS:
        raise DeviceError(f"invalid precision {precision!r}; use auto or one of: {', '.join(PRECISIONS)}")
    return precision


def autocast(device: torch.device, precision: str = "fp32"):
    """Autocast context for ``precision`` (fp32 | bf16 | fp16) on ``device``."""
    if precision not in PRECISIONS:
        raise DeviceError(f"invalid precision {precision!r}; use one of: {', '.join(PRECISIONS)}")
    dtype = PRECISIONS[precision]
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)
