"""Explicit, documented value scaling between a raster's dtype and the model's [0, 1].

``--scale`` modes (``rsisr upscale``; training on GeoTIFF folders uses the same functions):

- ``uint8`` data is always taken as is: [0, 255] -> [0, 1].
- ``none``: the dtype's full range (uint16 [0, 65535], int16 [-32768, 32767]); floats as [0, 1].
- ``MIN,MAX``: one linear range for every band.
- ``auto`` (default): per band, the 0.1 and 99.9 percentiles of the valid pixels of a sample.

The forward map is linear, ``x = (v - lo) / (hi - lo)``; values outside [lo, hi] go outside
[0, 1] and are clipped to [0, 1] before the model. The inverse ``v = x (hi - lo) + lo`` is exact,
then rounded (integer dtypes) and clipped to the dtype's range; NaN never reaches an integer output.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np

from rsisr.errors import InputError

AUTO_PERCENTILES = (0.1, 99.9)


@dataclass(frozen=True)
class Scaling:
    """Per-band linear range: band b maps [lo[b], hi[b]] to [0, 1]."""

    mode: str
    lo: tuple[float, ...]
    hi: tuple[float, ...]

    def forward(self, values: np.ndarray) -> np.ndarray:
        """(C, H, W) raster values -> float32 in [0, 1] (clipped). NaN becomes 0."""
        lo = np.asarray(self.lo, np.float64)[:, None, None]
        hi = np.asarray(self.hi, np.float64)[:, None, None]
        x = (values.astype(np.float64) - lo) / (hi - lo)
        return np.nan_to_num(np.clip(x, 0.0, 1.0), nan=0.0).astype(np.float32)

    def inverse(self, x: np.ndarray, dtype) -> np.ndarray:
        """(C, H, W) model values in [0, 1] -> the raster dtype, rounded and clipped to its range."""
        dtype = np.dtype(dtype)
        lo = np.asarray(self.lo, np.float64)[:, None, None]
        hi = np.asarray(self.hi, np.float64)[:, None, None]
        v = np.nan_to_num(x.astype(np.float64), nan=0.0) * (hi - lo) + lo
        if dtype.kind in "ui":
            info = np.iinfo(dtype)
            return np.clip(np.rint(v), info.min, info.max).astype(dtype)
        if dtype.kind == "f":
            info = np.finfo(dtype)
            return np.clip(v, info.min, info.max).astype(dtype)
        raise InputError(f"raster dtype {dtype} is not supported; use an integer or float dtype")

    def inverse_torch(self, x, dtype) -> np.ndarray:
        """:meth:`inverse` of a (C, H, W) torch tensor, computed on its device (so a GPU sends
        back the output dtype rather than floats), in float64 like :meth:`inverse` (float32 on
        Apple's MPS, which has no float64). Returns numpy."""
        import torch

        dtype = np.dtype(dtype)
        work = torch.float32 if x.device.type == "mps" else torch.float64
        lo = torch.tensor(self.lo, dtype=work, device=x.device)[:, None, None]
        hi = torch.tensor(self.hi, dtype=work, device=x.device)[:, None, None]
        v = torch.nan_to_num(x.to(work), nan=0.0) * (hi - lo) + lo
        if dtype.kind in "ui":
            info = np.iinfo(dtype)
            v = torch.round(v).clamp_(float(info.min), float(info.max))
            carrier = {"uint8": torch.uint8, "int8": torch.int8, "int16": torch.int16}.get(dtype.name, torch.int64)
            return v.to(carrier).cpu().numpy().astype(dtype)
        if dtype.kind == "f":
            info = np.finfo(dtype)
            return v.clamp_(float(info.min), float(info.max)).cpu().numpy().astype(dtype)
        raise InputError(f"raster dtype {dtype} is not supported; use an integer or float dtype")

    def to_tag(self) -> str:
        """JSON recorded in the output's tags (``RSISR_SCALING``)."""
        return json.dumps({"mode": self.mode, "lo": list(self.lo), "hi": list(self.hi)})


def dtype_range(dtype) -> tuple[float, float]:
    dtype = np.dtype(dtype)
    if dtype.kind in "ui":
        info = np.iinfo(dtype)
        return float(info.min), float(info.max)
    if dtype.kind == "f":
        return 0.0, 1.0
    raise InputError(f"raster dtype {dtype} is not supported; use an integer or float dtype")


def parse_scale(spec: str) -> str | tuple[float, float]:
    """``auto`` | ``none`` | ``MIN,MAX`` -> the mode or a (min, max) tuple; errors name the value."""
    spec = spec.strip().lower()
    if spec in ("auto", "none"):
        return spec
    parts = spec.split(",")
    try:
        lo, hi = (float(p) for p in parts)
    except ValueError:
        raise InputError(f"invalid --scale {spec!r}; use auto, none or MIN,MAX (e.g. 0,3000)") from None
    if not np.isfinite([lo, hi]).all() or hi <= lo:
        raise InputError(f"invalid --scale {spec!r}: MAX must be greater than MIN")
    return lo, hi


def resolve_scaling(spec: str | tuple[float, float], dtype, bands: int, sample: np.ndarray | None = None,
                    valid: np.ndarray | None = None) -> Scaling:
    """Build the Scaling for ``bands`` bands of ``dtype``.

    ``sample`` (C, h, w) and its ``valid`` mask (h, w) (True = valid) are needed for ``auto``:
    typically a decimated read of the whole raster. A constant band gets a unit-width range.
    """
    dtype = np.dtype(dtype)
    if isinstance(spec, str):
        spec = parse_scale(spec)
    if dtype == np.uint8:
        return Scaling("uint8", (0.0,) * bands, (255.0,) * bands)
    if spec == "none":
        lo, hi = dtype_range(dtype)
        return Scaling("none", (lo,) * bands, (hi,) * bands)
    if isinstance(spec, tuple):
        return Scaling("range", (spec[0],) * bands, (spec[1],) * bands)
    if sample is None:
        raise ValueError("auto scaling needs a sample of the raster")
    los, his = [], []
    for b in range(bands):
        values = sample[b]
        values = values[valid] if valid is not None else values.ravel()
        values = values[np.isfinite(values)]
        if values.size == 0:
            lo, hi = dtype_range(dtype)
        else:
            lo, hi = (float(v) for v in np.percentile(values, AUTO_PERCENTILES))
        if hi <= lo:
            hi = lo + 1.0
        los.append(lo)
        his.append(hi)
    return Scaling("auto", tuple(los), tuple(his))
