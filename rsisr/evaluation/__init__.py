"""Evaluation: PSNR, SSIM, LPIPS, FID, runtime and figures (`rsisr evaluate`).

- :mod:`~rsisr.evaluation.evaluate`: :func:`~rsisr.evaluation.evaluate.evaluate`, the report;
- :mod:`~rsisr.evaluation.metrics`: PSNR and SSIM; :mod:`~rsisr.evaluation.perceptual`: LPIPS
  and FID from local weight files;
- :mod:`~rsisr.evaluation.figures`: comparison panels and summary.md.

The choices and defaults of ``rsisr evaluate`` are here, so the command's ``--help`` needs no torch.
"""

from __future__ import annotations

#: Metrics of the report, in its order.
METRICS = ("psnr", "ssim", "lpips", "fid")
#: Methods scored beside the model.
BASELINES = ("bicubic",)
#: HR image files of ``--data`` (read with Pillow; subfolders are searched too).
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp")
#: Comparison panels written with ``--figures`` (of the first images).
DEFAULT_FIGURES = 6
