"""Rows like the paper's Table II: average inference time per image and parameters, every preset.

    python benchmarks/table2.py [--device auto] [--size 600] [--repeats 10] [--budget 60]
                                [--presets tiny,small,paper] [--steps 1] [--precision fp32]

``--size`` is the output side (the paper times 600x600 outputs, i.e. 150x150 LR inputs). Runtime
is the mean wall time of one forward pass (batch 1, untrained weights: the time does not depend
on their values) after one warm-up pass, synchronised on CUDA, exactly as ``rsisr evaluate``
times it. A preset stops repeating once ``--budget`` seconds are spent (at least one timed run),
so the paper preset finishes on a CPU. Parameters are those used at inference (decoder + CondNet +
UNet; the encoder only trains the autoencoder), as in ``rsisr info``.
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import numpy as np
import torch

import rsisr
from rsisr.device import autocast, resolve_device
from rsisr.evaluation.evaluate import timed
from rsisr.imageops import bicubic_up
from rsisr.noise import tile_noises

PAPER_ROW = ("LCMSR, paper Table II (GPU)", 0.0708, 31.25)


def time_runs(fn, device: torch.device, repeats: int, budget: float) -> list[float]:
    """Warm up once, then time ``fn`` up to ``repeats`` times or until ``budget`` seconds are spent."""
    timed(fn, device)
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < repeats and (not times or time.perf_counter() - start < budget):
        times.append(timed(fn, device)[1])
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--size", type=int, default=600, help="output side (multiple of 4)")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--budget", type=float, default=60.0, help="seconds of timed runs per preset at most")
    parser.add_argument("--presets", default="tiny,small,paper")
    parser.add_argument("--steps", type=int, default=1)
    parser.add_argument("--precision", choices=["fp32", "bf16", "fp16"], default="fp32")
    args = parser.parse_args()
    if args.size % 4:
        parser.error("--size must be a multiple of 4")

    device = resolve_device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine()
    lr_side = args.size // 4
    load = " load=%.1f,%.1f,%.1f" % os.getloadavg() if hasattr(os, "getloadavg") else ""
    print(f"device={device} ({name}) threads={torch.get_num_threads()} torch={torch.__version__} "
          f"output={args.size}x{args.size} (LR {lr_side}x{lr_side}) steps={args.steps} {args.precision}{load}")
    print(f"{'method':<30}{'runtime (s)':>13}{'std (s)':>10}{'# param. (M)':>14}{'runs':>6}")

    lr = torch.rand(1, 3, lr_side, lr_side, generator=torch.Generator().manual_seed(0)).mul(2).sub(1).to(device)
    with torch.no_grad():
        times = time_runs(lambda: bicubic_up(lr), device, args.repeats, args.budget)
        print(f"{'Bicubic':<30}{np.mean(times):>13.4f}{np.std(times):>10.4f}{0.0:>14.2f}{len(times):>6}", flush=True)
        for preset in args.presets.split(","):
            torch.manual_seed(0)
            model = rsisr.build_model(preset).to(device).eval()
            noises = [torch.from_numpy(n).to(device) for n in tile_noises(
                model.latent_shape, 0, args.steps, [(0, 0)] * lr.shape[0], *lr.shape[-2:])]

            def forward():
                with autocast(device, args.precision):
                    return model(lr, noises, args.steps)

            times = time_runs(forward, device, args.repeats, args.budget)
            params = rsisr.describe(preset)["inference_params"] / 1e6
            print(f"{'LCMSR ' + preset:<30}{np.mean(times):>13.4f}{np.std(times):>10.4f}{params:>14.2f}"
                  f"{len(times):>6}", flush=True)
            del model, noises
            if device.type == "cuda":
                torch.cuda.empty_cache()
    label, runtime, params = PAPER_ROW
    print(f"{label:<30}{runtime:>13.4f}{'':>10}{params:>14.2f}{'':>6}")


if __name__ == "__main__":
    main()
