"""Tiled, georeferenced x4 super-resolution of rasters with bounded memory (``rsisr upscale``).

:func:`upscale_file` reads a GeoTIFF window by window, runs the model on overlapping tiles in
batches, blends them by normalised feathered overlap-add on the model's device
(:mod:`rsisr.tiling`) and writes block-aligned output strips, each block once with all bands, to
a temporary file beside the target that is checked and renamed on success (:mod:`rsisr.atomic`).

Engine and memory. The output is processed in panels of at most ``PANEL_WIDTH`` HR columns
(block-aligned) and, inside a panel, tile row by tile row. An accumulator of
``(3, block height + 4 * tile, panel width)`` float32 values holds the rows that are not written
yet; after each tile row the finished rows, in whole output blocks, are normalised, converted
back to the raster's values and written. Tiles whose blending support straddles a panel edge are
run once for each panel (identically, since the noise comes from scene coordinates). Memory thus
depends on the tile, block and panel sizes and the batch, never on the scene's size.

The model. Anything with this interface works (LCMSR has it; tests use stand-ins):

- ``model(lr, noises, steps)``: lr (B, 3, h, w) float in [-1, 1] -> (B, 3, 4h, 4w) (clamped to
  [-1, 1] here);
- optional ``model.latent_shape(h, w, batch)`` -> (B, Z, h', w'), the shape of each of the
  ``steps`` noise tensors, drawn from the scene-coordinate field of :mod:`rsisr.noise` with the
  tile's latent origin (LR origin / 2); without it ``noises`` is an empty list;
- optional ``model.config.lr_multiple`` or ``model.lr_multiple``: tile origins, tiles and
  overlaps are multiples of it (and even, see :func:`rsisr.tiling.alignment`);
- ``.to(device)`` and ``.eval()`` are called when the model has them.

Nodata and masks. Invalid input pixels (GDAL's dataset mask: nodata, an internal or external
mask, or an alpha band; non-finite floats) are filled before inference: the valid edge grows
inwards by up to ``FILL_GROW`` pixels (mean of the valid 3x3 neighbours, repeated), the rest gets
mid-grey, so nodata values never reach the model. Output pixels whose input pixel (nearest x4)
was invalid are written as nodata, masked in an internal mask, or get the alpha band's value,
as the input did. With a nodata value, a valid output pixel that would equal nodata in every
band is moved one step away from it, so that the output's mask is exactly the input's mask x4.
"""

from __future__ import annotations

import logging
import os
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from rsisr.atomic import StderrCapture, commit, remove, remove_stale, temp_path
from rsisr.config import SCALE
from rsisr.device import autocast, resolve_device
from rsisr.errors import (
    BandSelectionWarning, ConfigError, DeviceError, GeoreferencingWarning, InputError, OutputError,
)
from rsisr.noise import tile_noises
from rsisr.tiling import AxisPlan, alignment, chunks, effective_tiling, lr_span, nearest_up

log = logging.getLogger(__name__)

#: Defaults, in LR (input) pixels. 128 - 16 leaves 112-pixel steps (a multiple of 16, the
#: paper model's LR multiple): ~31 % of the model's work is overlap, the price of seamless output.
DEFAULT_TILE = 128
DEFAULT_OVERLAP = 16
DEFAULT_BATCH_SIZE = 4
#: Widest output panel (HR pixels) processed at once; bounds the accumulator's memory.
PANEL_WIDTH = 8192
#: Largest output write (HR columns) converted at once; bounds the conversion's memory.
WRITE_WIDTH = 1024
#: How far (LR pixels) the valid edge grows into nodata areas before the rest is mid-grey.
FILL_GROW = 16
#: Side of the decimated sample that ``--scale auto`` reads.
SAMPLE_SIDE = 1024
#: Output names rsisr accepts: it writes GeoTIFF (plain or COG) only.
GEOTIFF_SUFFIXES = (".tif", ".tiff")


@dataclass(frozen=True)
class UpscaleResult:
    """What :func:`upscale_file` did."""

    path: Path
    width: int
    height: int
    count: int
    tiles: int
    seconds: float
    scaling: str


def model_multiple(model) -> int:
    cfg = getattr(model, "config", None)
    return int(getattr(cfg, "lr_multiple", None) or getattr(model, "lr_multiple", None) or 1)


def fill_invalid(values: torch.Tensor, valid: torch.Tensor, grow: int = FILL_GROW, fill: float = 0.5) -> torch.Tensor:
    """Fill the invalid pixels of (C, h, w) ``values`` (``valid``: (h, w) bool).

    The valid area grows by one pixel per round (an invalid pixel with valid 3x3 neighbours takes
    their mean), ``grow`` rounds at most; what is left gets ``fill``. The result at a pixel
    depends only on pixels within ``grow`` of it, so tiles read with a halo of ``grow`` fill
    exactly like the whole scene.
    """
    if bool(valid.all()):
        return values
    m = valid.to(values.dtype)[None]
    v = values * m
    for _ in range(grow):
        # 3x3 means of the valid values (the sum of v, since invalid v is 0) and of the mask
        pooled = F.avg_pool2d(torch.cat([v, m])[None], 3, stride=1, padding=1)[0]
        new = (m == 0) & (pooled[3:] > 0)
        if not bool(new.any()):
            break
        v = torch.where(new, pooled[:3] / pooled[3:].clamp_min(1e-12), v)
        m = m + new.to(m.dtype)
    return torch.where(m > 0, v, torch.full_like(v, fill))


