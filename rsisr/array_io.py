"""In-memory images through the tiling engine: :func:`upscale_image` (``model.upscale``).

The same engine, scene-coordinate noise, blending and value scaling as ``rsisr upscale``, so an
array and a GeoTIFF of the same pixels give the same output, and memory beyond the input and
the result does not grow with the image (the result is written block by block in its final
dtype and layout).

Values, as the CLI's ``--scale``: uint8 is taken as is; other integer dtypes use ``auto`` (the
0.1/99.9 percentiles of a decimated sample of the whole image) unless ``scale`` says otherwise;
floats must lie in [0, 1] unless ``scale`` is given. Values outside the stretch keep their
magnitude (:meth:`rsisr.radiometry.Scaling.carry`). A ``numpy.ma.MaskedArray`` is honoured like a
raster's masks: a pixel masked in every band is invalid (filled before inference, masked in the
result), and each band's mask comes back nearest x4.
"""

from __future__ import annotations

import secrets

import numpy as np
import torch

from rsisr.config import SCALE
from rsisr.errors import InputError
from rsisr.radiometry import Scaling, parse_scale, resolve_scaling
from rsisr.upscale.bands import BandChoice

#: Longest side of the decimated sample that ``scale="auto"`` reads.
SAMPLE_SIDE = 1024


def _layout(shape: tuple[int, ...], is_numpy: bool) -> str:
    """hw | hwc | chw | bchw for an image of ``shape``. Images of 1 or 3 channels are read as
    always; otherwise a numpy image's channel axis is the shorter of its first and last (a torch
    image is (C, H, W) or (B, C, H, W))."""
    if len(shape) == 2:
        return "hw"
    if len(shape) == 3 and is_numpy and shape[-1] in (1, 3) and shape[0] not in (1, 3):
        return "hwc"
    if len(shape) == 3 and shape[0] in (1, 3):
        return "chw"
    if len(shape) == 3 and shape[-1] in (1, 3):
        return "hwc"
    if len(shape) == 3 and not is_numpy or len(shape) == 3 and shape[0] < shape[-1]:
        return "chw"
    if len(shape) == 3 and shape[-1] < shape[0]:
        return "hwc"
    if len(shape) == 4 and not is_numpy:
        return "bchw"
    raise InputError(f"image of shape {tuple(shape)} is not HxW, HxWxC, CxHxW or (torch) BxCxHxW with C smaller "
                     "than the image's sides")


def _channels_first(a: np.ndarray, layout: str) -> np.ndarray:
    """A (C, H, W) view of one image in ``layout`` (no copy)."""
    if layout == "hw":
        return a[None]
    if layout == "hwc":
        return a.transpose(2, 0, 1)
    return a


def _random_seed(generator: torch.Generator | None) -> int:
    if generator is not None:
        return int(torch.randint(0, 2**31 - 1, (1,), generator=generator))
    return secrets.randbelow(2**31 - 1)


