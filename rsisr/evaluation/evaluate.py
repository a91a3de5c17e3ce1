"""``rsisr evaluate``: a model against bicubic on a folder of HR images (paper Tables I and II).

For every HR image under the ``data`` folder, subfolders included (cropped at the bottom/right to
a multiple of 4): LR = :func:`rsisr.imageops.degrade` of the HR in [-1, 1] (the degradation
training uses); the model super-resolves it (``steps`` consistency steps, noise from ``seed``) and
each baseline upsamples it. Outputs are clipped and rounded to 8-bit values
(:func:`rsisr.imageops.to_8bit`), as a saved image would be, then compared with the HR image:
PSNR, SSIM and LPIPS per image (averaged over images), FID between the set of outputs and the set
of HR images. Runtime is the mean wall time per image of the model's (or the baseline's) forward
pass on the device, after one warm-up run, synchronised on CUDA.

The report (:func:`evaluate`'s return value, written as JSON) is a fixed interface::

    {"rsisr_version", "device",
     "model": {"path", "sha256", "preset", "inference_params"},
     "data": {"path", "n_images"},
     "metrics": {"model": {"psnr", "ssim", "lpips", "fid"}, "bicubic": {...}},
     "runtime_s_per_image": {"model", "bicubic"}}

Metrics that were not requested, or whose weights are unavailable, are null. A model of other
than three bands (or with a stored scaling) is evaluated on GeoTIFFs of its bands
(:mod:`rsisr.evaluation.multiband`); its report adds ``model.bands`` and, per method,
``psnr_per_band`` and ``ssim_per_band``.

With ``ensemble`` N > 1 the model's output is the mean of N samples (``rsisr upscale --ensemble
N``), and the report gains ``"ensemble": {"n", "seeds", "calibration"}``: how well the samples'
standard deviation tracks the mean's error (:mod:`rsisr.evaluation.calibration`).
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
import warnings
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np
import torch

from rsisr import __version__
from rsisr.config import SCALE
from rsisr.errors import InputError, OutputError, RsisrWarning
from rsisr.evaluation import BASELINES, DEFAULT_FIGURES, IMAGE_SUFFIXES, METRICS
from rsisr.evaluation.multiband import is_plain_rgb, read_hr_bands, rgb_index
from rsisr.imageops import bicubic_up, degrade, list_images, to_8bit, to_model_range

log = logging.getLogger(__name__)

MIN_HR_SIDE = 32  # LPIPS's AlexNet needs 31 px (two 3x3 max-pools after a stride-4 conv); SSIM 11


def parse_choice_list(spec: str | Sequence[str] | None, allowed: Sequence[str], what: str) -> tuple[str, ...]:
    """``"psnr,ssim"`` (or a sequence) -> ("psnr", "ssim"), in ``allowed``'s order; ``""``,
    ``"none"`` or None -> (). Unknown names are an :class:`InputError` that lists the choices."""
    if spec is None:
        return ()
    names = spec.split(",") if isinstance(spec, str) else list(spec)
    names = {n.strip().lower() for n in names} - {"", "none"}
    unknown = sorted(names - set(allowed))
    if unknown:
        raise InputError(f"unknown {what} {', '.join(map(repr, unknown))}; choose from: {', '.join(allowed)}")
    return tuple(n for n in allowed if n in names)


def read_hr(path: Path) -> torch.Tensor:
    """An RGB image as (1, 3, H, W) float32 in [0, 255], cropped at the bottom/right to multiples of 4."""
    from PIL import Image

    try:
        with Image.open(path) as img:
            rgb = np.asarray(img.convert("RGB"))
    except Exception as exc:
        raise InputError(f"cannot read image {str(path)!r}: {exc}") from None
    h, w = (rgb.shape[0] // SCALE) * SCALE, (rgb.shape[1] // SCALE) * SCALE
    if min(h, w) < MIN_HR_SIDE:
        raise InputError(f"image {str(path)!r} is {rgb.shape[1]}x{rgb.shape[0]}; evaluation needs at least "
                         f"{MIN_HR_SIDE}x{MIN_HR_SIDE} pixels")
    return torch.from_numpy(np.array(rgb[:h, :w])).permute(2, 0, 1)[None].float()


def model_runner(model, steps: int, seed: int, device: torch.device, ensemble: int = 1) -> Callable:
    """The model as ``rsisr evaluate`` runs it: LR (B, 3, h, w) in [-1, 1] -> SR in [-1, 1]
    through the tiling engine's model call (scene-coordinate noise of ``seed``, each image one
    tile at the origin), so each image is scored as ``rsisr upscale --seed`` writes it. With
    ``ensemble`` N > 1: (mean, std) of N samples (:func:`rsisr.evaluation.calibration.ensemble_runner`)."""
    from rsisr.upscale import TiledUpscaler

    if ensemble > 1:
        from rsisr.evaluation.calibration import ensemble_runner

        return ensemble_runner(model, steps, seed, device, ensemble)
    engine = TiledUpscaler(model, steps=steps, seed=seed, device=device, precision="auto")  # as upscale's default
    return lambda lr: engine.forward(lr, [(0, 0)] * lr.shape[0])


def timed(fn: Callable[[], torch.Tensor], device: torch.device) -> tuple[torch.Tensor, float]:
    """Run ``fn`` and return its result and wall time in seconds (CUDA synchronised on both ends)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    t0 = time.perf_counter()
    out = fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return out, time.perf_counter() - t0


