"""Torch thread settings for `rsisr upscale` on this CPU: 1, 2, ... threads side by side.

Each round runs `rsisr upscale` once per thread count (a fresh process each, so torch's thread
pool is set before it starts), in interleaved order, on the same real raster with the default
model and defaults. Reports median wall seconds, CPU seconds (user + sys of the child) and output
megapixels per wall second, with the load average before and after (the ratio between thread
counts depends on what else runs: on an idle machine more threads help; on a busy one they
oversubscribe the cores).

    python benchmarks/threads.py [--threads 1,2] [--rounds 3] [--crop 512] [--raster PATH]
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
DEFAULT_RASTER = SHARED / "geotiff" / "rasterio_cogeo_rgb_u8_3857_0.6m.tif"


def run_once(raster: Path, out: Path, threads: int, extra: list[str]) -> tuple[float, float]:
    """(wall s, CPU s) of one `rsisr upscale` with ``threads`` torch threads."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    subprocess.run([str(Path(sys.executable).with_name("rsisr")), "upscale", str(raster), "-o", str(out), "--overwrite",
                    "-q", *extra], check=True, env=env)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--raster", type=Path, default=DEFAULT_RASTER)
    parser.add_argument("--threads", default="1,2", help="comma-separated torch thread counts")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--crop", type=int, default=512, help="upscale the top-left N x N input pixels (0: all)")
    args = parser.parse_args()
    counts = [int(t) for t in args.threads.split(",")]
    import rasterio
    from rasterio.windows import Window, bounds

    with rasterio.open(args.raster) as src:
        n = min(args.crop or max(src.width, src.height), src.width, src.height)
        box = bounds(Window(0, 0, n, n), src.transform)
    extra = ["--bounds", *map(str, box)] if args.crop else []
    out_mp = (4 * n) ** 2 / 1e6
    print(f"# {args.raster.name}, {n} x {n} input ({out_mp:.1f} output MP), {os.cpu_count()} cores, "
          f"load average {os.getloadavg()[0]:.1f}")
    times: dict[int, list[tuple[float, float]]] = {t: [] for t in counts}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            for t in (counts if r % 2 == 0 else counts[::-1]):
                times[t].append(run_once(args.raster, Path(tmp) / f"out_{t}.tif", t, extra))
    print(f"# load average at the end {os.getloadavg()[0]:.1f}; medians of {args.rounds} rounds")
    print("| torch threads | wall s | CPU s | output MP/s (wall) |")
    print("|---|---|---|---|")
    for t in counts:
        wall = statistics.median(x[0] for x in times[t])
        cpu = statistics.median(x[1] for x in times[t])
        print(f"| {t} | {wall:.1f} | {cpu:.1f} | {out_mp / wall:.3f} |")


if __name__ == "__main__":
    main()