class ArraySource:
    """An in-memory scene: (3, H, W) values in [0, 1] and an optional (H, W) validity mask."""

    def __init__(self, values, valid=None):
        self.values = torch.as_tensor(np.asarray(values, np.float32) if not torch.is_tensor(values) else values)
        self.valid = None if valid is None else torch.as_tensor(np.asarray(valid, bool) if not torch.is_tensor(valid) else valid)
        self.shape = tuple(self.values.shape[-2:])
        self.has_mask = self.valid is not None and not bool(self.valid.all())

    def read(self, rows: tuple[int, int], cols: tuple[int, int]):
        (r0, r1), (c0, c1) = rows, cols
        valid = None if not self.has_mask else self.valid[r0:r1, c0:c1]
        return self.values[:, r0:r1, c0:c1], valid


class ArraySink:
    """Collects the output in memory: ``out`` is (3, 4 h, 4 w) float32."""

    def __init__(self, height: int, width: int, block: tuple[int, int] = (64, 64)):
        self.out = np.zeros((3, height, width), np.float32)
        self.block_shape = block
        self.written = np.zeros((height, width), np.int32)

    def write(self, row: int, col: int, data: torch.Tensor) -> None:
        h, w = data.shape[-2:]
        self.out[:, row:row + h, col:col + w] = data.cpu().numpy()
        self.written[row:row + h, col:col + w] += 1


