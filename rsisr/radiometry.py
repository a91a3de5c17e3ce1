"""Explicit, documented value scaling between a raster's dtype and the model's [0, 1].

``--scale`` modes (``rsisr upscale``; training on GeoTIFF folders uses the same functions):

- ``uint8`` data is always taken as is: [0, 255] -> [0, 1].
- ``none``: the dtype's full range (uint16 [0, 65535], int16 [-32768, 32767]); floats as [0, 1].
- ``MIN,MAX``: one linear range for every band; ``MIN1,MAX1,MIN2,MAX2,...``: one per band; or
  the JSON of an output's ``RSISR_SCALING`` tag, so a run's scaling can be given to the next.
- ``auto`` (default): per band, the 0.1 and 99.9 percentiles of the valid pixels of a decimated
  sample of the whole raster (never of the processed window alone, so that a window, an AOI and
  a whole-scene run scale alike).

The forward map is linear, ``x = (v - lo) / (hi - lo)``; values outside [lo, hi] go outside
[0, 1] and are clipped to [0, 1] before the model. What the clipping removes is not lost: its
bicubic x4, in raster units (:meth:`Scaling.outside`), is added back to the model's output, so a
bright roof above the 99.9th percentile keeps its magnitude. The inverse ``v = x (hi - lo) + lo``
is exact, then rounded (integer dtypes) and clipped to the dtype's range; NaN never reaches an
integer output.
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

    def inverse(self, x: np.ndarray, dtype, extra: np.ndarray | None = None) -> np.ndarray:
        """(C, H, W) model values in [0, 1] -> the raster dtype, rounded and clipped to its range.

        ``extra``: (C, H, W) raster units added before rounding (the upsampled :meth:`outside` part).
        """
        dtype = np.dtype(dtype)
        lo = np.asarray(self.lo, np.float64)[:, None, None]
        hi = np.asarray(self.hi, np.float64)[:, None, None]
        v = np.nan_to_num(x.astype(np.float64), nan=0.0) * (hi - lo) + lo
        if extra is not None:
            v += extra
        return to_dtype(v, dtype)

    def inverse_torch(self, x, dtype, extra=None) -> np.ndarray:
        """:meth:`inverse` of a (C, H, W) torch tensor, computed on its device (so a GPU sends
        back the output dtype rather than floats), in float64 like :meth:`inverse` (float32 on
        Apple's MPS, which has no float64). Returns numpy."""
        import torch

        dtype = np.dtype(dtype)
        work = torch.float32 if x.device.type == "mps" else torch.float64
        lo = torch.tensor(self.lo, dtype=work, device=x.device)[:, None, None]
        hi = torch.tensor(self.hi, dtype=work, device=x.device)[:, None, None]
        v = torch.nan_to_num(x.to(work), nan=0.0) * (hi - lo) + lo
        if extra is not None:
            v += torch.as_tensor(extra).to(x.device, work)
        if dtype.kind in "ui":
            info = np.iinfo(dtype)
            v = torch.round(v).clamp_(float(info.min), float(info.max))
            carrier = {"uint8": torch.uint8, "int8": torch.int8, "int16": torch.int16}.get(dtype.name, torch.int64)
            return v.to(carrier).cpu().numpy().astype(dtype)
        if dtype.kind == "f":
            info = np.finfo(dtype)
            return v.clamp_(float(info.min), float(info.max)).cpu().numpy().astype(dtype)
        raise InputError(f"raster dtype {dtype} is not supported; use an integer or float dtype")

    def outside(self, raw: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray | None:
        """What :meth:`forward` clips away from (C, h, w) ``raw`` values: ``raw - clip(raw, lo, hi)``
        in raster units (float64), 0 at invalid (``valid``: (h, w) bool) and non-finite pixels.
        None when that is zero everywhere (the common case, and always for uint8)."""
        if self.mode == "uint8":
            return None
        lo = np.asarray(self.lo, np.float64)[:, None, None]
        hi = np.asarray(self.hi, np.float64)[:, None, None]
        v = raw.astype(np.float64)
        part = v - np.clip(v, lo, hi)
        part[~np.isfinite(part)] = 0.0
        if valid is not None:
            part[:, ~valid] = 0.0
        return part if part.any() else None

    def carry(self, read, lr_shape: tuple[int, int], rows: tuple[int, int], cols: tuple[int, int], factor: int = 4):
        """What the model cannot see, for HR rows/cols [a, b) of the scene: (x01, weight, extra),
        each (C, b - a, b' - a') float64 torch, or None when no valid input pixel in reach is clipped.

        ``read(r0, r1, c0, c1)`` -> ((C, h, w) raw values, (h, w) valid mask or None) of the LR scene.
        ``extra`` = bicubic x4 of :meth:`outside` (raster units, added after the inverse map);
        ``weight`` = bicubic x4 of the clipped-pixel indicator, clamped to [0, 1]; ``x01`` =
        bicubic x4 of the clipped input in model units. The output is
        ``inverse((1 - weight) * model + weight * x01) + extra``: where the input was clipped the
        model saw a flat value and carries no information, so the result there is the bicubic x4
        of the true values; away from clipped pixels it is the model's. A pure function of scene
        coordinates (:func:`rsisr.imageops.bicubic_up_window`), so windows and tilings agree.
        """
        from rsisr.imageops import bicubic_up_window

        def stacked(r0, r1, c0, c1):
            raw, valid = read(r0, r1, c0, c1)
            part = self.outside(raw, valid)
            if part is None:
                return None
            return np.concatenate([self.forward(raw).astype(np.float64), (part != 0).astype(np.float64), part])

        up = bicubic_up_window(stacked, lr_shape, rows, cols, factor)
        if up is None:
            return None
        c = up.shape[0] // 3
        return up[:c], up[c:2 * c].clamp_(0.0, 1.0), up[2 * c:]

    def to_tag(self) -> str:
        """JSON recorded in the output's tags (``RSISR_SCALING``)."""
        return json.dumps({"mode": self.mode, "lo": list(self.lo), "hi": list(self.hi)})


def to_dtype(v: np.ndarray, dtype) -> np.ndarray:
    """float64 raster units -> ``dtype``: rounded and clipped to an integer dtype's range, clipped
    to a float dtype's."""
    dtype = np.dtype(dtype)
    if dtype.kind in "ui":
        info = np.iinfo(dtype)
        return np.clip(np.rint(v), info.min, info.max).astype(dtype)
    if dtype.kind == "f":
        info = np.finfo(dtype)
        return np.clip(v, info.min, info.max).astype(dtype)
    raise InputError(f"raster dtype {dtype} is not supported; use an integer or float dtype")


def dtype_range(dtype) -> tuple[float, float]:
    dtype = np.dtype(dtype)
    if dtype.kind in "ui":
        info = np.iinfo(dtype)
        return float(info.min), float(info.max)
    if dtype.kind == "f":
        return 0.0, 1.0
    raise InputError(f"raster dtype {dtype} is not supported; use an integer or float dtype")


def parse_scale(spec: str) -> str | tuple[float, float] | Scaling:
    """``auto`` | ``none`` | ``MIN,MAX`` | ``MIN1,MAX1,MIN2,MAX2,...`` | an ``RSISR_SCALING`` JSON
    object -> the mode, a (min, max) tuple for every band, or a per-band :class:`Scaling`
    (mode ``range``). Errors name the value."""
    text = spec.strip()
    if text.lower() in ("auto", "none"):
        return text.lower()
    if text.startswith("{"):
        return _parse_scale_json(text)
    try:
        numbers = [float(p) for p in text.split(",")]
    except ValueError:
        numbers = []
    if not numbers or len(numbers) % 2:
        raise InputError(f"invalid --scale {spec!r}; use auto, none, MIN,MAX (e.g. 0,3000), "
                         "MIN,MAX per band (e.g. 0,3000,0,2800,0,2500) or an output's RSISR_SCALING tag")
    los, his = tuple(numbers[0::2]), tuple(numbers[1::2])
    _check_ranges(spec, los, his)
    return (los[0], his[0]) if len(los) == 1 else Scaling("range", los, his)


def _check_ranges(spec: str, los, his) -> None:
    if not np.isfinite([*los, *his]).all() or any(h <= lo for lo, h in zip(los, his)):
        raise InputError(f"invalid --scale {spec!r}: each MAX must be greater than its MIN")


def _parse_scale_json(text: str) -> Scaling:
    try:
        obj = json.loads(text)
        los, his = tuple(float(v) for v in obj["lo"]), tuple(float(v) for v in obj["hi"])
    except (ValueError, KeyError, TypeError):
        raise InputError(f"invalid --scale {text!r}: a JSON scaling needs the \"lo\" and \"hi\" lists of an "
                         "output's RSISR_SCALING tag") from None
    if not los or len(los) != len(his):
        raise InputError(f"invalid --scale {text!r}: \"lo\" and \"hi\" need one value per band")
    _check_ranges(text, los, his)
    return Scaling("range", los, his)


def resolve_scaling(spec: str | tuple[float, float] | Scaling, dtype, bands: int, sample: np.ndarray | None = None,
                    valid: np.ndarray | None = None) -> Scaling:
    """Build the Scaling for ``bands`` bands of ``dtype``.

    A per-band :class:`Scaling` spec must have ``bands`` ranges (uint8 is taken as is whatever
    the spec).

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
    if isinstance(spec, Scaling):
        if len(spec.lo) != bands:
            raise InputError(f"--scale gives {len(spec.lo)} band ranges for {bands} bands; give one MIN,MAX "
                             f"for all bands or {bands} pairs")
        return Scaling("range", spec.lo, spec.hi)
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
