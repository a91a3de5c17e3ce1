"""Peak memory of the in-memory API (``model.upscale`` / :func:`rsisr.array_io.upscale_image`)
against the image size (issue 12).

    python benchmarks/array_memory.py [--sizes 512,2048] [--model tiny|default|nearest]

Each size runs in a fresh process on a random uint8 (H, W, 3) array. Reported: peak RSS, the
input and result arrays' own bytes, and the rest (peak - baseline before the call - input -
result): the engine's working memory, which should not grow with the image. Before the engine
rewrite a 512 x 512 input peaked at 2.2 GB (the model ran untiled).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

CHILD = r"""
import json, resource, sys, time
import numpy as np, torch
torch.set_num_threads(1)
size, which = int(sys.argv[1]), sys.argv[2]
if which == "nearest":
    from rsisr.standins import NearestX4
    model = NearestX4()
elif which == "tiny":
    import rsisr
    torch.manual_seed(0)
    model = rsisr.build_model("tiny").eval()
else:
    import rsisr
    model = rsisr.load_model()
from rsisr.array_io import upscale_image
image = np.random.default_rng(0).integers(0, 256, (size, size, 3), dtype=np.uint8)
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
t0 = time.perf_counter()
out = upscale_image(model, image, seed=0)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"size": size, "peak_rss_mb": round(peak, 1), "baseline_mb": round(base, 1),
                  "input_mb": round(image.nbytes / 2**20, 1), "result_mb": round(out.nbytes / 2**20, 1),
                  "working_mb": round(peak - base - out.nbytes / 2**20, 1),
                  "seconds": round(time.perf_counter() - t0, 1)}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="512,2048")
    parser.add_argument("--model", default="tiny", choices=["tiny", "default", "nearest"])
    args = parser.parse_args()
    rows = []
    for size in (int(s) for s in args.sizes.split(",")):
        out = subprocess.run([sys.executable, "-c", CHILD, str(size), args.model], check=True,
                             capture_output=True, text=True).stdout
        rows.append(json.loads(out.strip().splitlines()[-1]))
        print(json.dumps(rows[-1]), flush=True)
    first, last = rows[0], rows[-1]
    print(f"working memory {first['size']} -> {last['size']}: {first['working_mb']} MB -> {last['working_mb']} MB "
          f"({last['working_mb'] / max(first['working_mb'], 1e-9):.2f}x); result arrays excluded")


if __name__ == "__main__":
    main()