class TiledUpscaler:
    """The tiling engine: run ``model`` over a source in tiles and stream blended output to a sink.

    ``source``: ``shape`` (H, W) in LR pixels, ``has_mask``, and ``read(rows, cols)`` returning
    (3, h, w) float values in [0, 1] and an (h, w) bool validity mask (or None).
    ``sink``: ``block_shape`` (HR rows, cols) and ``write(row, col, data)`` taking a (3, h, w)
    float32 tensor in [0, 1] (on the engine's device) at HR offsets inside the output window;
    every call covers whole blocks.
    """

    def __init__(self, model, *, tile: int = DEFAULT_TILE, overlap: int = DEFAULT_OVERLAP,
                 batch_size: int = DEFAULT_BATCH_SIZE, steps: int = 1, seed: int = 0, device="auto",
                 precision: str = "fp32", panel_width: int = PANEL_WIDTH, fill_grow: int = FILL_GROW,
                 noise_origin: tuple[int, int] = (0, 0)):
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ConfigError(f"--batch-size must be a positive integer, got {batch_size!r}")
        if isinstance(steps, bool) or not isinstance(steps, int) or not 1 <= steps <= 4:
            raise ConfigError(f"--steps must be 1, 2, 3 or 4, got {steps!r}")
        self.device = resolve_device(device)
        autocast(self.device, precision)  # validates the precision name
        self.precision = precision
        self.multiple = model_multiple(model)
        self.tile, self.overlap = effective_tiling(tile, overlap, self.multiple)
        if (self.tile, self.overlap) != (tile, overlap):
            log.info("tile %d and overlap %d aligned to the model's multiple of %d: tile %d, overlap %d",
                     tile, overlap, alignment(self.multiple), self.tile, self.overlap)
        if hasattr(model, "to"):
            model = model.to(self.device)
        if hasattr(model, "eval"):
            model.eval()
        self.model = model
        self.batch_size = batch_size
        self.steps = steps
        self.seed = int(seed)
        self.panel_width = panel_width
        self.fill_grow = fill_grow
        self.noise_origin = noise_origin
        self.on_tile: Callable[[int], None] | None = None
        self.tiles_run = 0
        self._child: TiledUpscaler | None = None  # sub-tiling after running out of memory

    # -- planning ---------------------------------------------------------------------------
    def plans(self, shape: tuple[int, int]) -> tuple[AxisPlan, AxisPlan]:
        return AxisPlan(shape[0], self.tile, self.overlap), AxisPlan(shape[1], self.tile, self.overlap)

    def count_tiles(self, shape, window, block_shape) -> int:
        """Model runs that :meth:`run` will make (tiles on panel edges count once per panel)."""
        py, px = self.plans(shape)
        r, c, h, w = window
        rows = py.intersecting(SCALE * r, SCALE * (r + h))
        return sum(len(rows) * len(px.intersecting(SCALE * c + a, SCALE * c + b))
                   for a, b in chunks(SCALE * w, block_shape[1], self.panel_width))

    # -- the model --------------------------------------------------------------------------
    def _noises(self, origins: Sequence[tuple[int, int]], h: int, w: int) -> list[torch.Tensor]:
        latent_shape = getattr(self.model, "latent_shape", None)
        if latent_shape is None:
            return []
        oy, ox = self.noise_origin
        noises = tile_noises(latent_shape, self.seed, self.steps, [(y + oy, x + ox) for y, x in origins], h, w)
        return [torch.from_numpy(n).to(self.device) for n in noises]

    def _call(self, x: torch.Tensor, origins) -> torch.Tensor:
        noises = self._noises(origins, x.shape[-2], x.shape[-1])
        with autocast(self.device, self.precision):
            y = self.model(x, noises, self.steps)
        return y.float().clamp(-1.0, 1.0)

    def forward(self, x: torch.Tensor, origins: Sequence[tuple[int, int]]) -> torch.Tensor:
        """(B, 3, h, w) in [-1, 1] with LR scene origins -> (B, 3, 4h, 4w) in [-1, 1].

        Out of memory: retry with half the batch, then (at batch 1) with the tile run as a grid
        of half-size tiles, and keep the smaller setting for the rest of the run.
        """
        if self._child is not None:
            return self._subtiled(x, origins)
        try:
            return self._call(x, origins)
        except torch.cuda.OutOfMemoryError:
            if self.device.type == "cuda":
                torch.cuda.empty_cache()
        b = x.shape[0]
        if b > 1:
            self.batch_size = max(1, b // 2)
            log.warning("out of memory with a batch of %d tiles; retrying with batches of %d", b, self.batch_size)
            return torch.cat([self.forward(x[k:k + self.batch_size], origins[k:k + self.batch_size])
                              for k in range(0, b, self.batch_size)])
        a = alignment(self.multiple)
        sub_tile = max(a, (self.tile // 2) // a * a)
        sub_overlap = min(self.overlap, max(0, (sub_tile - 1) // 2) // a * a)
        if sub_tile >= self.tile or sub_tile <= 2 * sub_overlap:
            raise DeviceError(
                f"out of memory even for one tile of {self.tile} pixels; free device memory, or use "
                "--precision bf16 or --device cpu"
            )
        log.warning("out of memory with one tile of %d pixels; retrying with tiles of %d (overlap %d)",
                    self.tile, sub_tile, sub_overlap)
        self._child = TiledUpscaler(self.model, tile=sub_tile, overlap=sub_overlap, batch_size=1, steps=self.steps,
                                    seed=self.seed, device=self.device, precision=self.precision,
                                    fill_grow=0)
        return self._subtiled(x, origins)

    def _subtiled(self, x: torch.Tensor, origins) -> torch.Tensor:
        outs = []
        for k, (y0, x0) in enumerate(origins):
            child = self._child
            child.noise_origin = (self.noise_origin[0] + y0, self.noise_origin[1] + x0)
            source = ArraySource((x[k] + 1.0) * 0.5)
            sink = ArraySink(SCALE * x.shape[-2], SCALE * x.shape[-1], block=(16, 16))
            child.run(source, sink)
            outs.append(torch.from_numpy(sink.out).to(x.device) * 2.0 - 1.0)
        return torch.stack(outs)

    # -- the streaming loop -----------------------------------------------------------------
    def run(self, source, sink, window: tuple[int, int, int, int] | None = None) -> int:
        """Upscale ``window`` = (row_off, col_off, height, width) LR pixels of ``source`` (default:
        all of it) into ``sink``. Returns the number of model runs (tiles)."""
        shape = tuple(source.shape)
        window = window or (0, 0, shape[0], shape[1])
        py, px = self.plans(shape)
        r, c, h, w = window
        oy, ox, out_h, out_w = SCALE * r, SCALE * c, SCALE * h, SCALE * w
        bh, bw = sink.block_shape
        wy_sum = torch.from_numpy(py.weight_sum(oy, oy + out_h)).float().to(self.device)
        rows = py.intersecting(oy, oy + out_h)
        done = 0
        with torch.inference_mode():
            for p0, p1 in chunks(out_w, bw, self.panel_width):
                cols = px.intersecting(ox + p0, ox + p1)
                wx_sum = torch.from_numpy(px.weight_sum(ox + p0, ox + p1)).float().to(self.device)
                wx = {j: torch.from_numpy(px.weights(j)).float().to(self.device) for j in cols}
                cap = min(bh + SCALE * self.tile, out_h)
                acc = torch.zeros(3, cap, p1 - p0, device=self.device)
                r0 = 0  # first output row (window coordinates) held in acc
                for n, i in enumerate(rows):
                    wy = torch.from_numpy(py.weights(i)).float().to(self.device)
                    for j, out in self._tile_row(source, py, px, i, cols):
                        # the tile's HR extent, in window coordinates, cut to acc and the panel
                        ty, tx = SCALE * py.start(i) - oy, SCALE * px.start(j) - ox
                        ya, yb = max(ty, r0), min(ty + out.shape[-2], r0 + cap, out_h)
                        xa, xb = max(tx, p0), min(tx + out.shape[-1], p1)
                        if ya < yb and xa < xb:
                            weight = wy[ya - ty: yb - ty, None] * wx[j][None, xa - tx: xb - tx]
                            acc[:, ya - r0: yb - r0, xa - p0: xb - p0].addcmul_(
                                out[:, ya - ty: yb - ty, xa - tx: xb - tx], weight)
                        done += 1
                        if self.on_tile is not None:
                            self.on_tile(1)
                    last = n == len(rows) - 1
                    finished = out_h if last else min(out_h, py.support(i + 1)[0] - oy)
                    flush = out_h if finished >= out_h else finished // bh * bh
                    if flush > r0:
                        self._flush(sink, acc, r0, flush, p0, wy_sum, wx_sum, bh, bw)
                        _shift_rows(acc, flush - r0)
                        r0 = flush
        self.tiles_run += done
        return done

    def _flush(self, sink, acc, r0, r1, p0, wy_sum, wx_sum, bh, bw) -> None:
        """Normalise rows [r0, r1) of the panel and hand them to the sink, whole blocks at a time."""
        for ra in range(r0, r1, bh):
            rb = min(ra + bh, r1)
            for ca, cb in chunks(acc.shape[-1], bw, WRITE_WIDTH):
                norm = wy_sum[ra:rb, None] * wx_sum[None, ca:cb]
                sink.write(ra, p0 + ca, (acc[:, ra - r0: rb - r0, ca:cb] / norm).clamp_(0.0, 1.0))

    def _tile_row(self, source, py: AxisPlan, px: AxisPlan, i: int, cols: range):
        """Read tile row ``i`` over tile columns ``cols`` (one read, with the fill halo) and yield
        (j, (3, 4h, 4w) output in [0, 1]) for every tile, run in batches of equal shapes."""
        if len(cols) == 0:
            return
        H, W = source.shape
        y, th = py.start(i), py.size(i)
        xa, xb = px.start(cols[0]), px.start(cols[-1]) + px.size(cols[-1])
        g = self.fill_grow if source.has_mask else 0
        ra, rb, ca, cb = max(0, y - g), min(H, y + th + g), max(0, xa - g), min(W, xb + g)
        values, valid = source.read((ra, rb), (ca, cb))
        x = torch.as_tensor(values).to(self.device, torch.float32)
        if valid is not None:
            x = fill_invalid(x, torch.as_tensor(valid).to(self.device), g)
        x = x * 2.0 - 1.0
        groups: dict[int, list[int]] = {}
        for j in cols:
            groups.setdefault(px.size(j), []).append(j)
        for tw, js in groups.items():
            k = 0
            while k < len(js):
                batch = js[k:k + self.batch_size]
                lr = torch.stack([x[:, y - ra: y - ra + th, px.start(j) - ca: px.start(j) - ca + tw] for j in batch])
                out = self.forward(lr, [(y, px.start(j)) for j in batch]).add_(1.0).mul_(0.5)
                for b, j in enumerate(batch):
                    yield j, out[b]
                k += len(batch)


def _shift_rows(acc: torch.Tensor, k: int) -> None:
    """Move the rows of (C, R, W) ``acc`` up by ``k`` in place (chunks of k rows never overlap)
    and zero the ``k`` rows freed at the bottom: no second accumulator-sized buffer."""
    rows = acc.shape[1]
    for s in range(0, rows - k, k):
        e = min(s + k, rows - k)
        acc[:, s:e] = acc[:, s + k: e + k]
    acc[:, max(0, rows - k):] = 0


def upscale_array(image, model, valid=None, window=None, **options) -> np.ndarray:
    """Upscale an in-memory (3, H, W) float image in [0, 1] by 4x with the tiling engine
    (same tiling, noise and blending as :func:`upscale_file`); returns (3, 4h, 4w) float32 of
    ``window`` = (row_off, col_off, height, width), default the whole image."""
    engine = TiledUpscaler(model, **options)
    source = ArraySource(image, valid)
    window = window or (0, 0, *source.shape)
    sink = ArraySink(SCALE * window[2], SCALE * window[3])
    engine.run(source, sink, window)
    return sink.out


# ---------------------------------------------------------------------------------------------
# GeoTIFF input and output
# ---------------------------------------------------------------------------------------------

class _RasterSource:
    """Reads three model bands (or one, replicated) of a rasterio dataset, scaled to [0, 1]."""

    def __init__(self, src, indexes: tuple[int, ...], scaling, mask_mode: str):
        self.src = src
        self.indexes = list(indexes)
        self.scaling = scaling
        self.shape = (src.height, src.width)
        self.float = np.dtype(src.dtypes[0]).kind == "f"
        self.gdal_mask = mask_mode in ("nodata", "mask", "alpha")
        self.has_mask = self.gdal_mask or self.float

    def _read(self, fn, what: str, **kwargs):
        from rsisr.rasterio_io import describe_window, reading

        with reading(self.src.name, f"{what} ({describe_window(kwargs['window'], kwargs.get('indexes'))})"):
            return fn(**kwargs)

    def valid(self, window, raw: np.ndarray | None = None) -> np.ndarray | None:
        """(h, w) bool: GDAL's dataset mask, and finite values for float rasters."""
        if not self.has_mask:
            return None
        valid = np.ones((int(window.height), int(window.width)), bool)
        if self.gdal_mask:
            valid &= self._read(self.src.dataset_mask, "the mask", window=window) > 0
        if self.float:
            if raw is None:
                raw = self._read(self.src.read, "pixels", indexes=self.indexes, window=window)
            valid &= np.isfinite(raw).all(axis=0)
        return valid

    def read(self, rows, cols):
        from rasterio.windows import Window

        window = Window(cols[0], rows[0], cols[1] - cols[0], rows[1] - rows[0])
        raw = self._read(self.src.read, "pixels", indexes=self.indexes, window=window)
        values = self.scaling.forward(raw)
        if values.shape[0] == 1:
            values = np.repeat(values, 3, axis=0)
        return values, self.valid(window, raw)


class _RasterSink:
    """Converts blended [0, 1] output back to the raster's values and writes it with its mask."""

    def __init__(self, dst, source: _RasterSource, window, mask_mode: str, bands: int, alpha: int | None):
        self.dst = dst
        self.source = source
        self.window = window  # LR window of the input that the output covers
        self.mask_mode = mask_mode
        self.bands = bands
        self.alpha = alpha
        self.dtype = np.dtype(dst.dtypes[0])
        self.nodata = dst.nodata
        bh, bw = dst.block_shapes[0]
        self.block_shape = (bh, bw)

    def _lr_window(self, row, col, h, w):
        from rasterio.windows import Window

        r0, r1, dy = lr_span(row, row + h)
        c0, c1, dx = lr_span(col, col + w)
        win = Window(self.window.col_off + c0, self.window.row_off + r0, c1 - c0, r1 - r0)
        return win, (dy, dx)

    def write(self, row: int, col: int, data: torch.Tensor) -> None:
        from rasterio.windows import Window

        h, w = data.shape[-2:]
        if self.bands == 1:
            data = data.mean(dim=0, keepdim=True)
        carry = self._carry(row, col, h, w)
        extra = None
        if carry is not None:
            x01, weight, extra = (t.to(data.device) for t in carry)
            data = data.double()
            data += weight * (x01 - data)
            extra = extra if data.device.type != "cpu" else extra.numpy()
        if data.device.type == "cpu":  # numpy: same float64 result, no thread pool to wait on
            values = self.source.scaling.inverse(data.numpy(), self.dtype, extra)
        else:
            values = self.source.scaling.inverse_torch(data, self.dtype, extra)
        if self.source.has_mask:
            lr_win, offset = self._lr_window(row, col, h, w)
            valid = nearest_up(self.source.valid(lr_win), offset, (h, w))
            band_valid = None
            if self.mask_mode == "nodata":
                masks = self.source._read(self.source.src.read_masks, "the band masks",
                                          indexes=self.source.indexes, window=lr_win)
                band_valid = nearest_up(masks > 0, offset, (h, w))
            self._apply_mask(values, valid, band_valid)
            if self.mask_mode == "mask":
                self.dst.write_mask(np.where(valid, 255, 0).astype(np.uint8), window=Window(col, row, w, h))
        if self.alpha is not None:  # also when nodata shadows the alpha band in GDAL's mask flags
            lr_win, offset = self._lr_window(row, col, h, w)
            alpha = self.source._read(self.source.src.read, "the alpha band", indexes=[self.alpha], window=lr_win)
            values = np.concatenate([values, nearest_up(alpha, offset, (h, w))])
        self.dst.write(values, window=Window(col, row, w, h))

    def _carry(self, row: int, col: int, h: int, w: int):
        """:meth:`rsisr.radiometry.Scaling.carry` for the output block at (row, col), or None."""
        from rasterio.windows import Window

        source = self.source
        if source.scaling.mode == "uint8":
            return None

        def read(r0, r1, c0, c1):
            win = Window(c0, r0, c1 - c0, r1 - r0)
            raw = source._read(source.src.read, "pixels", indexes=source.indexes, window=win)
            return raw, source.valid(win, raw)

        oy, ox = SCALE * int(self.window.row_off), SCALE * int(self.window.col_off)
        return source.scaling.carry(read, source.shape, (oy + row, oy + row + h), (ox + col, ox + col + w), SCALE)

    def _apply_mask(self, values: np.ndarray, valid: np.ndarray, band_valid: np.ndarray | None = None) -> None:
        """Write nodata / NaN / 0 where the input was invalid (nearest x4).

        With a nodata value, each band's own mask is kept too (``band_valid``, (C, h, w), GDAL's
        per-band masks of the input x4): a band is nodata exactly where the input band was, and a
        valid value that the model made equal to nodata moves one step away. So the output's band
        masks and dataset mask are the input's x4 (without this a dark band clipped to 0 would
        read as a hole in tools that honour per-band nodata).
        """
        invalid = ~valid
        if self.nodata is not None:
            nodata = np.array(self.nodata).astype(self.dtype)
            values[:, invalid] = nodata
            if not np.isnan(nodata):
                if self.dtype.kind == "f":
                    step = np.nextafter(nodata, np.inf).astype(self.dtype)
                else:
                    step = nodata + 1 if nodata < np.iinfo(self.dtype).max else nodata - 1
                if band_valid is None:
                    # a valid pixel equal to nodata in every band would turn invalid: one step away
                    same = valid & np.all(values == nodata, axis=0)
                    values[0][same] = step
                else:
                    values[(values == nodata) & band_valid] = step
                    values[~band_valid] = nodata
        elif self.dtype.kind == "f":
            values[:, invalid] = np.nan
        else:
            values[:, invalid] = 0


def _mask_mode(src, alpha: int | None) -> str:
    from rasterio.enums import MaskFlags

    flags = set(src.mask_flag_enums[0])
    if alpha is not None and MaskFlags.alpha in flags:
        return "alpha"
    if MaskFlags.per_dataset in flags:
        return "mask"
    if MaskFlags.nodata in flags:
        return "nodata"
    return "none"


def _parse_bands(bands) -> tuple[int, ...] | None:
    if bands is None or bands == "" or bands == ():
        return None
    if isinstance(bands, int):
        bands = (bands,)
    if isinstance(bands, str):
        try:
            bands = [int(b) for b in bands.replace(" ", "").split(",") if b]
        except ValueError:
            raise InputError(f"invalid --bands {bands!r}; give 1-based band numbers, e.g. 4,3,2") from None
    bands = tuple(int(b) for b in bands)
    if len(bands) not in (1, 3):
        raise InputError(f"--bands takes one band or three (red,green,blue), got {len(bands)}: "
                         f"{','.join(map(str, bands))}")
    return bands


def _select_bands(src, bands: tuple[int, ...] | None) -> tuple[tuple[int, ...], int | None]:
    """(model band indexes, alpha band index or None) for ``--bands`` (or the default choice)."""
    from rasterio.enums import ColorInterp

    alpha = next((i for i, ci in zip(src.indexes, src.colorinterp) if ci == ColorInterp.alpha), None)
    candidates = [i for i in src.indexes if i != alpha]
    if bands is not None:
        for b in bands:
            if not 1 <= b <= src.count:
                raise InputError(f"--bands {','.join(map(str, bands))}: band {b} does not exist; "
                                 f"{src.name} has bands 1 to {src.count}")
            if b == alpha:
                raise InputError(f"--bands: band {b} is the alpha band, which rsisr uses as the mask; "
                                 "choose colour bands")
        return bands, alpha
    if len(candidates) == 1:
        return (candidates[0],), alpha
    if len(candidates) == 2:
        warnings.warn(f"{src.name} has 2 bands; using band {candidates[0]} only (choose with --bands N)",
                      BandSelectionWarning, stacklevel=3)
        return (candidates[0],), alpha
    chosen = tuple(candidates[:3])
    if len(candidates) > 3:
        warnings.warn(
            f"{src.name} has {len(candidates)} bands; using bands {','.join(map(str, chosen))} as red, green "
            "and blue (choose others with --bands, e.g. --bands 4,3,2)", BandSelectionWarning, stacklevel=3)
    return chosen, alpha


def _open_source(src):
    """(dataset, owned): open a path, or take an open rasterio dataset as it is (both checked
    by :func:`rsisr.rasterio_io.check_raster`)."""
    from rsisr.rasterio_io import check_raster, open_raster

    if hasattr(src, "read") and hasattr(src, "profile"):
        check_raster(src)
        return src, False
    return open_raster(src), True


def _check_georeferencing(src) -> None:
    gcps, gcp_crs = src.gcps
    no_transform = src.transform.is_identity
    if no_transform and (gcps or src.rpcs):
        kind = "ground control points" if gcps else "RPCs"
        raise InputError(
            f"{src.name} is georeferenced by {kind} only, without a geotransform; warp it first, "
            f"e.g. `gdalwarp -r cubic {src.name} warped.tif` (or `rio warp`), then upscale warped.tif"
        )
    if no_transform or src.crs is None:
        what = "no geotransform" if no_transform else "no CRS"
        warnings.warn(f"{src.name} has {what}; the output keeps its pixel grid scaled by 1/4 and no "
                      f"{'georeferencing' if no_transform else 'CRS'}", GeoreferencingWarning, stacklevel=3)


def _check_output(dst, src_name: str, overwrite: bool) -> Path:
    dst = Path(dst)
    if dst.is_dir():
        raise OutputError(f"output {str(dst)!r} is a directory; give a file name such as {dst / 'out.tif'}")
    if dst.suffix.lower() not in GEOTIFF_SUFFIXES:
        raise OutputError(f"output {str(dst)!r} does not end in .tif or .tiff, but rsisr writes GeoTIFF (with --cog a "
                          f"Cloud Optimized GeoTIFF); name it e.g. {dst.with_suffix('.tif').name}, and convert it "
                          "afterwards with gdal_translate if you need another format")
    same = dst.resolve() == Path(src_name).resolve()
    if not same and dst.exists() and Path(src_name).exists():
        same = os.path.samefile(dst, src_name)
    if same:
        raise OutputError(f"output {str(dst)!r} is the input; give another output file")
    if dst.exists() and not overwrite:
        raise OutputError(f"output {str(dst)!r} exists; pass --overwrite to replace it")
    parent = dst.resolve().parent
    if not parent.is_dir():
        raise OutputError(f"output directory {str(parent)!r} does not exist; create it first")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputError(f"output directory {str(parent)!r} is not writable")
    return dst


def _check_dataset_output(out, profile: dict, cog: bool) -> None:
    """An open output dataset must be writable and have the output's size, bands and dtype."""
    if cog:
        raise OutputError("--cog needs an output path, not an open dataset")
    if out.mode not in ("w", "w+", "r+"):
        raise OutputError(f"the output dataset {out.name} is open in mode {out.mode!r}; open it with 'w' or 'r+'")
    want = (profile["width"], profile["height"], profile["count"], np.dtype(profile["dtype"]).name)
    got = (out.width, out.height, out.count, out.dtypes[0])
    if got != want:
        raise OutputError(f"the output dataset {out.name} is {got[0]} x {got[1]} with {got[2]} {got[3]} bands; "
                          f"this output needs {want[0]} x {want[1]} with {want[2]} {want[3]} bands")


class _CheckedWriter:
    """The output dataset as :class:`_RasterSink` sees it: each write runs with what C code
    prints to stderr held back in ``capture``, and a GDAL failure becomes an OutputError."""

    def __init__(self, dataset, capture: StderrCapture, path) -> None:
        self._dataset = dataset
        self._capture = capture
        self._path = path

    def __getattr__(self, name):
        return getattr(self._dataset, name)

    def write(self, *args, **kwargs):
        return self._guard(self._dataset.write, *args, **kwargs)

    def write_mask(self, *args, **kwargs):
        return self._guard(self._dataset.write_mask, *args, **kwargs)

    def _guard(self, fn, *args, **kwargs):
        from rasterio._err import CPLE_BaseError
        from rasterio.errors import RasterioError

        try:
            with self._capture():
                return fn(*args, **kwargs)
        except (RasterioError, CPLE_BaseError) as exc:
            raise _write_failure(self._path, self._capture, exc) from None


def _write_failure(dst, capture: StderrCapture, exc: BaseException | None = None, what: str = "output",
                   temps: Sequence[Path] = ()) -> OutputError:
    """One line for a failed GDAL write of ``dst``: the OS's reason where libtiff printed one
    ("No space left on device"), else GDAL's message (naming ``dst`` rather than ``temps``)."""
    import shutil

    reason = capture.last_error()
    if not reason and exc is not None:
        cause = exc.__cause__ if "previous exception" in str(exc) and exc.__cause__ is not None else exc
        reason = " ".join(str(cause).split())
        for tmp in temps:
            reason = reason.replace(str(tmp), str(dst)).replace(tmp.name, Path(dst).name)
    reason = reason or "GDAL could not finish the file"
    try:
        full = shutil.disk_usage(Path(os.path.abspath(dst)).parent).free < 16 * 2**20
    except OSError:
        full = False
    if full or "no space" in reason.lower() or "quota" in reason.lower():
        hint = "free some space or write to another disk"
    else:
        hint = "check the output folder and the disk"
    return OutputError(f"writing {what} {dst} failed: {reason}; {hint} (nothing was written)")


def _end_capture(capture: StderrCapture, succeeded: bool) -> None:
    """Show what C code printed during a write that succeeded; drop it after a failure, which
    is reported in one line instead."""
    if succeeded:
        capture.release()
    else:
        capture.discard()


def _verify_written(path: Path, dst, shape: tuple[int, int, int], capture: StderrCapture, what: str = "output") -> None:
    """After GDAL closed ``path``: no failed write was reported, and the file opens with the
    expected (width, height, count) and its last block reads. rasterio does not raise when
    GDAL fails to flush at close; a full disk leaves a file whose directory cannot be read."""
    import rasterio
    from rasterio._err import CPLE_BaseError
    from rasterio.errors import RasterioError
    from rasterio.windows import Window

    if capture.write_failed():
        raise _write_failure(dst, capture, what=what)
    try:
        with capture(), rasterio.open(path) as check:
            got = (check.width, check.height, check.count)
            if got == shape:
                check.read(1, window=Window(shape[0] - 1, shape[1] - 1, 1, 1))
    except (RasterioError, CPLE_BaseError) as exc:
        raise _write_failure(dst, capture, exc, what, [path]) from None
    if got != shape:
        raise _write_failure(dst, capture, RuntimeError(f"the file has {got}, not {shape} pixels and bands"), what)


def _load(model):
    """(model, sha256 or None, name): a path, None (the default model) or a model object."""
    from rsisr.api import load_model
    from rsisr.checkpoint import file_sha256

    if model is None or isinstance(model, (str, os.PathLike)):
        loaded = load_model(model)
        path = Path(model) if model is not None else None
        if path is None:
            from rsisr.api import default_model_path

            path = default_model_path()
        return loaded, file_sha256(path), path.name
    if not callable(model):
        raise ConfigError(f"model must be a path, None or a callable model, got {type(model).__name__}")
    source = getattr(model, "source_path", None)  # set by rsisr.load_model
    if source is not None and Path(source).is_file():
        return model, file_sha256(source), Path(source).name
    return model, None, type(model).__name__


def _sample(src, indexes, window, has_mask: bool):
    """A decimated read of ``window`` (at most SAMPLE_SIDE pixels a side; overviews when present):
    the statistics sample of ``--scale auto``, always taken over the whole scene."""
    from rasterio.enums import Resampling

    from rsisr.rasterio_io import describe_window, reading

    factor = max(1.0, max(window.height, window.width) / SAMPLE_SIDE)
    shape = (max(1, int(window.height / factor)), max(1, int(window.width / factor)))
    with reading(src.name, f"the --scale auto statistics sample ({describe_window(window, indexes)})"):
        data = src.read(list(indexes), window=window, out_shape=(len(indexes), *shape), resampling=Resampling.nearest)
        valid = src.dataset_mask(window=window, out_shape=shape) > 0 if has_mask else None
    return data, valid


def _progress(progress, total: int):
    """(per-tile callback or None, closer) for ``progress``: False, True (a tqdm bar, silent
    when stderr is not a terminal) or a callable(done, total)."""
    if callable(progress):
        state = {"done": 0}

        def tick(n: int) -> None:
            state["done"] += n
            progress(state["done"], total)

        return tick, lambda: None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=total, unit="tile", desc="upscale", disable=None, leave=False)
        return bar.update, bar.close
    return None, lambda: None


def upscale_file(src, dst, model=None, *, tile: int = DEFAULT_TILE, overlap: int = DEFAULT_OVERLAP,
                 batch_size: int = DEFAULT_BATCH_SIZE, steps: int = 1, seed: int = 0, device="auto",
                 precision: str = "fp32", bands=None, bounds=None, bounds_crs=None, aoi=None, scale="auto",
                 co=None, cog: bool = False, overwrite: bool = False, progress=False) -> UpscaleResult:
    """Super-resolve the raster ``src`` by 4x into the GeoTIFF ``dst``.

    ``src``: a path or an open rasterio dataset; ``dst``: a ``.tif``/``.tiff`` path (written
    atomically with :mod:`rsisr.atomic`: a temporary file beside it, checked and renamed on
    success; any write error, a full disk included, is an :class:`OutputError`, and nothing is
    left behind on any error or interrupt; temporaries of killed rsisr processes in that folder
    are removed first), or an
    open writable rasterio dataset of the output's size, band count and dtype (written in place:
    its georeferencing and creation options are the caller's; ``cog`` needs a path).
    ``model``: a model file, None for the bundled default, or a model object (see the module
    docstring). The other keywords are ``rsisr upscale``'s options: ``tile``/``overlap`` (LR
    pixels), ``batch_size``, ``steps``, ``seed``, ``device``, ``precision``, ``bands`` ("4,3,2"
    or a sequence, 1-based), ``bounds`` (xmin, ymin, xmax, ymax) in ``bounds_crs`` (default the
    raster's CRS), ``aoi`` (a vector file), ``scale`` (auto | none | "MIN,MAX"), ``co``
    (["KEY=VALUE", ...] or a mapping of GDAL creation options), ``cog``, ``overwrite`` and
    ``progress`` (bool or callable(done, total)).
    """
    import rasterio
    import rasterio.shutil
    from affine import Affine
    from rasterio._err import CPLE_BaseError
    from rasterio.errors import NotGeoreferencedWarning, RasterioError
    from rasterio.windows import Window

    from rsisr import __version__
    from rsisr.gdal_env import check_creation_options, cog_defaults, gdal_env, gtiff_defaults, parse_creation_options
    from rsisr.geo import aoi_window, bounds_window, compose
    from rsisr.radiometry import parse_scale, resolve_scaling
    from rsisr.rasterio_io import band_texts, check_output_space, dataset_tags, reading

    t0 = time.perf_counter()
    scale_spec = parse_scale(scale or "auto") if isinstance(scale, str) or scale is None else scale
    if isinstance(scale_spec, (list, tuple)):
        scale_spec = parse_scale(",".join(map(str, scale_spec)))
    user_co = parse_creation_options(co)
    bands = _parse_bands(bands)
    if bounds is not None and aoi is not None:
        raise InputError("give --bounds or --aoi, not both")
    if bounds is None and bounds_crs is not None:
        raise InputError("--bounds-crs needs --bounds")

    with gdal_env():
        src, owned = _open_source(src)
        try:
            dst_dataset = dst if hasattr(dst, "write") and hasattr(dst, "mode") else None
            if dst_dataset is None:
                dst = _check_output(dst, src.name, overwrite)
            with reading(src.name, "the georeferencing and bands"):
                _check_georeferencing(src)
                indexes, alpha = _select_bands(src, bands)
            if bounds is not None:
                window = bounds_window(bounds, bounds_crs, src.crs, src.transform, src.width, src.height)
            elif aoi is not None:
                window = aoi_window(aoi, src.crs, src.transform, src.width, src.height)
            else:
                window = Window(0, 0, src.width, src.height)
            window = Window(int(window.col_off), int(window.row_off), int(window.width), int(window.height))
            net, sha, model_name = _load(model)
            engine = TiledUpscaler(net, tile=tile, overlap=overlap, batch_size=batch_size, steps=steps, seed=seed,
                                   device=device, precision=precision)

            dtype = np.dtype(src.dtypes[0])
            count = len(indexes) + (1 if alpha is not None else 0)
            gtiff = {**gtiff_defaults(dtype), **({} if cog else user_co)}
            cog_options = {**cog_defaults(), **user_co}
            check_creation_options(user_co, cog_options if cog else gtiff, "COG" if cog else "GTiff", dtype, count)

            with reading(src.name, "the mask flags"):
                mask_mode = _mask_mode(src, alpha)
            has_mask = mask_mode != "none"
            if dst_dataset is None:
                check_output_space(dst, SCALE * window.width, SCALE * window.height, count, dtype, mask_mode == "mask")
            if scale_spec == "auto" and dtype != np.uint8:
                # the whole scene's statistics, whatever the window: a window equals that window of a whole run
                sample, valid = _sample(src, indexes, Window(0, 0, src.width, src.height), has_mask)
                scaling = resolve_scaling(scale_spec, dtype, len(indexes), sample, valid)
            else:
                scaling = resolve_scaling(scale_spec, dtype, len(indexes))
            log.info("scaling %s", scaling.to_tag())

            transform = compose(src.window_transform(window), Affine.scale(1 / SCALE))
            profile = dict(driver="GTiff", width=SCALE * window.width, height=SCALE * window.height, count=count,
                           dtype=dtype, crs=src.crs, transform=transform, nodata=src.nodata, **gtiff)
            tags = {
                **{k: v for k, v in dataset_tags(src).items() if not k.startswith("TIFFTAG_") and k != "OVR_RESAMPLING_ALG"},
                "RSISR_VERSION": __version__, "RSISR_MODEL": model_name, "RSISR_MODEL_SHA256": sha or "unknown",
                "RSISR_STEPS": str(steps), "RSISR_SEED": str(seed), "RSISR_TILE": str(engine.tile),
                "RSISR_OVERLAP": str(engine.overlap), "RSISR_SCALING": scaling.to_tag(),
                "RSISR_BANDS": ",".join(map(str, indexes)),
            }
            out_bands = list(indexes) + ([alpha] if alpha is not None else [])
            with reading(src.name, "the band metadata"):
                colorinterp = [src.colorinterp[b - 1] for b in out_bands]
                scales, offsets = list(src.scales), list(src.offsets)
            descriptions, units = band_texts(src, out_bands)
            source = _RasterSource(src, indexes, scaling, mask_mode)
            lr_window = (window.row_off, window.col_off, window.height, window.width)

            def fill(out, writer) -> None:
                """Band metadata and tags, then the engine, into the open output ``out`` (its
                pixels through ``writer``, which checks every write)."""
                out.colorinterp = colorinterp
                for k, (description, unit) in enumerate(zip(descriptions, units), start=1):
                    if description:
                        out.set_band_description(k, description)
                    if unit:
                        out.set_band_unit(k, unit)
                if any(s != 1.0 for s in scales) or any(o != 0.0 for o in offsets):
                    out.scales = [scales[b - 1] for b in out_bands]
                    out.offsets = [offsets[b - 1] for b in out_bands]
                out.update_tags(**tags)
                sink = _RasterSink(out, source, window, mask_mode, len(indexes), alpha)
                sink.dst = writer
                tick, close = _progress(progress, engine.count_tiles(source.shape, lr_window, sink.block_shape))
                engine.on_tile = tick
                try:
                    engine.run(source, sink, lr_window)
                finally:
                    close()

            capture = StderrCapture()  # what libtiff prints to stderr while rsisr writes
            committed = False
            if dst_dataset is not None:
                _check_dataset_output(dst_dataset, profile, cog)
                try:
                    fill(dst_dataset, _CheckedWriter(dst_dataset, capture, dst_dataset.name))
                    committed = True
                finally:
                    _end_capture(capture, committed)
            else:
                shape = (profile["width"], profile["height"], count)
                temps: list[Path] = []
                try:
                    remove_stale(dst.parent)  # left by rsisr processes that were killed while writing here
                    tmp = temp_path(dst)
                    temps.append(tmp)
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore", NotGeoreferencedWarning)
                        try:
                            with capture():
                                out = rasterio.open(tmp, "w", **profile)
                        except (RasterioError, CPLE_BaseError) as exc:
                            raise OutputError(f"cannot write {tmp.parent}: {exc}") from None
                    try:
                        fill(out, _CheckedWriter(out, capture, dst))
                    finally:
                        with capture():
                            out.close()  # GDAL flushes its cache here; rasterio raises nothing if that fails
                    _verify_written(tmp, dst, shape, capture)
                    final = tmp
                    if cog:
                        final = temp_path(dst)
                        temps.append(final)
                        try:
                            with capture():
                                rasterio.shutil.copy(tmp, final, driver="COG", **cog_options)
                        except (RasterioError, CPLE_BaseError) as exc:
                            raise _write_failure(dst, capture, exc, "the Cloud Optimized GeoTIFF", temps) from None
                        remove(tmp)
                        _verify_written(final, dst, shape, capture, "the Cloud Optimized GeoTIFF")
                    if dst.exists() and not overwrite:
                        raise OutputError(f"output {str(dst)!r} appeared while rsisr was writing; pass --overwrite")
                    commit(final, dst, "output")
                    committed = True
                finally:
                    for t in temps:
                        remove(t)
                    _end_capture(capture, committed)
        finally:
            if owned:
                src.close()

    seconds = time.perf_counter() - t0
    path = Path(dst.name) if dst_dataset is not None else dst
    log.info("wrote %s (%d x %d, %d bands) from %d tiles in %.1f s", path, profile["width"], profile["height"],
             count, engine.tiles_run, seconds)
    return UpscaleResult(path, profile["width"], profile["height"], count, engine.tiles_run, seconds,
                         scaling.to_tag())


__all__ = ["upscale_file", "upscale_array", "TiledUpscaler", "UpscaleResult", "fill_invalid"]
