"""Peak memory of ``upscale_file --ensemble N`` against a single sample (issue 15).

    python benchmarks/ensemble_memory.py [--size 2048] [--ensembles 1,8] [--workdir DIR]

Each run is a fresh process (so each peak is its own) on a synthetic size x size uint8 RGB
GeoTIFF, with the noise stand-in model (:class:`rsisr.standins.NoiseX4`: nearest x4 plus the
latent noise, so the samples differ and the std is not trivially 0; no model cost) and one torch
thread. Ensembles of more than one sample also write the ``--uncertainty`` raster. Target: the
peak RSS of N = 8 within 1.5x that of N = 1 (the accumulator has 7 channels instead of 3 and a
tile's samples share one batch: no N full-size buffers).
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
torch.set_num_threads(1)
from rsisr.standins import NoiseX4
from rsisr.upscale import upscale_file
n = int(sys.argv[3])
t0 = time.perf_counter()
r = upscale_file(sys.argv[1], sys.argv[2], NoiseX4(), device="cpu", overwrite=True, ensemble=n,
                 uncertainty=sys.argv[2].replace(".tif", "_std.tif") if n > 1 else None)
print(json.dumps({"peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "seconds": time.perf_counter() - t0, "tiles": r.tiles, "out": [r.width, r.height]}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=2048)
    parser.add_argument("--ensembles", default="1,8")
    parser.add_argument("--workdir", default=None, help="Where inputs and outputs go (default: a temp dir).")
    args = parser.parse_args()
    sys.path.insert(0, os.path.dirname(__file__))
    from _scenes import make_scene

    workdir = args.workdir or tempfile.mkdtemp(prefix="rsisr_bench_ens_")
    src = make_scene(os.path.join(workdir, f"scene_{args.size}.tif"), args.size)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    results = {}
    for n in (int(s) for s in args.ensembles.split(",")):
        dst = os.path.join(workdir, f"scene_{args.size}_n{n}.tif")
        out = subprocess.run([sys.executable, "-c", CHILD, src, dst, str(n)], check=True, capture_output=True,
                             text=True, env=env)
        r = results[n] = json.loads(out.stdout.strip().splitlines()[-1])
        std = dst.replace(".tif", "_std.tif")
        extra = f", uncertainty {os.path.getsize(std) / 2**20:.0f} MB" if os.path.exists(std) else ""
        print(f"N={n}: {args.size}x{args.size} -> {r['out'][0]}x{r['out'][1]}: peak RSS {r['peak_rss_mb']:.0f} MB, "
              f"{r['seconds']:.1f} s, {r['tiles']} tiles, output {os.path.getsize(dst) / 2**20:.0f} MB{extra}",
              flush=True)
        for path in (dst, std):
            if os.path.exists(path):
                os.remove(path)
    ns = sorted(results)
    base, top = results[ns[0]]["peak_rss_mb"], results[ns[-1]]["peak_rss_mb"]
    print(f"peak RSS N={ns[-1]} / N={ns[0]}: {top / base:.3f} (target <= 1.5)")


if __name__ == "__main__":
    main()
