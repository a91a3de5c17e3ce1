"""The tiling engine (torch only): a model over a source in overlapping tiles, blended into a sink.

The output is processed in panels of at most ``PANEL_WIDTH`` HR columns (block-aligned) and,
inside a panel, tile row by tile row. An accumulator of ``(C, block height + 4 * tile, panel
width)`` float32 values (C: the model's bands, :func:`model_bands`) holds the rows that are not
written yet; after each tile row the finished rows, in whole output blocks, are normalised and
handed to the sink. Tiles whose blending support
straddles a panel edge are run once for each panel (identically, since the noise comes from
scene coordinates). Memory thus depends on the tile, block and panel sizes and the batch, never
on the scene's size. Overlaps are blended by normalised feathered overlap-add
(:mod:`rsisr.tiling`); the noise of each tile is cut from the scene's field
(:func:`rsisr.noise.tile_noises`). An ensemble (:class:`rsisr.upscale.ensemble.EnsembleUpscaler`)
runs every tile several times and blends moments instead, through this engine's hooks.

Invalid input pixels (a source's validity mask) are filled before inference
(:func:`fill_invalid`), so nodata values never reach the model.
"""

from __future__ import annotations

import logging
from typing import Callable, Protocol, Sequence

import torch
import torch.nn.functional as F

from rsisr.config import SCALE
from rsisr.defaults import DEFAULT_BATCH_SIZE, DEFAULT_OVERLAP, DEFAULT_TILE, default_batch_size
from rsisr.device import autocast, resolve_device, resolve_precision
from rsisr.errors import ConfigError, DeviceError
from rsisr.noise import tile_noises
from rsisr.tiling import AxisPlan, alignment, chunks, effective_tiling

log = logging.getLogger(__name__)

#: Widest output panel (HR pixels) processed at once; bounds the accumulator's memory.
PANEL_WIDTH = 8192
#: Largest output write (HR columns) converted at once; bounds the conversion's memory.
WRITE_WIDTH = 1024
#: How far (LR pixels) the valid edge grows into nodata areas before the rest is mid-grey.
FILL_GROW = 16


class SRModel(Protocol):
    """The model contract of the engine (LCMSR has it; :mod:`rsisr.standins` has stand-ins).

    - ``model(lr, noises, steps)``: lr (B, C, h, w) float in [-1, 1] -> (B, C, 4h, 4w) (the
      engine clamps it to [-1, 1]); C is ``config.bands`` or ``bands`` (default 3);
    - optional ``latent_shape(h, w, batch)`` -> (B, Z, h', w'), the shape of each of the
      ``steps`` noise tensors (without it ``noises`` is an empty list);
    - optional ``config.lr_multiple`` or ``lr_multiple``: tile origins, tiles and overlaps are
      multiples of it (and even, see :func:`rsisr.tiling.alignment`);
    - ``.to(device)`` and ``.eval()`` are called when the model has them.
    """

    def __call__(self, lr: torch.Tensor, noises: Sequence[torch.Tensor], steps: int) -> torch.Tensor: ...


class Source(Protocol):
    """What the engine reads: ``shape`` (H, W) in LR pixels, ``has_mask``, and ``read(rows,
    cols)`` -> (C, h, w) float values in [0, 1] and an (h, w) bool validity mask (or None)."""

    shape: tuple[int, int]
    has_mask: bool

    def read(self, rows: tuple[int, int], cols: tuple[int, int]): ...


class Sink(Protocol):
    """What the engine writes to: ``block_shape`` (HR rows, cols) and ``write(row, col, data)``
    taking a (C, h, w) float32 tensor in [0, 1] (on the engine's device) at HR offsets inside the
    output window; every call covers whole blocks. An ensemble also passes ``std``, the samples'
    (C, h, w) standard deviation in the same units: ``write(row, col, mean, std)``."""

    block_shape: tuple[int, int]

    def write(self, row: int, col: int, data: torch.Tensor) -> None: ...


def prepare_model(model, device: torch.device, precision: str):
    """``model`` on ``device`` in eval mode, with channels_last weights for bf16 on a CPU
    (oneDNN's bf16 convolutions run 2x faster; the layout of the weights decides,
    benchmarks/speed.py; the values do not change). A model already so is left untouched:
    engines built in other threads (a dask array's chunks) share it while it runs, and
    re-setting the weights of a running model changed its bf16 output by up to 4 levels."""
    if isinstance(model, torch.nn.Module):
        tensors = [*model.parameters(), *model.buffers()]
        if any(t.device.type != device.type or device.index not in (None, t.device.index) for t in tensors):
            model = model.to(device)
        if precision == "bf16" and device.type == "cpu" and not all(
                t.is_contiguous(memory_format=torch.channels_last) for t in tensors if t.dim() == 4):
            model = model.to(memory_format=torch.channels_last)
        if any(m.training for m in model.modules()):
            model.eval()
        return model
    if hasattr(model, "to"):
        model = model.to(device)
    if hasattr(model, "eval"):
        model.eval()
    return model


