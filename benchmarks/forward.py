"""Forward throughput (output megapixels per second) and parameter counts of each preset.

    python benchmarks/forward.py [--device auto] [--size 128] [--repeats 3] [--presets small,paper]

``--size`` is the LR side of the input (output = 4x); fp32 and bf16 (autocast) are both timed.
"""

from __future__ import annotations

import argparse
import time

import torch

import rsisr
from rsisr.device import autocast, resolve_device
from rsisr.noise import tile_noises


def bench(preset: str, device: torch.device, size: int, precision: str, repeats: int) -> float:
    torch.manual_seed(0)
    model = rsisr.build_model(preset).to(device).eval()
    lr = torch.rand(1, 3, size, size, device=device) * 2 - 1
    noises = [torch.from_numpy(n).to(device) for n in tile_noises(model.latent_shape, 0, 1, [(0, 0)], size, size)]
    with torch.no_grad(), autocast(device, precision):
        model(lr, noises)  # warm-up
        if device.type == "cuda":
            torch.cuda.synchronize()
        best = float("inf")
        for _ in range(repeats):
            t0 = time.perf_counter()
            model(lr, noises)
            if device.type == "cuda":
                torch.cuda.synchronize()
            best = min(best, time.perf_counter() - t0)
    return (4 * size) ** 2 / 1e6 / best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--presets", default="tiny,small,paper")
    args = parser.parse_args()
    device = resolve_device(args.device)
    print(f"device={device} threads={torch.get_num_threads()} torch={torch.__version__} "
          f"input={args.size}x{args.size} output={4 * args.size}x{4 * args.size}")
    print(f"{'preset':<8}{'inference params':>18}{'fp32 MP/s':>12}{'bf16 MP/s':>12}")
    for preset in args.presets.split(","):
        params = rsisr.describe(preset)["inference_params"]
        fp32 = bench(preset, device, args.size, "fp32", args.repeats)
        bf16 = bench(preset, device, args.size, "bf16", args.repeats)
        print(f"{preset:<8}{params:>18,}{fp32:>12.3f}{bf16:>12.3f}", flush=True)


if __name__ == "__main__":
    main()