@dataclass
class _Scorers:
    """The requested metrics and the networks LPIPS and FID need (None: not requested or
    unavailable); ``rgb``: the channels LPIPS, FID and figures see (None: the image as it is, RGB);
    ``per_band``: PSNR and SSIM of every band too (models of other than three bands)."""

    wanted: tuple[str, ...]
    lpips_net: torch.nn.Module | None = None
    inception: torch.nn.Module | None = None
    rgb: list[int] | None = None
    per_band: bool = False

    def visible(self, x: torch.Tensor) -> torch.Tensor:
        """The RGB bands of (B, C, H, W) ``x``."""
        return x if self.rgb is None else x[:, self.rgb]


@dataclass
class _Method:
    """Per-image results of one method (the model or a baseline)."""

    psnr: list[float] = field(default_factory=list)
    ssim: list[float] = field(default_factory=list)
    lpips: list[float] = field(default_factory=list)
    features: list[np.ndarray] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    psnr_bands: list[list[float]] = field(default_factory=list)
    ssim_bands: list[list[float]] = field(default_factory=list)

    def add(self, sr: torch.Tensor, hr: torch.Tensor, seconds: float, scorers: _Scorers) -> None:
        """Score one output ``sr`` against ``hr``, both (1, C, H, W) in [0, 255]."""
        from rsisr.evaluation import metrics as pixel
        from rsisr.evaluation import perceptual
        from rsisr.evaluation.multiband import per_band

        self.seconds.append(seconds)
        if "psnr" in scorers.wanted:
            self.psnr.append(pixel.psnr(sr, hr).item())
            if scorers.per_band:
                self.psnr_bands.append(per_band(pixel.psnr, sr, hr))
        if "ssim" in scorers.wanted:
            self.ssim.append(pixel.ssim(sr, hr).item())
            if scorers.per_band:
                self.ssim_bands.append(per_band(pixel.ssim, sr, hr))
        if scorers.lpips_net is not None:
            self.lpips.append(perceptual.lpips_distance(scorers.lpips_net, scorers.visible(sr),
                                                        scorers.visible(hr)).item())
        if scorers.inception is not None:
            self.features.append(perceptual.inception_features(scorers.inception, scorers.visible(sr)))

    def latest(self, count: int) -> dict[str, float]:
        """PSNR, SSIM and LPIPS of image number ``count`` - 1 (those that were scored)."""
        return {k: getattr(self, k)[-1] for k in ("psnr", "ssim", "lpips") if len(getattr(self, k)) == count}

    def summary(self, hr_features: list[np.ndarray] | None, per_band: bool = False) -> dict:
        """The report's metrics: means over the images; FID against ``hr_features`` (None: no
        FID); ``per_band``: also ``psnr_per_band`` and ``ssim_per_band`` (means over the images)."""
        from rsisr.evaluation.multiband import band_means
        from rsisr.evaluation.perceptual import frechet_distance

        fid = None
        if hr_features is not None:
            fid = frechet_distance(np.concatenate(self.features), np.concatenate(hr_features))
        out = {"psnr": _mean(self.psnr), "ssim": _mean(self.ssim), "lpips": _mean(self.lpips), "fid": fid}
        if per_band:
            out.update(psnr_per_band=band_means(self.psnr_bands), ssim_per_band=band_means(self.ssim_bands))
        return out


def _mean(values: Iterable[float]) -> float | None:
    values = list(values)
    if not values:
        return None
    m = float(np.mean(values))
    return m if math.isfinite(m) else None


def _check_output(path: Path | None, overwrite: bool, what: str, parent_must_exist: bool = True) -> None:
    if path is None:
        return
    if path.exists() and not overwrite:
        raise OutputError(f"{what} {str(path)!r} exists; pass --overwrite to replace it")
    if parent_must_exist and not path.parent.is_dir():
        raise OutputError(f"the folder of {what} {str(path)!r} does not exist; create it first")


