"""Model time of an ensemble against a single sample (issue 15).

    python benchmarks/ensemble_speed.py [--data ../shared/data/val] [--ensembles 1,4] [--rounds 3] [--limit 8]

The default model as ``rsisr evaluate`` runs it (each image one tile, precision auto, one torch
thread) on the first ``--limit`` images of ``--data``; in every round each ensemble size runs
over the same images in turn (interleaved, so the machine's load affects them alike). Prints
the median wall and CPU seconds per image of each size and their ratio to the first.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "val"))
    parser.add_argument("--ensembles", default="1,4")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--limit", type=int, default=8)
    args = parser.parse_args()
    import torch

    torch.set_num_threads(1)
    import rsisr
    from rsisr.device import resolve_precision
    from rsisr.evaluation.evaluate import model_runner, read_hr
    from rsisr.imageops import degrade, list_images, to_model_range

    cpu = torch.device("cpu")
    model = rsisr.load_model().eval()
    sizes = [int(n) for n in args.ensembles.split(",")]
    runners = {n: model_runner(model, 1, 0, cpu, n) for n in sizes}
    images = [degrade(to_model_range(read_hr(p) / 255.0)) for p in list_images(Path(args.data), (".png",))][:args.limit]
    print(f"{len(images)} images of {tuple(images[0].shape[-2:])} LR px, precision {resolve_precision('auto', cpu)}, "
          f"load average {os.getloadavg()[0]:.1f}", flush=True)
    with torch.inference_mode():
        for run in runners.values():  # warm-up
            run(images[0])
        wall = {n: [] for n in sizes}
        cpu_s = {n: [] for n in sizes}
        for _ in range(args.rounds):
            for n, run in runners.items():
                w0, c0 = time.perf_counter(), time.process_time()
                for lr in images:
                    run(lr)
                wall[n].append((time.perf_counter() - w0) / len(images))
                cpu_s[n].append((time.process_time() - c0) / len(images))
    base_w, base_c = statistics.median(wall[sizes[0]]), statistics.median(cpu_s[sizes[0]])
    for n in sizes:
        w, c = statistics.median(wall[n]), statistics.median(cpu_s[n])
        print(f"N={n}: {w:.3f} s wall, {c:.3f} s CPU per image; x{w / base_w:.2f} wall, x{c / base_c:.2f} CPU "
              f"against N={sizes[0]}")
    print(f"load average at the end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
