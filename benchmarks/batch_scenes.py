"""Scenes per minute of ``rsisr batch`` with 1 and 2 local workers.

    python benchmarks/batch_scenes.py MODEL.safetensors [--scenes DIR] [--pattern GLOB]

Default scenes: the real rasters in ../shared/data/geotiff. Each run writes to a fresh
temporary folder, so nothing is skipped.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from rsisr.batch import upscale_folder

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("--scenes", default=str(ROOT.parent / "shared" / "data" / "geotiff"))
    parser.add_argument("--pattern", default="*.tif")
    parser.add_argument("--workers", default="1,2")
    args = parser.parse_args()
    for n in (int(w) for w in args.workers.split(",")):
        with tempfile.TemporaryDirectory() as out:
            t0 = time.perf_counter()
            report = upscale_folder(args.scenes, out, args.model, pattern=args.pattern, workers=n,
                                    threads_per_worker=max(1, 2 // n))
            dt = time.perf_counter() - t0
        c = report.counts
        print(f"workers={n}: {c['done']} done, {c['failed']} failed in {dt:.1f} s -> "
              f"{60 * c['done'] / dt:.2f} scenes/min", flush=True)


if __name__ == "__main__":
    main()
