"""Comparison figures of ``rsisr evaluate --figures DIR`` (like the paper's Fig. 3) and summary.md.

Each panel shows LR bicubic | model | HR in full with a red box around the most detailed region
of the HR image, and below each the box zoomed in (nearest neighbour, so no smoothing is added).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from rsisr.atomic import atomic_path, write_text

log = logging.getLogger(__name__)

ZOOM_FRACTION = 5  # the zoom box is 1/5 of the shorter side (80 px on a 400 px image)


def zoom_box(hr: np.ndarray, size: int | None = None) -> tuple[int, int, int]:
    """(top, left, size) of the square window of ``hr`` (H, W, 3) with the most gradient energy.

    Windows are searched on a stride of size/4; the sum over a window comes from an integral image.
    """
    h, w = hr.shape[:2]
    size = size or max(8, min(h, w) // ZOOM_FRACTION)
    size = min(size, h, w)
    gray = hr.astype(np.float64).mean(axis=2)
    energy = np.zeros_like(gray)
    energy[:, 1:] += np.abs(np.diff(gray, axis=1))
    energy[1:, :] += np.abs(np.diff(gray, axis=0))
    integral = np.pad(energy.cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    stride = max(1, size // 4)
    best, box = -1.0, (0, 0, size)
    for top in range(0, h - size + 1, stride):
        for left in range(0, w - size + 1, stride):
            s = (integral[top + size, left + size] - integral[top, left + size]
                 - integral[top + size, left] + integral[top, left])
            if s > best:
                best, box = s, (top, left, size)
    return box


def _hwc(x: torch.Tensor) -> np.ndarray:
    """(1, 3, H, W) values in [0, 255] -> (H, W, 3) uint8."""
    return x[0].permute(1, 2, 0).clamp(0, 255).round().to(torch.uint8).numpy()


def _caption(values: dict[str, float] | None) -> str:
    if not values:
        return ""
    parts = []
    if "psnr" in values:
        parts.append(f"PSNR {values['psnr']:.2f} dB")
    if "ssim" in values:
        parts.append(f"SSIM {values['ssim']:.3f}")
    if "lpips" in values:
        parts.append(f"LPIPS {values['lpips']:.3f}")
    return " | ".join(parts)


def comparison_panel(path: str | Path, panel: dict, model_label: str) -> Path:
    """Write one PNG: LR bicubic | model | HR, full images on top, the zoomed box below."""
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle

    images = [_hwc(panel["bicubic"]), _hwc(panel["model"]), _hwc(panel["hr"])]
    metrics = panel.get("metrics", {})
    titles = [
        ("LR bicubic", _caption(metrics.get("bicubic"))),
        (model_label, _caption(metrics.get("model"))),
        ("HR (ground truth)", panel["name"]),
    ]
    top, left, size = zoom_box(images[2])
    h, w = images[2].shape[:2]
    col_w = 4.2
    fig = Figure(figsize=(3 * col_w, col_w * h / w + col_w + 0.9), dpi=110, layout="constrained")
    axes = fig.subplots(2, 3, height_ratios=[h / w, 1.0])
    for col, (img, (title, caption)) in enumerate(zip(images, titles)):
        full, zoom = axes[0, col], axes[1, col]
        full.imshow(img, interpolation="nearest")
        full.add_patch(Rectangle((left - 0.5, top - 0.5), size, size, fill=False, edgecolor="red", linewidth=1.8))
        full.set_title(f"{title}\n{caption}" if caption else title, fontsize=10)
        zoom.imshow(img[top:top + size, left:left + size], interpolation="nearest")
        for spine in zoom.spines.values():
            spine.set_edgecolor("red")
            spine.set_linewidth(1.8)
        zoom.set_xlabel(f"zoom x{w / size:.1f}: rows {top}-{top + size}, cols {left}-{left + size}", fontsize=8)
        for ax in (full, zoom):
            ax.set_xticks([])
            ax.set_yticks([])
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)  # a panel of data/sub/x.png is figures/sub/x.png
    with atomic_path(path, "figure") as tmp:
        fig.savefig(tmp, format="png")
    return path


def _fmt(value, digits: int) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _panel_lines(panels: list[dict], names: dict[str, str]) -> list[str]:
    """The lines of summary.md about the comparison panels: per-image metrics and the images."""
    keys = [k for k in ("bicubic", "model") if any(k in p.get("metrics", {}) for p in panels)]
    lines = ["", "## Figures", "", "Per image (LR bicubic | model | HR, the red box zoomed below):", ""]
    head = [f"{names[k]} {label}" for k in keys for label in ("PSNR", "SSIM", "LPIPS")]
    lines += ["| image | " + " | ".join(head) + " |", "|---|" + "---:|" * len(head)]
    for panel in panels:
        m = panel.get("metrics", {})
        cells = [_fmt(m.get(k, {}).get(name), digits) for k in keys
                 for name, digits in (("psnr", 2), ("ssim", 4), ("lpips", 4))]
        lines.append(f"| [{panel['name']}]({panel['name']}.png) | " + " | ".join(cells) + " |")
    lines.append("")
    return lines + [f"![{panel['name']}]({panel['name']}.png)" for panel in panels]


def _ensemble_section(folder: Path, ensemble: dict, label: str) -> list[str]:
    """Write ``reliability.png`` and return the lines of summary.md about the ensemble's calibration."""
    from rsisr.evaluation.calibration import Calibration

    cal = ensemble["calibration"]
    Calibration.plot(folder / "reliability.png", cal, label)
    rho = cal["spearman"]
    lines = ["", "## Ensemble", "",
             f"The model's output is the mean of {ensemble['n']} samples (seeds "
             f"{', '.join(map(str, ensemble['seeds']))}). Calibration of the samples' per-pixel standard deviation "
             f"against the absolute error of the mean ({cal['n_values']:,} pixel values): Spearman correlation "
             f"{_fmt(rho, 3)}.", "",
             "| std bin (8-bit levels) | mean std | RMSE | values |", "|---|---:|---:|---:|"]
    lines += [f"| {r['std_min']:.2f} - {r['std_max']:.2f} | {r['std_mean']:.2f} | {r['rmse']:.2f} | {r['count']:,} |"
              for r in cal["reliability"]]
    return lines + ["", "![reliability](reliability.png)"]


