"""Defaults and choices that the library and the command line share: one source for each, with
no heavy imports, so that ``rsisr upscale --help`` shows them without loading torch."""

from __future__ import annotations

#: Tiling defaults, in LR (input) pixels. 128 - 16 leaves 112-pixel steps (a multiple of 16, the
#: paper model's LR multiple): ~31 % of the model's work is overlap, the price of seamless output.
DEFAULT_TILE = 128
DEFAULT_OVERLAP = 16
#: Tiles per model call (halved automatically when a GPU runs out of memory).
DEFAULT_BATCH_SIZE = 4
#: Autocast precisions of inference and training.
PRECISIONS = ("fp32", "bf16", "fp16")
#: ``--scale`` of ``rsisr upscale`` (see :mod:`rsisr.radiometry`).
DEFAULT_SCALE = "auto"
