"""Training throughput (samples per second) of both stages, per preset, on this machine.

Runs the real training steps (``AETrainer.train_step``, ``LCMTrainer.train_step``) on random
crops, after warm-up steps, and prints one line per (preset, stage, phase). Stage 1 has two
phases: L1 only, then L1 + KL + adversarial (which adds the discriminator). Stage 2 uses a
freshly initialised autoencoder: its cost does not depend on the weights.

    python benchmarks/train_speed.py                              # small and paper, CPU, crop 256
    python benchmarks/train_speed.py --presets small --crop 128 --batch-size 8 --steps 5
    python benchmarks/train_speed.py --device cuda --precision bf16 --batch-size 16
    python benchmarks/train_speed.py --presets small --crop 128 --threads 1 --precision auto --channels-last

On a CPU shared with other jobs, compare ``--threads 1``: two threads per process oversubscribe
two cores and can run many times slower (``rsisr train --set run.threads=1``).
"""

from __future__ import annotations

import argparse
import json
import os
import time

import torch


def measure(trainer, batch: int, crop: int, steps: int, warmup: int, start_step: int) -> float:
    gen = torch.Generator().manual_seed(0)
    hr = torch.rand((batch, 3, crop, crop), generator=gen) * 2 - 1
    hr = trainer.prepare(hr)

    def sync() -> None:
        if trainer.device.type == "cuda":
            torch.cuda.synchronize(trainer.device)

    for i in range(warmup):
        trainer.train_step(hr, start_step + i)
    sync()
    t0, c0 = time.perf_counter(), time.process_time()
    for i in range(steps):
        trainer.train_step(hr, start_step + warmup + i)
    sync()
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    return steps * batch / wall, steps * batch / cpu


def main() -> None:
    from rsisr.api import build_autoencoder
    from rsisr.device import native_bf16, resolve_device, resolve_precision
    from rsisr.training.ae import AETrainer
    from rsisr.training.config import resolve
    from rsisr.training.lcm import LCMTrainer

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--presets", default="small,paper")
    p.add_argument("--stages", default="ae,lcm")
    p.add_argument("--crop", type=int, default=256)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--device", default="cpu")
    p.add_argument("--precision", default="fp32", help="fp32 | bf16 | fp16 | auto (bf16 where native)")
    p.add_argument("--channels-last", action="store_true", help="run.channels_last=true (default: CUDA only)")
    p.add_argument("--compile", action="store_true")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    p.add_argument("--json", action="store_true", help="One JSON object per line.")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    args.precision = resolve_precision(args.precision, device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"# device: {name}; crop {args.crop}, batch {args.batch_size}, precision {args.precision}, "
          f"native bf16 {native_bf16(device)}, channels_last {args.channels_last}, "
          f"torch {torch.__version__}; load average {os.getloadavg()[0]:.1f} (samples/s is wall-clock and drops "
          "when other jobs share the CPU; samples per CPU-second x threads estimates an idle machine)")
    for preset in args.presets.split(","):
        for stage in args.stages.split(","):
            flags = {"data.crop": args.crop, f"{stage}.batch_size": args.batch_size, f"{stage}.max_steps": 10**6,
                     "run.precision": args.precision, "run.compile": args.compile, "run.device": args.device,
                     "ae.disc_start": args.warmup + args.steps,
                     **({"run.channels_last": True} if args.channels_last else {})}
            cfg = resolve(stage, preset=preset, flags=flags)
            torch.manual_seed(0)
            if stage == "ae":
                trainer = AETrainer(cfg, device, 10**6)
                phases = [("L1", 0), ("L1+KL+GAN", args.warmup + args.steps)]
            else:
                trainer = LCMTrainer(cfg, device, build_autoencoder(cfg.model))
                phases = [("CT+KD", 0)]
            for phase, start in phases:
                rate, per_cpu_s = measure(trainer, args.batch_size, args.crop, args.steps, args.warmup, start)
                record = {"preset": preset, "stage": stage, "phase": phase, "crop": args.crop,
                          "batch": args.batch_size, "samples_per_s": round(rate, 3),
                          "hr_megapixels_per_s": round(rate * args.crop**2 / 1e6, 4),
                          "samples_per_cpu_s": round(per_cpu_s, 3)}
                if args.json:
                    print(json.dumps(record), flush=True)
                else:
                    print(f"{preset:6s} {stage:3s} {phase:10s} {rate:8.3f} samples/s "
                          f"({record['hr_megapixels_per_s']:.4f} HR Mpx/s; {per_cpu_s:.3f} samples per CPU-second)",
                          flush=True)
            del trainer


if __name__ == "__main__":
    main()
