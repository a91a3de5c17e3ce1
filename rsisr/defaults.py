"""Defaults and choices that the library and the command line share: one source for each, with
no heavy imports, so that ``rsisr upscale --help`` shows them without loading torch."""

from __future__ import annotations

#: Tiling defaults, in LR (input) pixels. 192 - 16 leaves 176-pixel steps (a multiple of 16, the
#: paper model's LR multiple): ~16 % of the model's work is overlap, the price of seamless output.
#: Tile 192 at batch 1 upscaled 18 % more output pixels per CPU-second than tile 128 at batch 4
#: (benchmarks/speed.py, README "Speed").
DEFAULT_TILE = 192
DEFAULT_OVERLAP = 16
#: Tiles per model call: None picks by device (halved automatically when a GPU runs out of memory).
DEFAULT_BATCH_SIZE = None
#: Batch sizes ``DEFAULT_BATCH_SIZE`` picks: on a CPU one tile per call was fastest at every tile
#: size measured; a GPU wants several tiles per call to be busy.
CPU_BATCH_SIZE = 1
GPU_BATCH_SIZE = 4


def default_batch_size(device_type: str) -> int:
    """The batch size of ``--batch-size`` left at its default on a device of ``device_type``."""
    return CPU_BATCH_SIZE if device_type == "cpu" else GPU_BATCH_SIZE
#: Autocast precisions of inference and training.
PRECISIONS = ("fp32", "bf16", "fp16")
#: ``--scale`` of ``rsisr upscale`` (see :mod:`rsisr.radiometry`).
DEFAULT_SCALE = "auto"
