"""Peak memory of ``upscale_file`` against the scene size (issue 3, benchmark 1).

    python benchmarks/upscale_memory.py [--sizes 1024,4096] [--workdir DIR]

Each size runs in a fresh process (so each peak is its own) on a synthetic uint8 RGB GeoTIFF,
with the nearest-x4 stand-in model (no model cost: the engine, I/O and GDAL only). Targets:
the largest scene's peak RSS within 1.25x of the smallest's, and under 2 GB.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

CHILD = r"""
import json, resource, sys, time
import torch
from rsisr.standins import NearestX4
from rsisr.upscale import upscale_file
t0 = time.perf_counter()
r = upscale_file(sys.argv[1], sys.argv[2], NearestX4(), device="cpu", overwrite=True)
print(json.dumps({"peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "seconds": time.perf_counter() - t0, "tiles": r.tiles, "out": [r.width, r.height]}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1024,4096")
    parser.add_argument("--workdir", default=None, help="Where inputs and outputs go (default: a temp dir).")
    args = parser.parse_args()
    sys.path.insert(0, os.path.dirname(__file__))
    from _scenes import make_scene

    workdir = args.workdir or tempfile.mkdtemp(prefix="rsisr_bench_mem_")
    results = {}
    for size in (int(s) for s in args.sizes.split(",")):
        src = make_scene(os.path.join(workdir, f"scene_{size}.tif"), size)
        dst = os.path.join(workdir, f"scene_{size}_x4.tif")
        out = subprocess.run([sys.executable, "-c", CHILD, src, dst], check=True, capture_output=True, text=True)
        results[size] = json.loads(out.stdout.strip().splitlines()[-1])
        r = results[size]
        print(f"{size}x{size} -> {r['out'][0]}x{r['out'][1]}: peak RSS {r['peak_rss_mb']:.0f} MB, "
              f"{r['seconds']:.1f} s, {r['tiles']} tiles, output {os.path.getsize(dst) / 2**20:.0f} MB", flush=True)
        os.remove(dst)
    sizes = sorted(results)
    small, large = results[sizes[0]]["peak_rss_mb"], results[sizes[-1]]["peak_rss_mb"]
    ratio = large / small
    print(f"ratio {sizes[-1]} / {sizes[0]}: {ratio:.3f} (target <= 1.25); largest peak {large:.0f} MB (target < 2048)")


if __name__ == "__main__":
    main()
