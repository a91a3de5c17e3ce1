"""How much the output depends on ``--tile``: |difference| between tilings (same seed) and
between two seeds (same tiling) on a crop of a real raster (issue 3).

    python benchmarks/tile_invariance.py [--model PATH | --model tiny] [--size 224] [--tiles 64,96,128] [--threads N]

Default: the bundled default model on the top-left ``--size`` x ``--size`` pixels of
``../shared/data/geotiff/usgs_hro_colorado_rgb_u8_26913_0.15m.tif``, overlap 16. ``--model tiny``
runs the untrained ``tiny`` preset (seed 0 weights), the model the issue names. Differences are in
grey levels of the 8-bit output (x/255).
"""

from __future__ import annotations

import argparse
import itertools
from pathlib import Path

import numpy as np
import torch

RASTER = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "geotiff" / "usgs_hro_colorado_rgb_u8_26913_0.15m.tif"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="model file, or 'tiny' (default: the bundled default model)")
    parser.add_argument("--raster", default=str(RASTER))
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--tiles", default="64,96,128")
    parser.add_argument("--overlap", type=int, default=16)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()

    import rasterio
    from rasterio.windows import Window

    import rsisr
    from rsisr.upscale import upscale_array

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.model == "tiny":
        torch.manual_seed(0)
        model = rsisr.build_model("tiny").eval()
    else:
        model = rsisr.load_model(args.model).eval()
    with rasterio.open(args.raster) as src:
        image = src.read([1, 2, 3], window=Window(0, 0, args.size, args.size)).astype(np.float32) / 255
    tiles = [int(t) for t in args.tiles.split(",")]
    out = {t: upscale_array(image, model, tile=t, overlap=args.overlap, device="cpu", seed=1) for t in tiles}
    other_seed = upscale_array(image, model, tile=tiles[1], overlap=args.overlap, device="cpu", seed=2)

    def line(label: str, a: np.ndarray, b: np.ndarray) -> str:
        d = np.abs(a - b) * 255
        return (f"{label:<28} mean {d.mean():6.3f}  p99 {np.percentile(d, 99):6.2f}  "
                f"p99.9 {np.percentile(d, 99.9):6.2f}  max {d.max():6.2f}  (/255)")

    print(f"model {args.model or 'default'}, {args.size}x{args.size} crop of {Path(args.raster).name}, "
          f"overlap {args.overlap}")
    for a, b in itertools.combinations(tiles, 2):
        print(line(f"tile {a} vs {b} (seed 1)", out[a], out[b]))
    print(line(f"seed 1 vs 2 (tile {tiles[1]})", out[tiles[1]], other_seed))


if __name__ == "__main__":
    main()