def write_figures(
    folder: str | Path, report: dict, panels: list[dict], *, steps: int, seed: int, device_name: str,
) -> list[Path]:
    """Write a comparison panel per entry of ``panels`` and ``summary.md`` into ``folder``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    model = report["model"]
    ensemble = report.get("ensemble")
    mean_of = f", mean of {ensemble['n']}" if ensemble else ""
    label = f"LCMSR ({model['preset']}, {steps} step{'s' if steps > 1 else ''}{mean_of})"
    written = []
    for panel in panels:
        written.append(comparison_panel(folder / f"{panel['name']}.png", panel, label))
        log.info("wrote %s", written[-1])

    names = {"model": label, "bicubic": "Bicubic"}
    lines = [
        "# rsisr evaluate",
        "",
        f"- model: `{model['path']}` (preset {model['preset']}, {model['inference_params']:,} inference parameters, "
        f"sha256 `{model['sha256'][:16]}...`), {steps} step(s), seed {seed}",
        f"- data: `{report['data']['path']}`, {report['data']['n_images']} images; LR = bicubic /4 of the HR",
        f"- device: {device_name}, rsisr {report['rsisr_version']}",
        "",
        "| method | PSNR (dB) ↑ | SSIM ↑ | LPIPS ↓ | FID ↓ | runtime (s/image) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for key in ("bicubic", "model"):
        if key not in report["metrics"]:
            continue
        m = report["metrics"][key]
        lines.append(f"| {names[key]} | {_fmt(m['psnr'], 3)} | {_fmt(m['ssim'], 4)} | {_fmt(m['lpips'], 4)} "
                     f"| {_fmt(m['fid'], 3)} | {_fmt(report['runtime_s_per_image'][key], 4)} |")
    for key in ("bicubic", "model"):
        m = report["metrics"].get(key, {})
        for name in ("psnr", "ssim"):
            if m.get(f"{name}_per_band"):
                values = ", ".join(_fmt(v, 3 if name == "psnr" else 4) for v in m[f"{name}_per_band"])
                lines.append(f"\n{names[key]}, {name.upper()} per band 1-{len(m[f'{name}_per_band'])}: {values}")
    lines += [
        "",
        "PSNR and SSIM on RGB (or every band) in [0, 255] without border crop; LPIPS v0.1 (AlexNet); FID with the "
        "pytorch-fid Inception (pool3) between the set of outputs and the set of HR images. "
        "n/a: not requested, or the metric weights were not available.",
    ]
    if ensemble:
        lines += _ensemble_section(folder, ensemble, label)
        written.append(folder / "reliability.png")
    if panels:
        lines += _panel_lines(panels, names)
    summary = folder / "summary.md"
    write_text(summary, "\n".join(lines) + "\n", "summary")
    written.append(summary)
    return written
