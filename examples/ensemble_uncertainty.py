"""The README's ensemble figure: output, uncertainty and absolute error side by side, on a real raster.

    python examples/ensemble_uncertainty.py [--out docs/ensemble_uncertainty.png] [--ensemble 8]

A 380 x 232 crop of the 0.15 m USGS orthophoto in ``../shared/data/geotiff`` is the truth; its
bicubic /4 (the degradation rsisr trains and evaluates with) is written as a GeoTIFF, upscaled
with ``rsisr upscale --ensemble N --uncertainty`` (the default model), and compared with the
truth: the mean, the samples' standard deviation and the absolute error of the mean (both
averaged over the three bands), and the Spearman correlation of std and error per pixel.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import rasterio
import torch
from rasterio.windows import Window

ROOT = Path(__file__).resolve().parents[1]
RASTER = ROOT.parent / "shared" / "data" / "geotiff" / "usgs_hro_colorado_rgb_u8_26913_0.15m.tif"


def low_resolution(hr_path: Path, lr_path: Path, window: Window) -> np.ndarray:
    """Write the bicubic /4 of ``window`` of ``hr_path`` as a GeoTIFF; return the HR crop (3, H, W)."""
    from rsisr.imageops import degrade, to_8bit, to_model_range

    with rasterio.open(hr_path) as src:
        hr = src.read(window=window)
        profile = src.profile
        transform = src.window_transform(window)
    lr = to_8bit(degrade(to_model_range(torch.from_numpy(hr)[None].float() / 255.0)))[0].numpy().astype(np.uint8)
    profile.update(width=lr.shape[2], height=lr.shape[1], transform=transform @ transform.scale(4), tiled=False)
    profile.pop("blockxsize", None), profile.pop("blockysize", None)
    with rasterio.open(lr_path, "w", **profile) as dst:
        dst.write(lr)
    return hr


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "docs" / "ensemble_uncertainty.png"))
    parser.add_argument("--ensemble", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)

    from matplotlib.figure import Figure

    from rsisr.evaluation.calibration import spearman
    from rsisr.upscale import upscale_file

    with tempfile.TemporaryDirectory() as tmp:
        lr_path, out, std_path = Path(tmp) / "lr.tif", Path(tmp) / "x4.tif", Path(tmp) / "x4_std.tif"
        hr = low_resolution(RASTER, lr_path, Window(0, 0, 380, 232))
        upscale_file(lr_path, out, ensemble=args.ensemble, uncertainty=std_path, seed=args.seed)
        with rasterio.open(out) as o, rasterio.open(std_path) as u:
            sr, std = o.read(), u.read()
    error = np.abs(sr.astype(np.float64) - hr).mean(axis=0)
    spread = std.mean(axis=0)
    rho = spearman(std.ravel().astype(np.float64), np.abs(sr.astype(np.float64) - hr).ravel())
    fig = Figure(figsize=(12, 3.0), dpi=80, layout="constrained")
    axes = fig.subplots(1, 3)
    axes[0].imshow(sr.transpose(1, 2, 0))
    axes[0].set_title(f"mean of {args.ensemble} samples (the output)", fontsize=10)
    for ax, values, title in ((axes[1], spread, "uncertainty: std of the samples"),
                              (axes[2], error, "|output - truth|")):
        im = ax.imshow(values, cmap="magma", vmin=0, vmax=float(np.percentile(values, 99)))
        ax.set_title(f"{title} (mean {values.mean():.1f} DN)", fontsize=10)
        fig.colorbar(im, ax=ax, shrink=0.9, label="8-bit levels (DN)")
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(f"USGS 0.15 m orthophoto, x4 from its bicubic /4 (each map on its own scale); "
                 f"Spearman(std, |error|) = {rho:.2f} per pixel", fontsize=10)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, format="png")
    print(f"wrote {args.out}: mean std {spread.mean():.2f}, mean |error| {error.mean():.2f} (8-bit levels), "
          f"Spearman {rho:.3f}")


if __name__ == "__main__":
    main()