def model_multiple(model) -> int:
    """The LR multiple the model needs (``config.lr_multiple`` or ``lr_multiple``; default 1)."""
    cfg = getattr(model, "config", None)
    return int(getattr(cfg, "lr_multiple", None) or getattr(model, "lr_multiple", None) or 1)


def model_bands(model) -> int:
    """The bands the model takes and gives (``config.bands`` or ``bands``; default 3, RGB)."""
    cfg = getattr(model, "config", None)
    return int(getattr(cfg, "bands", None) or getattr(model, "bands", None) or 3)


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
        new = (m == 0) & (pooled[-1:] > 0)
        if not bool(new.any()):
            break
        v = torch.where(new, pooled[:-1] / pooled[-1:].clamp_min(1e-12), v)
        m = m + new.to(m.dtype)
    return torch.where(m > 0, v, torch.full_like(v, fill))


class TiledUpscaler:
    """The tiling engine: run an :class:`SRModel` over a :class:`Source` in tiles and stream
    blended output to a :class:`Sink`.

    Subclasses change what a tile yields and how it is blended through four hooks:
    :meth:`_tiles_per_call`, :meth:`_run_batch`, :meth:`_blend` (into an accumulator of
    ``acc_channels`` channels) and :meth:`_finish` (the arguments of ``sink.write`` after the
    tile name; :class:`~rsisr.upscale.ensemble.EnsembleUpscaler` adds the spread).
    """

    @property
    def acc_channels(self) -> int:
        """Channels of the blending accumulator: the weighted sum of the model's output bands."""
        return self.bands

    def __init__(self, model, *, tile: int = DEFAULT_TILE, overlap: int = DEFAULT_OVERLAP,
                 batch_size: int | None = DEFAULT_BATCH_SIZE, steps: int = 1, seed: int = 0, device="auto",
                 precision: str = "fp32", panel_width: int = PANEL_WIDTH, fill_grow: int = FILL_GROW,
                 noise_origin: tuple[int, int] = (0, 0), compile: bool = False):
        if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(batch_size, int)
                                       or batch_size < 1):
            raise ConfigError(f"--batch-size must be a positive integer, got {batch_size!r}")
        if isinstance(steps, bool) or not isinstance(steps, int) or not 1 <= steps <= 4:
            raise ConfigError(f"--steps must be 1, 2, 3 or 4, got {steps!r}")
        self.device = resolve_device(device)
        # auto: bf16 where the device runs it natively (checked at run time), else fp32
        self.precision = resolve_precision(precision, self.device)
        self.multiple = model_multiple(model)
        self.bands = model_bands(model)
        self.tile, self.overlap = effective_tiling(tile, overlap, self.multiple)
        if (self.tile, self.overlap) != (tile, overlap):
            log.info("tile %d and overlap %d aligned to the model's multiple of %d: tile %d, overlap %d",
                     tile, overlap, alignment(self.multiple), self.tile, self.overlap)
        self.model = prepare_model(model, self.device, self.precision)
        # --compile: torch.compile's graphs for the model call (warm-up on the first tiles;
        # benchmarks/speed.py measured it not to pay back on a 1024 x 1024 scene on the CPU)
        self.compiled = bool(compile) and isinstance(model, torch.nn.Module)
        self._net = torch.compile(model) if self.compiled else model
        self.batch_size = default_batch_size(self.device.type) if batch_size is None else batch_size
        self.steps = steps
        self.seed = int(seed)
        self.panel_width = panel_width
        self.fill_grow = fill_grow
        self.noise_origin = noise_origin
        self.tiles_run = 0
        self._child: TiledUpscaler | None = None  # sub-tiling after running out of memory
        self._limit: int | None = None  # most inputs per model call, once memory ran out

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
    def noises(self, origins: Sequence[tuple[int, int]], h: int, w: int,
               seeds: Sequence[int] | None = None) -> list[torch.Tensor]:
        """The per-step noise batches of tiles of h x w at LR scene ``origins`` (on the device),
        from the field of ``seeds`` (one per tile; default this engine's seed)."""
        latent_shape = getattr(self.model, "latent_shape", None)
        if latent_shape is None:
            return []
        oy, ox = self.noise_origin
        noises = tile_noises(latent_shape, self.seed if seeds is None else seeds, self.steps,
                             [(y + oy, x + ox) for y, x in origins], h, w)
        return [torch.from_numpy(n).to(self.device) for n in noises]

    def _call(self, x: torch.Tensor, origins, seeds=None) -> torch.Tensor:
        noises = self.noises(origins, x.shape[-2], x.shape[-1], seeds)
        with autocast(self.device, self.precision):
            y = self._compiled_call(x, noises) if self.compiled else self.model(x, noises, self.steps)
        return y.float().clamp(-1.0, 1.0)

    def _compiled_call(self, x: torch.Tensor, noises) -> torch.Tensor:
        """The model through torch.compile; a compiler failure (no C++ compiler, an unsupported
        operation) is one line that says to run without ``--compile``."""
        try:
            return self._net(x, noises, self.steps)
        except torch.cuda.OutOfMemoryError:
            raise
        except Exception as exc:
            if not type(exc).__module__.startswith("torch._"):
                raise
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise DeviceError(f"torch.compile failed ({first[:200]}); run without --compile") from None

    def forward(self, x: torch.Tensor, origins: Sequence[tuple[int, int]],
                seeds: Sequence[int] | None = None) -> torch.Tensor:
        """(B, C, h, w) in [-1, 1] with LR scene origins (and noise seeds, one per input;
        default this engine's seed) -> (B, C, 4h, 4w) in [-1, 1].

        Out of memory: retry with half the batch, then (at batch 1) with the tile run as a grid
        of half-size tiles, and keep the smaller setting for the rest of the run.
        """
        if self._child is not None:
            return self._subtiled(x, origins, seeds)
        if self._limit is not None and x.shape[0] > self._limit:
            return self._chunked(x, origins, seeds)
        try:
            return self._call(x, origins, seeds)
        except torch.cuda.OutOfMemoryError:
            if self.device.type == "cuda":
                torch.cuda.empty_cache()
        b = x.shape[0]
        if b > 1:
            self.batch_size = self._limit = max(1, b // 2)
            log.warning("out of memory with a batch of %d tiles; retrying with batches of %d", b, self.batch_size)
            return self._chunked(x, origins, seeds)
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
        return self._subtiled(x, origins, seeds)

    def _chunked(self, x: torch.Tensor, origins, seeds) -> torch.Tensor:
        """:meth:`forward` in batches of ``_limit`` inputs."""
        n = self._limit
        return torch.cat([self.forward(x[k:k + n], origins[k:k + n], None if seeds is None else seeds[k:k + n])
                          for k in range(0, x.shape[0], n)])

    def _subtiled(self, x: torch.Tensor, origins, seeds=None) -> torch.Tensor:
        from rsisr.upscale.memory import ArraySink, ArraySource

        outs = []
        for k, (y0, x0) in enumerate(origins):
            child = self._child
            child.noise_origin = (self.noise_origin[0] + y0, self.noise_origin[1] + x0)
            child.seed = self.seed if seeds is None else seeds[k]
            source = ArraySource((x[k] + 1.0) * 0.5)
            sink = ArraySink(SCALE * x.shape[-2], SCALE * x.shape[-1], block=(16, 16), bands=x.shape[1])
            child.run(source, sink)
            outs.append(torch.from_numpy(sink.out).to(x.device) * 2.0 - 1.0)
        return torch.stack(outs)

    # -- the streaming loop -----------------------------------------------------------------
    def run(self, source, sink, window: tuple[int, int, int, int] | None = None,
            on_tile: Callable[[int], None] | None = None) -> int:
        """Upscale ``window`` = (row_off, col_off, height, width) LR pixels of ``source`` (default:
        all of it) into ``sink``; ``on_tile(1)`` after each model run (progress). Returns the
        number of model runs (tiles)."""
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
                acc = torch.zeros(self.acc_channels, cap, p1 - p0, device=self.device)
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
                            self._blend(acc[:, ya - r0: yb - r0, xa - p0: xb - p0],
                                        out[:, ya - ty: yb - ty, xa - tx: xb - tx], weight)
                        done += 1
                        if on_tile is not None:
                            on_tile(1)
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
                sink.write(ra, p0 + ca, *self._finish(acc[:, ra - r0: rb - r0, ca:cb], norm))

    # -- the hooks --------------------------------------------------------------------------
    def _tiles_per_call(self) -> int:
        """Tiles per model call."""
        return self.batch_size

    def _run_batch(self, lr: torch.Tensor, origins) -> torch.Tensor:
        """(B, 3, h, w) LR tiles in [-1, 1] -> what each tile adds to the accumulator: here its
        (B, 3, 4h, 4w) output in [0, 1]."""
        return self.forward(lr, origins).add_(1.0).mul_(0.5)

    @staticmethod
    def _blend(region: torch.Tensor, out: torch.Tensor, weight: torch.Tensor) -> None:
        """Add a tile's ``out`` with the feathering ``weight`` (h, w) into the accumulator's ``region``."""
        region.addcmul_(out, weight)

    @staticmethod
    def _finish(acc: torch.Tensor, norm: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The accumulated block -> the arguments of ``sink.write`` after (row, col)."""
        return ((acc / norm).clamp_(0.0, 1.0),)

    def _tile_row(self, source, py: AxisPlan, px: AxisPlan, i: int, cols: range):
        """Read tile row ``i`` over tile columns ``cols`` (one read, with the fill halo) and yield
        (j, what the tile adds: :meth:`_run_batch`) for every tile, run in batches of equal shapes."""
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
                batch = js[k:k + self._tiles_per_call()]
                lr = torch.stack([x[:, y - ra: y - ra + th, px.start(j) - ca: px.start(j) - ca + tw] for j in batch])
                out = self._run_batch(lr, [(y, px.start(j)) for j in batch])
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
