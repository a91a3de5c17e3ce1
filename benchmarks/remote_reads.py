"""Bytes fetched over HTTP by ``upscale_file`` on a COG (issue 17): the open, the ``--scale auto``
statistics sample, and a window's pixels and masks, as shares of the file.

    python benchmarks/remote_reads.py [--size 4096] [--dtype uint16] [--block 512] [--window 16]

A synthetic COG (noise texture, DEFLATE, overviews, an internal mask with a hole) is served by
a loopback HTTP server with byte ranges (``tests/range_server.py``), which counts the bytes it
sends. The window is 1/``--window`` of the scene's area, in its middle; the model is the nearest
stand-in (the model does not change what is read). Each phase gets a fresh URL, so GDAL's cache
of earlier phases does not hide reads.
"""

from __future__ import annotations

import argparse
import math
import shutil
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=4096)
    parser.add_argument("--dtype", default="uint16", choices=("uint8", "uint16"))
    parser.add_argument("--block", type=int, default=512)
    parser.add_argument("--window", type=int, default=16, help="the window is 1/N of the scene's area")
    parser.add_argument("--tile", type=int, default=128)
    args = parser.parse_args()
    sys.path.insert(0, str(HERE.parent / "tests"))
    import rasterio
    from rasterio.windows import Window
    from rasterio.windows import bounds as window_bounds
    from range_server import make_cog, serve

    from rsisr.gdal_env import gdal_env, remote_config
    from rsisr.rasterio_io import open_raster
    from rsisr.standins import NearestX4
    from rsisr.upscale import upscale_file
    from rsisr.upscale.source import statistics_sample

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        cog = make_cog(folder / "a.tif", args.size, 1 if args.dtype == "uint16" else 3, args.dtype, args.block)
        for name in ("b.tif", "c.tif"):
            shutil.copy(cog, folder / name)
        size = cog.stat().st_size
        side = int(args.size / math.sqrt(args.window))
        off = (args.size - side) // 2
        with rasterio.open(cog) as src:
            bounds = window_bounds(Window(off, off, side, side), src.transform)
            levels = src.overviews(1)
        with serve(folder) as served:
            with gdal_env(**remote_config(f"{served.url}/a.tif")):
                src = open_raster(f"{served.url}/a.tif")
                opened = served.bytes()
                statistics_sample(src, list(range(1, src.count + 1)), has_mask=True)
                sample = served.bytes() - opened
                src.close()
            served.mark()
            upscale_file(f"{served.url}/b.tif", folder / "out_b.tif", NearestX4(), bounds=bounds, scale="0,4000",
                         tile=args.tile, device="cpu")
            window = served.bytes(since_mark=True) - opened
            served.mark()
            upscale_file(f"{served.url}/c.tif", folder / "out_c.tif", NearestX4(), bounds=bounds, scale="auto",
                         tile=args.tile, device="cpu")
            total = served.bytes(since_mark=True)
            requests = len(served.requests)
    print(f"COG {args.size} x {args.size} {args.dtype}, blocks {args.block}, overviews {levels}: {size / 1e6:.2f} MB")
    print(f"window {side} x {side} (1/{args.window} of the scene), tile {args.tile}; {requests} requests in all")
    note = " (uint8: never read)" if args.dtype == "uint8" else ""
    for what, n in (("open (header, block index)", opened), (f"--scale auto sample{note}", sample),
                     ("window: pixels and masks", window), ("upscale_file --bounds --scale auto, total", total)):
        print(f"  {what:48s} {n / 1e6:8.3f} MB  {100 * n / size:6.2f} % of the file")


if __name__ == "__main__":
    main()