def _check_figures(figures_dir: Path | None, data: Path, overwrite: bool) -> None:
    if figures_dir is None:
        return
    if figures_dir.exists() and not figures_dir.is_dir():
        raise OutputError(f"--figures {str(figures_dir)!r} exists and is not a folder")
    inside = figures_dir.resolve()
    if data.resolve() in (inside, *inside.parents):
        raise OutputError(f"--figures {str(figures_dir)!r} is inside --data {str(data)!r}, whose subfolders are "
                          "evaluated too: choose a folder outside it")
    _check_output(figures_dir / "summary.md", overwrite, "summary", parent_must_exist=False)


def evaluate(
    data: str | os.PathLike,
    model_path: str | os.PathLike | None = None,
    *,
    out: str | os.PathLike | None = None,
    baselines: str | Sequence[str] = BASELINES,
    metrics: str | Sequence[str] = METRICS,
    metric_weights: str | os.PathLike | None = None,
    figures: str | os.PathLike | None = None,
    n_figures: int = DEFAULT_FIGURES,
    steps: int = 1,
    seed: int = 0,
    device: str | torch.device = "auto",
    limit: int | None = None,
    overwrite: bool = False,
    progress: Callable[[int, int], None] | None = None,
    ensemble: int = 1,
) -> dict:
    """Evaluate a model (``model_path``; None: the bundled default) and baselines on the HR images
    in ``data`` and its subfolders; write the report to ``out`` (JSON) and, with ``figures``,
    comparison panels of the first ``n_figures`` images and ``summary.md`` there. Returns the report.
    ``progress(done, total)`` is called after each image; ``ensemble``: score the mean of that many
    samples and the calibration of their std (``reliability.png`` with ``figures``).
    """
    from rsisr.device import resolve_device
    from rsisr.evaluation import perceptual
    from rsisr.evaluation.calibration import Calibration, ensemble_entry

    wanted, methods = _choices(metrics, baselines, steps, ensemble)
    data = Path(data)
    out = Path(out) if out is not None else None
    figures_dir = Path(figures) if figures is not None else None
    _check_output(out, overwrite, "report")
    _check_figures(figures_dir, data, overwrite)
    files = _hr_files(data, limit)
    dev = resolve_device(device)
    weights_dir = perceptual.metric_weights_dir(metric_weights) if {"lpips", "fid"} & set(wanted) else None
    model, model_path = _load(model_path, dev)
    scorers, reader = _scorers(model.config, wanted, weights_dir, dev, figures_dir is not None)
    model_sr = model_runner(model, steps, seed, dev, ensemble)
    runners = {"model": lambda lr: timed(lambda: model_sr(lr), dev),
               "bicubic": lambda lr: timed(lambda: bicubic_up(lr, SCALE), dev)}
    log.info("evaluating %s (%s, %d step(s), %d sample(s)) and %s on %d images from %s on %s", model_path,
             model.config.preset, steps, ensemble, ", ".join(methods[1:]) or "no baseline", len(files), data, dev)
    calibration = Calibration(seed) if ensemble > 1 else None
    results, hr_features, panels = _score(files, data, {m: runners[m] for m in methods}, scorers, dev,
                                          n_figures if figures_dir is not None else 0, progress, reader, calibration)
    report = _report(dev, model_path, model.config, data, len(files), results, hr_features)
    if calibration is not None:
        report["ensemble"] = ensemble_entry(ensemble, seed, calibration)
    for m in methods:
        log.info("%s: %s, %.4f s/image", m, report["metrics"][m], report["runtime_s_per_image"][m])
    if out is not None:
        write_report(report, out)
    if figures_dir is not None:
        from rsisr.evaluation.figures import write_figures

        device_name = f"{dev} ({torch.cuda.get_device_name(dev)})" if dev.type == "cuda" else str(dev)
        write_figures(figures_dir, report, panels, steps=steps, seed=seed, device_name=device_name)
    return report


def _scorers(cfg, wanted: tuple[str, ...], weights_dir, dev: torch.device, figures: bool) -> tuple[_Scorers, Callable]:
    """The scorers of the requested metrics for a model of ``cfg``, and its HR image reader."""
    from rsisr.evaluation import perceptual

    rgb = rgb_index(cfg, wanted, figures)
    scorers = _Scorers(wanted, perceptual.load_lpips(weights_dir, dev) if "lpips" in wanted else None,
                       perceptual.load_fid_inception(weights_dir, dev) if "fid" in wanted else None,
                       None if cfg.bands == 3 and rgb == [0, 1, 2] else rgb, cfg.bands != 3)
    reader = read_hr if is_plain_rgb(cfg) else partial(read_hr_bands, cfg=cfg, min_side=MIN_HR_SIDE)
    return scorers, reader


def _load(model_path, dev: torch.device):
    """(model, its path): the model file (None: the bundled default) loaded on ``dev``."""
    from rsisr.api import default_model_path, load_model

    if model_path is None:
        model_path = default_model_path()
    model = load_model(model_path, dev).eval()  # no default model shipped: a one-line CheckpointError
    return model, Path(model_path)


