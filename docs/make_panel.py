"""docs/default_model_panel.png: a NEON SJER orthophoto tile of ../shared/data/eval, x4 from its
bicubic /4 (rsisr's degradation) by bicubic, by an older model and by the bundled default model
through ``model.upscale`` at its defaults (seed 0), with PSNR against the HR tile.

    python docs/make_panel.py OLDER_MODEL.safetensors [--tile SJER_002.png] [--out docs/default_model_panel.png]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch
from PIL import Image

import rsisr
from rsisr.imageops import bicubic_up, degrade

EVAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "eval"


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    return float(10 * np.log10(255.0 ** 2 / np.mean((a.astype(np.float64) - b) ** 2)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("older", help="the previous default model (.safetensors)")
    parser.add_argument("--tile", default="SJER_002.png")
    parser.add_argument("--out", default="docs/default_model_panel.png")
    args = parser.parse_args()
    hr = np.array(Image.open(EVAL / args.tile).convert("RGB"))
    h, w = (s // 4 * 4 for s in hr.shape[:2])
    hr = hr[:h, :w]
    x = torch.from_numpy(hr).permute(2, 0, 1)[None].float() / 127.5 - 1
    lr_t = degrade(x)
    lr = ((lr_t[0].permute(1, 2, 0) + 1) * 127.5).round().clamp(0, 255).byte().numpy()
    bic = ((bicubic_up(lr_t, 4)[0].permute(1, 2, 0).clamp(-1, 1) + 1) * 127.5).round().byte().numpy()
    columns = [("HR (truth)", hr), (f"bicubic x4: {psnr(bic, hr):.2f} dB", bic)]
    for name, model in (("previous default", rsisr.load_model(args.older)), ("default", rsisr.load_model(None))):
        sr = model.upscale(lr, seed=0)
        columns.append((f"{name}: {psnr(sr, hr):.2f} dB", sr))
    z = slice(h // 2 - 80, h // 2 + 80), slice(w // 2 - 80, w // 2 + 80)
    fig, axes = plt.subplots(2, len(columns), figsize=(3.1 * len(columns), 6.2))
    for k, (title, img) in enumerate(columns):
        axes[0, k].imshow(img)
        axes[0, k].set_title(title, fontsize=8)
        axes[1, k].imshow(img[z], interpolation="nearest")
        axes[1, k].set_title("zoom", fontsize=7)
        for ax in axes[:, k]:
            ax.axis("off")
    fig.suptitle(f"NEON {args.tile} (0.1 m orthophoto): x4 from its bicubic /4 (model.upscale, defaults)", fontsize=9)
    fig.tight_layout()
    fig.savefig(args.out, dpi=90)
    print(args.out)


if __name__ == "__main__":
    main()
