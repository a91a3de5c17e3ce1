"""Engine overhead: ``upscale_file`` end to end against the model's bare forward passes over the
same tiles (issue 3, benchmark 2; target: 15 % or less).

    python benchmarks/upscale_overhead.py [--preset small] [--size 512] [--device auto] [--repeats 3] [--threads N]

The bare time runs exactly the engine's model calls (same tiles, batches, shapes and noise,
inputs already on the device); the engine time adds reading, scaling, noise, blending,
conversion, writing and the temporary-file rename. The best of ``--repeats`` interleaved runs of
each, as wall time and (CPU runs) as this process's CPU time, which a busy shared machine
disturbs less.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="small")
    parser.add_argument("--size", type=int, default=512, help="LR side of the synthetic uint8 RGB scene")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    sys.path.insert(0, os.path.dirname(__file__))
    from _scenes import bare_forward_seconds, make_scene

    import rsisr
    from rsisr.upscale import TiledUpscaler, upscale_file

    torch.manual_seed(0)
    model = rsisr.build_model(args.preset).eval()
    workdir = tempfile.mkdtemp(prefix="rsisr_bench_overhead_")
    src = make_scene(os.path.join(workdir, "scene.tif"), args.size)
    dst = os.path.join(workdir, "scene_x4.tif")
    engine = TiledUpscaler(model, device=args.device)
    shape, window = (args.size, args.size), (0, 0, args.size, args.size)
    bare_forward_seconds(engine, shape, window)  # warm-up (allocator, kernels)
    bare, full = [], []
    for _ in range(args.repeats):
        bare.append(bare_forward_seconds(engine, shape, window))
        t0, c0 = time.perf_counter(), time.process_time()
        result = upscale_file(src, dst, model, device=args.device, overwrite=True)
        full.append((time.perf_counter() - t0, time.process_time() - c0))
    b, f = min(t for t, _ in bare), min(t for t, _ in full)
    bc, fc = min(c for _, c in bare), min(c for _, c in full)
    print(f"preset={args.preset} device={engine.device} threads={torch.get_num_threads()} "
          f"scene={args.size}x{args.size} tiles={result.tiles} tile={engine.tile} overlap={engine.overlap} "
          f"batch={engine.batch_size}")
    print(f"wall: bare forward {b:.2f} s (runs: {', '.join(f'{t:.2f}' for t, _ in bare)}), "
          f"upscale_file {f:.2f} s (runs: {', '.join(f'{t:.2f}' for t, _ in full)}): overhead {100 * (f / b - 1):.1f} %")
    if engine.device.type == "cpu":
        print(f"cpu:  bare forward {bc:.2f} s, upscale_file {fc:.2f} s: overhead {100 * (fc / bc - 1):.1f} %")
    print("target: overhead <= 15 %")


if __name__ == "__main__":
    main()
