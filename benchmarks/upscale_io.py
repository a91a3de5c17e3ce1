"""I/O floor: the engine with the nearest-x4 stand-in (no model cost) against
``gdal_translate -outsize 400% 400% -r cubic`` on the same input (issue 3, benchmark 3).

    python benchmarks/upscale_io.py [--size 2048] [--repeats 2] [--threads N]

Both write a tiled DEFLATE (predictor 2) GeoTIFF of the same size. gdal_translate comes from
the system's GDAL (``apt-get install gdal-bin``); without it, rasterio's cubic resampled read +
write (the same GDAL as rsisr uses) is timed instead, and the output says so.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time


def rasterio_cubic(src: str, dst: str) -> None:
    """Cubic x4 with rasterio, block row by block row (the fallback reference)."""
    import rasterio
    from affine import Affine
    from rasterio.enums import Resampling
    from rasterio.windows import Window

    from rsisr.geo import compose

    with rasterio.open(src) as s:
        profile = dict(s.profile, width=4 * s.width, height=4 * s.height, tiled=True, blockxsize=512,
                       blockysize=512, compress="deflate", predictor=2,
                       transform=compose(s.transform, Affine.scale(0.25)))
        with rasterio.open(dst, "w", **profile) as d:
            for r in range(0, s.height, 128):
                h = min(128, s.height - r)
                data = s.read(window=Window(0, r, s.width, h), out_shape=(s.count, 4 * h, 4 * s.width),
                              resampling=Resampling.cubic)
                d.write(data, window=Window(0, 4 * r, 4 * s.width, 4 * h))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=2048)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    sys.path.insert(0, os.path.dirname(__file__))
    from _scenes import make_scene

    from rsisr.standins import NearestX4
    from rsisr.upscale import upscale_file

    workdir = tempfile.mkdtemp(prefix="rsisr_bench_io_")
    src = make_scene(os.path.join(workdir, "scene.tif"), args.size)
    gdal = shutil.which("gdal_translate")
    ref_name = "gdal_translate -outsize 400% 400% -r cubic" if gdal else "rasterio cubic read+write (no gdal_translate)"
    engine, ref = [], []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        upscale_file(src, os.path.join(workdir, "engine.tif"), NearestX4(), device="cpu", overwrite=True)
        engine.append(time.perf_counter() - t0)
        out = os.path.join(workdir, "ref.tif")
        t0 = time.perf_counter()
        if gdal:
            subprocess.run([gdal, "-q", "-outsize", "400%", "400%", "-r", "cubic", "-co", "TILED=YES",
                            "-co", "BLOCKXSIZE=512", "-co", "BLOCKYSIZE=512", "-co", "COMPRESS=DEFLATE",
                            "-co", "PREDICTOR=2", src, out], check=True)
        else:
            rasterio_cubic(src, out)
        ref.append(time.perf_counter() - t0)
        os.remove(out)
    e, r = min(engine), min(ref)
    import torch

    print(f"input {args.size}x{args.size} uint8 RGB -> {4 * args.size}x{4 * args.size}, "
          f"torch threads {torch.get_num_threads()}")
    print(f"engine + nearest stand-in: {e:.2f} s (runs: {', '.join(f'{t:.2f}' for t in engine)})")
    print(f"{ref_name}: {r:.2f} s (runs: {', '.join(f'{t:.2f}' for t in ref)})")
    print(f"engine / reference: {e / r:.2f}x")
    shutil.rmtree(workdir)


if __name__ == "__main__":
    main()
