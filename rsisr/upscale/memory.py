"""In-memory sources and sinks of the engine: the engine's own tests, its out-of-memory
sub-tiling, and :func:`upscale_array` (float images in [0, 1]). User arrays of any dtype go
through :func:`rsisr.array_io.upscale_image` (``model.upscale``), with the CLI's scaling."""

from __future__ import annotations

import numpy as np
import torch

from rsisr.config import SCALE


class ArraySource:
    """An in-memory scene: (C, H, W) values in [0, 1] and an optional (H, W) validity mask."""

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
    """Collects the output in memory: ``out`` is (C, 4 h, 4 w) float32 (C = ``bands``); an
    ensemble's standard deviation goes to ``std`` (same shape; None until the engine sends one)."""

    def __init__(self, height: int, width: int, block: tuple[int, int] = (64, 64), bands: int = 3):
        self.out = np.zeros((bands, height, width), np.float32)
        self.std: np.ndarray | None = None
        self.block_shape = block
        self.written = np.zeros((height, width), np.int32)

    def write(self, row: int, col: int, data: torch.Tensor, std: torch.Tensor | None = None) -> None:
        h, w = data.shape[-2:]
        self.out[:, row:row + h, col:col + w] = data.cpu().numpy()
        self.written[row:row + h, col:col + w] += 1
        if std is not None:
            if self.std is None:
                self.std = np.zeros_like(self.out)
            self.std[:, row:row + h, col:col + w] = std.cpu().numpy()


def upscale_array(image, model, valid=None, window=None, *, ensemble: int = 1, uncertainty: bool = False,
                  **options):
    """Upscale an in-memory (C, H, W) float image in [0, 1] by 4x with the tiling engine
    (same tiling, noise and blending as :func:`upscale_file`; C: the model's bands); returns
    (C, 4h, 4w) float32 of ``window`` = (row_off, col_off, height, width), default the whole
    image. ``ensemble``: the mean of that many samples; with ``uncertainty``, (mean, std) (std:
    zeros for one sample)."""
    from rsisr.upscale.ensemble import make_engine

    engine = make_engine(model, ensemble=ensemble, **options)
    source = ArraySource(image, valid)
    window = window or (0, 0, *source.shape)
    sink = ArraySink(SCALE * window[2], SCALE * window[3], bands=engine.bands)
    engine.run(source, sink, window)
    if uncertainty:
        return sink.out, sink.std if sink.std is not None else np.zeros_like(sink.out)
    return sink.out