def _scaling(raw: np.ndarray, valid: np.ndarray | None, scale, stored: Scaling | None = None) -> Scaling:
    """The CLI's scaling rules for (C, H, W) ``raw`` (the model's bands); floats outside [0, 1]
    need ``scale``; a model's ``stored`` scaling replaces the default and ``auto``."""
    dtype = raw.dtype
    if dtype.kind not in "uif" or dtype.itemsize > 8:
        raise InputError(f"image dtype {dtype} is not supported; use uint8, another integer dtype or float")
    spec = parse_scale(scale) if isinstance(scale, str) else scale
    if stored is not None and spec in (None, "auto"):
        return stored if raw.shape[0] == len(stored.lo) else Scaling("model", stored.lo[:1], stored.hi[:1])
    if spec is None and dtype.kind == "f":
        finite = raw[:, valid] if valid is not None else raw
        finite = finite[np.isfinite(finite)]
        if finite.size and (finite.min() < 0.0 or finite.max() > 1.0):
            raise InputError(
                f"float image values must lie in [0, 1], found {finite.min():g} to {finite.max():g}; "
                "rescale the image, or pass scale='auto', 'none' or 'MIN,MAX' (e.g. scale='0,255')"
            )
        spec = "none"
    spec = "auto" if spec is None else spec
    if spec == "auto" and dtype != np.uint8:
        step = max(1, -(-max(raw.shape[1:]) // SAMPLE_SIDE))
        sample = raw[:, ::step, ::step]
        return resolve_scaling(spec, dtype, raw.shape[0], sample, None if valid is None else valid[::step, ::step])
    return resolve_scaling(spec, dtype, raw.shape[0])


class _ImageSource:
    """The engine's source over one (C, H, W) raw image: the model's bands (``choice``) scaled on
    read, tile row by tile row; the other bands raw for their bicubic x4."""

    def __init__(self, raw: np.ndarray, valid: np.ndarray | None, scaling: Scaling, choice: BandChoice,
                 model_bands: int):
        self.raw = raw
        self.scaling = scaling
        self.choice = choice
        self.model_idx = [b - 1 for b in choice.model]
        self.replicate = model_bands if len(self.model_idx) == 1 else 1
        self.float = raw.dtype.kind == "f"
        self.valid_mask = valid
        self.shape = raw.shape[1:]
        self.has_mask = valid is not None or self.float

    def valid(self, r0: int, r1: int, c0: int, c1: int, raw: np.ndarray | None = None) -> np.ndarray | None:
        valid = None if self.valid_mask is None else self.valid_mask[r0:r1, c0:c1]
        if self.float:
            finite = np.isfinite(self.raw[self.model_idx, r0:r1, c0:c1] if raw is None else raw).all(axis=0)
            valid = finite if valid is None else valid & finite
        return valid

    def read(self, rows: tuple[int, int], cols: tuple[int, int]):
        (r0, r1), (c0, c1) = rows, cols
        raw = self.raw[self.model_idx, r0:r1, c0:c1]
        values = self.scaling.forward(raw)
        if self.replicate > 1:
            values = np.repeat(values, self.replicate, axis=0)
        return values, self.valid(r0, r1, c0, c1, raw)

    def read_raw(self, r0: int, r1: int, c0: int, c1: int):
        raw = self.raw[self.model_idx, r0:r1, c0:c1]
        return raw, self.valid(r0, r1, c0, c1, raw)

    def read_others(self, r0: int, r1: int, c0: int, c1: int):
        valid = None if self.valid_mask is None else self.valid_mask[r0:r1, c0:c1]
        return self.raw[[b - 1 for b in self.choice.others], r0:r1, c0:c1], valid


class _ImageSink:
    """Writes blended blocks straight into ``out`` ((C, 4H, 4W) view of the result) in its dtype,
    and an ensemble's standard deviation into ``spread`` (a float32 view like ``out``, or None)."""

    block_shape = (64, 256)

    def __init__(self, source: _ImageSource, out: np.ndarray, spread: np.ndarray | None = None):
        self.source = source
        self.out = out
        self.spread = spread
        self.bands = len(source.model_idx)  # 1: one band replicated for the model, averaged back

    def write(self, row: int, col: int, data: torch.Tensor, std: torch.Tensor | None = None) -> None:
        from rsisr.radiometry import to_dtype
        from rsisr.upscale.bands import other_bands_up
        from rsisr.upscale.engine import FILL_GROW

        h, w = data.shape[-2:]
        source = self.source
        if len(source.model_idx) == 1:
            data = data.mean(dim=0, keepdim=True)
        data = data.cpu()
        extra = weight = None
        rows, cols = (row, row + h), (col, col + w)
        carry = source.scaling.carry(source.read_raw, source.shape, rows, cols, SCALE)
        if carry is not None:
            x01, weight, extra = carry
            data = data.double()
            data += weight * (x01 - data)
            extra = extra.numpy()
        values = source.scaling.inverse(data.numpy(), self.out.dtype, extra)
        if source.choice.others:
            grow = FILL_GROW if source.has_mask else 0
            up = other_bands_up(source.read_others, source.shape, rows, cols, grow, SCALE)
            values = source.choice.assemble(values, to_dtype(up.numpy(), self.out.dtype))
        self.out[:, row:row + h, col:col + w] = values
        if std is not None and self.spread is not None:
            self.spread[:, row:row + h, col:col + w] = self._spread(std, weight)

    def _spread(self, std: torch.Tensor, weight) -> np.ndarray:
        """The ensemble's std in the image's units, one band per written band (0 for the bands
        written bicubic: they do not depend on the model)."""
        from rsisr.upscale.uncertainty import spread_units

        if self.bands == 1:
            std = std.mean(dim=0, keepdim=True)  # the ensemble's channels agree
        values = spread_units(std.cpu(), self.source.scaling, weight)
        others = np.zeros((len(self.source.choice.others), *values.shape[1:]), np.float32)
        return self.source.choice.assemble(values, others)


def _upscale_one(engine, raw: np.ndarray, mask: np.ndarray | None, scale, out: np.ndarray, choice: BandChoice,
                 stored: Scaling | None, spread: np.ndarray | None = None) -> None:
    """Upscale (C, H, W) ``raw`` (``mask``: (C, H, W) bool, True = masked) into (C', 4H, 4W)
    ``out``, C' = the bands of ``choice`` that are written (and an ensemble's std into ``spread``)."""
    model_idx = [b - 1 for b in choice.model]
    valid = None if mask is None else ~mask[model_idx].all(axis=0)
    source = _ImageSource(raw, valid, _scaling(raw[model_idx], valid, scale, stored), choice, engine.bands)
    engine.run(source, _ImageSink(source, out, spread))


def upscale_image(model, image, *, steps: int = 1, seed: int | None = None, generator: torch.Generator | None = None,
                  scale=None, tile: int | None = None, overlap: int | None = None, batch_size: int | None = None,
                  device=None, precision: str = "auto", bands=None, other_bands: str | None = None,
                  ensemble: int = 1, uncertainty: bool = False):
    """Super-resolve an in-memory image by 4x with ``model``; same layout and dtype back.

    ``image``: numpy (H, W), (H, W, C) or (C, H, W) (a masked array keeps its masks; the channel
    axis of C other than 1 or 3 is the shorter of the first and last), or a torch tensor
    (C, H, W) / (B, C, H, W). ``bands`` and ``other_bands``: as ``rsisr upscale --bands`` and
    ``--other-bands`` (1-based; an N-band model reads the first N by default, and only those
    come back unless ``other_bands="bicubic"``). ``scale``: as ``rsisr upscale --scale``
    (``auto``, ``none``, ``"MIN,MAX"``, per-band ranges); default: a model's stored scaling, else
    uint8 as is, other integers ``auto``, floats [0, 1] (values outside are refused). ``seed``:
    the scene-coordinate noise seed, as ``rsisr upscale --seed`` (None: drawn from ``generator``
    or at random). ``tile``, ``overlap``, ``batch_size``, ``precision``: the engine's (CLI
    defaults: ``auto`` is bf16 where the device runs it natively, else fp32); ``device``:
    default the model's. ``ensemble``: the mean of that many samples, as ``rsisr upscale
    --ensemble``; with ``uncertainty`` (needs an ensemble of 2 or more) the result is
    ``(image, std)``: the samples' per-pixel standard deviation in the image's units, float32,
    one band per band returned, in the same layout (with the same mask).
    """
    from rsisr.upscale import DEFAULT_BATCH_SIZE, DEFAULT_OVERLAP, DEFAULT_TILE, make_engine
    from rsisr.upscale.bands import choose_bands, parse_bands, parse_other_bands
    from rsisr.upscale.plan import stored_scaling

    is_numpy = isinstance(image, np.ndarray)
    if not is_numpy and not isinstance(image, torch.Tensor):
        raise InputError(f"image must be a numpy array or a torch tensor, got {type(image).__name__}")
    layout = _layout(tuple(image.shape), is_numpy)
    if isinstance(steps, bool) or not isinstance(steps, int) or not 1 <= steps <= 4:
        raise InputError(f"steps must be 1, 2, 3 or 4, got {steps!r}")
    band_spec, other = parse_bands(bands, None), parse_other_bands(other_bands)
    if device is None:
        device = getattr(model, "device", "cpu")
    engine = make_engine(
        model, ensemble=ensemble, tile=tile or DEFAULT_TILE, overlap=DEFAULT_OVERLAP if overlap is None else overlap,
        batch_size=batch_size or DEFAULT_BATCH_SIZE, steps=steps,
        seed=_random_seed(generator) if seed is None else seed, device=device, precision=precision,
    )
    if uncertainty and ensemble == 1:
        raise InputError("uncertainty=True needs an ensemble to measure a spread: pass ensemble=N with N of 2 or more")

    def run(chw: np.ndarray, mask: np.ndarray | None, out_of) -> BandChoice:
        choice = choose_bands(chw.shape[0], engine.bands, band_spec, other, "the image")
        out, spread = out_of(len(choice.out))
        _upscale_one(engine, chw, mask, scale, out, choice, stored_scaling(model), spread)
        return choice

    if not is_numpy:
        return _upscale_tensor(image, layout, run, uncertainty)
    return _upscale_array(image, layout, run, uncertainty)


def _upscale_tensor(image: torch.Tensor, layout: str, run, uncertainty: bool = False):
    """``upscale_image`` of a torch tensor, one image at a time (``run(chw, mask, out_of)``;
    ``out_of(c)`` -> (result, std or None) views)."""
    images = image.detach().cpu()
    images = images if layout == "bchw" else images[None]
    outs, spreads = [], []
    for one in images.numpy():
        h, w = one.shape[-2:] if layout in ("chw", "bchw") else one.shape[:2]

        def out_of(c: int):
            outs.append(np.empty((c, SCALE * h, SCALE * w), one.dtype))
            spreads.append(np.empty(outs[-1].shape, np.float32) if uncertainty else None)
            return outs[-1], spreads[-1]

        run(_channels_first(one, "chw" if layout == "bchw" else layout), None, out_of)

    def restore(arrays):
        return torch.from_numpy(np.stack(arrays) if layout == "bchw" else _restore(arrays[0], layout))

    result = restore(outs).to(image.dtype)
    return (result, restore(spreads)) if uncertainty else result


def _upscale_array(image: np.ndarray, layout: str, run, uncertainty: bool = False):
    """``upscale_image`` of a numpy array (or masked array), written in its own layout (and the
    ensemble's std beside it with ``uncertainty``)."""
    data = np.ma.getdata(image)
    mask = np.ma.getmask(image) if isinstance(image, np.ma.MaskedArray) else np.ma.nomask
    mask = None if mask is np.ma.nomask or not mask.any() else mask
    rows = 1 if layout == "chw" else 0
    holder = {}

    def out_of(c: int) -> np.ndarray:
        shape = list(data.shape)
        shape[rows] *= SCALE
        shape[rows + 1] *= SCALE
        if layout != "hw":
            shape[0 if layout == "chw" else 2] = c
        holder["out"] = np.empty(shape, data.dtype)
        holder["spread"] = np.empty(shape, np.float32) if uncertainty else None
        spread = None if holder["spread"] is None else _channels_first(holder["spread"], layout)
        return _channels_first(holder["out"], layout), spread

    mask_chw = None if mask is None else _channels_first(mask, layout)
    choice = run(_channels_first(data, layout), mask_chw, out_of)
    out, spread = holder["out"], holder["spread"]
    if isinstance(image, np.ma.MaskedArray):
        out_mask = np.ma.nomask
        if mask is not None:  # each written band's mask, nearest x4
            kept = mask_chw[[b - 1 for b in choice.out]]
            out_mask = _restore(kept.repeat(SCALE, axis=1).repeat(SCALE, axis=2), layout)
        out = np.ma.MaskedArray(out, mask=out_mask, fill_value=image.fill_value)
        spread = None if spread is None else np.ma.MaskedArray(spread, mask=out_mask)
    return (out, spread) if uncertainty else out


def _restore(chw: np.ndarray, layout: str) -> np.ndarray:
    """A (C, H, W) result in ``layout`` (torch single images)."""
    if layout == "hw":
        return chw[0]
    if layout == "hwc":
        return chw.transpose(1, 2, 0)
    return chw