def _choices(metrics, baselines, steps: int, ensemble: int = 1) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(metrics, methods) from the ``metrics`` and ``baselines`` lists; InputError on bad ones
    (and on bad ``steps``; a ConfigError on a bad ``ensemble``)."""
    from rsisr.upscale.ensemble import check_ensemble

    check_ensemble(ensemble)
    wanted = parse_choice_list(metrics, METRICS, "metric")
    if not wanted:
        raise InputError(f"--metrics is empty; choose from: {', '.join(METRICS)}")
    methods = ("model", *parse_choice_list(baselines, BASELINES, "baseline"))
    if steps < 1:
        raise InputError(f"--steps must be at least 1, got {steps}")
    return wanted, methods


def _hr_files(data: Path, limit: int | None) -> list[Path]:
    """The HR images of ``data`` (:func:`rsisr.imageops.list_images`), the first ``limit`` of them."""
    files = list_images(data, IMAGE_SUFFIXES, "--data")
    if limit is None:
        return files
    if limit < 1:
        raise InputError(f"--limit must be at least 1, got {limit}")
    return files[:limit]


@torch.no_grad()
def _score(files: list[Path], data: Path, runners: dict[str, Callable], scorers: _Scorers, dev: torch.device,
           n_figures: int, progress: Callable[[int, int], None] | None, reader: Callable = read_hr,
           calibration=None):
    """Run and score every method on every image. Returns the per-method results, the HR images'
    Inception features (FID) and the figure panels of the first ``n_figures`` images. A method
    that returns (mean, std) (an ensemble) is scored on its mean; its std goes to ``calibration``."""
    results = {m: _Method() for m in runners}
    hr_features: list[np.ndarray] = []
    panels: list[dict] = []
    for index, path in enumerate(files):
        hr = reader(path)
        lr = degrade(to_model_range(hr / 255.0)).to(dev)
        if index == 0:  # warm-up (CUDA context, cuDNN autotuning, allocator): not timed
            for run in runners.values():
                run(lr)
        if scorers.inception is not None:
            from rsisr.evaluation.perceptual import inception_features

            hr_features.append(inception_features(scorers.inception, scorers.visible(hr)))
        outputs = {}
        for m, run in runners.items():
            y, seconds = run(lr)
            y, std = y if isinstance(y, tuple) else (y, None)
            outputs[m] = to_8bit(y)
            results[m].add(outputs[m], hr, seconds, scorers)
            if std is not None and calibration is not None:
                calibration.add(std.float().cpu() * 127.5, outputs[m], hr)  # [-1, 1] -> 8-bit units
        if index < n_figures:
            if "bicubic" not in outputs:
                outputs["bicubic"] = to_8bit(bicubic_up(lr, SCALE))
            panels.append({
                "name": path.relative_to(data).with_suffix("").as_posix(), "hr": scorers.visible(hr),
                **{m: scorers.visible(outputs[m]) for m in ("model", "bicubic")},
                "metrics": {m: r.latest(index + 1) for m, r in results.items()},
            })
        if progress is not None:
            progress(index + 1, len(files))
    return results, hr_features, panels


def _report(dev: torch.device, model_path: Path, cfg, data: Path, n_images: int, results: dict[str, _Method],
            hr_features: list[np.ndarray]) -> dict:
    """The report (see the module docstring); FID where there were features of two images or more."""
    from rsisr.api import parameter_counts
    from rsisr.checkpoint import file_sha256

    fid_possible = bool(hr_features) and n_images >= 2
    if hr_features and not fid_possible:
        warnings.warn(RsisrWarning("FID is reported as null: it needs at least 2 images"), stacklevel=3)
    counts = parameter_counts(cfg)
    return {
        "rsisr_version": __version__,
        "device": str(dev),
        "model": {
            "path": str(model_path.resolve()),
            "sha256": file_sha256(model_path),
            "preset": cfg.preset,
            "inference_params": counts["decoder"] + counts["condnet"] + counts["unet"],
            **({"bands": cfg.bands} if cfg.bands != 3 else {}),
        },
        "data": {"path": str(data.resolve()), "n_images": n_images},
        "metrics": {m: r.summary(hr_features if fid_possible else None, cfg.bands != 3) for m, r in results.items()},
        "runtime_s_per_image": {m: float(np.mean(r.seconds)) for m, r in results.items()},
    }


def write_report(report: dict, path: str | os.PathLike) -> Path:
    """Write the report as JSON (strict: no NaN or Infinity), atomically."""
    from rsisr.atomic import write_text

    return write_text(path, json.dumps(report, indent=2, allow_nan=False) + "\n", "report")
