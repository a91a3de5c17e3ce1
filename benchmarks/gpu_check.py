"""The Python parts of ``benchmarks/gpu_check.sh`` (one part per call, each writing one JSON file).

    python benchmarks/gpu_check.py table2  --out t.json [--compile] [--channels-last] [--dry-run]
    python benchmarks/gpu_check.py upscale --out u.json [--size 4096] [--batch-size 4] [--dry-run]
    python benchmarks/gpu_check.py merge   --out all.json PART.json... [--meta KEY=VALUE ...]

``table2``: the paper's Table II on the device: mean seconds per 600x600 output (150x150 LR,
batch 1, one step) of the ``small`` and ``paper`` presets in fp32, bf16 and fp16 autocast, eager
or (``--compile``) ``torch.compile``d, whose warm-up is reported apart; ``--channels-last``
puts the weights (and so the activations) in channels_last. The file is rewritten
after every row, so a part cut short by its timeout keeps what it measured.
``upscale``: ``upscale_file`` of a synthetic ``--size`` square uint8 RGB scene with the default
model at ``--precision`` (``auto``: bf16 where the device runs it natively): wall seconds,
output MP/s, peak device memory (allocated and reserved).
``merge``: one JSON object from the parts (JSON files, JSON-lines files as ``train_speed.py
--json`` writes them, pytest ``--junitxml`` files), keyed by file name without extension; a
missing part is null.

``--dry-run`` (or ``RSISR_GPU_CHECK_DRY_RUN=1``) runs on the CPU at tiny sizes, to check the
script where there is no GPU; there ``--compile`` uses Dynamo's ``eager`` backend (tracing
without inductor's code generation, which takes minutes on a CPU).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent


def dry_run_requested(flag: bool) -> bool:
    return flag or os.environ.get("RSISR_GPU_CHECK_DRY_RUN", "") not in ("", "0")


def device_for(dry: bool) -> torch.device:
    if dry:
        torch.set_num_threads(1)
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise SystemExit("no CUDA device: run with --dry-run (RSISR_GPU_CHECK_DRY_RUN=1) to check the script on a CPU")
    return torch.device("cuda")


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def write(path: Path, data) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1))
    tmp.replace(path)


def table2(args) -> None:
    import rsisr
    from rsisr.device import autocast
    from rsisr.noise import tile_noises

    dry = dry_run_requested(args.dry_run)
    device = device_for(dry)
    size = 64 if dry else args.size  # output side
    presets = ["tiny"] if dry else args.presets.split(",")
    precisions = ["fp32", "bf16"] if dry else ["fp32", "bf16", "fp16"]
    repeats = 2 if dry else args.repeats
    lr = (torch.rand(1, 3, size // 4, size // 4, generator=torch.Generator().manual_seed(0)) * 2 - 1).to(device)
    models = {}
    for preset in presets:
        torch.manual_seed(0)
        model = rsisr.build_model(preset).to(device).eval()
        if args.channels_last:
            model = model.to(memory_format=torch.channels_last)
        noises = [torch.from_numpy(n).to(device) for n in tile_noises(model.latent_shape, 0, 1, [(0, 0)], *lr.shape[-2:])]
        models[preset] = (model, noises)
    if args.compile:  # the most useful rows first: a part cut short by its timeout keeps them
        precisions = sorted(precisions, key=["bf16", "fp32", "fp16"].index)
    rows = []
    for precision in precisions:
        if precision == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
            continue
        for preset, (model, noises) in models.items():
            net = model
            if args.compile:
                torch._dynamo.reset()
                # dry run: Dynamo's tracing only (the eager backend); inductor's CPU build takes minutes
                net = torch.compile(model, backend="eager" if dry else "inductor")

            def forward():
                with torch.inference_mode(), autocast(device, precision):
                    return net(lr, noises, 1)

            sync(device)
            t0 = time.perf_counter()
            forward()  # warm-up (compilation, cuDNN, allocator)
            sync(device)
            warmup = time.perf_counter() - t0
            times = []
            for _ in range(repeats):
                t0 = time.perf_counter()
                forward()
                sync(device)
                times.append(time.perf_counter() - t0)
            rows.append({"preset": preset, "precision": precision, "compile": bool(args.compile),
                         "channels_last": bool(args.channels_last),
                         "output": f"{size}x{size}", "mean_s": statistics.mean(times), "min_s": min(times),
                         "std_s": statistics.pstdev(times), "runs": repeats, "warmup_s": warmup,
                         "inference_params": rsisr.describe(preset)["inference_params"]})
            print(json.dumps(rows[-1]), flush=True)
            write(args.out, {"device": str(device), "dry_run": dry, "rows": rows})
    write(args.out, {"device": str(device), "dry_run": dry, "rows": rows})


def upscale(args) -> None:
    sys.path.insert(0, str(HERE))
    from _scenes import make_scene

    from rsisr.device import resolve_precision
    from rsisr.upscale import upscale_file

    dry = dry_run_requested(args.dry_run)
    device = device_for(dry)
    size = 96 if dry else args.size
    precision = resolve_precision(args.precision, device)
    workdir = Path(tempfile.mkdtemp(prefix="rsisr_gpu_check_", dir=args.workdir))
    t0 = time.perf_counter()
    src = make_scene(workdir / "scene.tif", size)
    make_s = time.perf_counter() - t0
    dst = workdir / "scene_x4.tif"
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    t0 = time.perf_counter()
    result = upscale_file(src, dst, None, device=device, precision=precision, batch_size=args.batch_size,
                          co=["NUM_THREADS=ALL_CPUS"], overwrite=True)
    sync(device)
    seconds = time.perf_counter() - t0
    record = {"device": str(device), "dry_run": dry, "input": f"{size}x{size} synthetic uint8 RGB",
              "output": f"{result.width}x{result.height}", "precision": precision, "batch_size": args.batch_size,
              "tiles": result.tiles, "seconds": seconds, "output_mp_per_s": result.width * result.height / 1e6 / seconds,
              "make_scene_s": make_s, "output_bytes": dst.stat().st_size}
    if device.type == "cuda":
        record["peak_allocated_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
        record["peak_reserved_gib"] = torch.cuda.max_memory_reserved(device) / 2**30
    for p in workdir.iterdir():
        p.unlink()
    workdir.rmdir()
    print(json.dumps(record), flush=True)
    write(args.out, record)


def junit_summary(path: Path) -> dict:
    """Counts and per-test outcomes of a pytest ``--junitxml`` file."""
    import xml.etree.ElementTree as ET

    suite = ET.parse(path).getroot()
    suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
    tests = {}
    for case in suite.iter("testcase"):
        outcome = "passed"
        for tag in ("failure", "error", "skipped"):
            node = case.find(tag)
            if node is not None:
                outcome = {"failure": "failed", "error": "error", "skipped": "skipped"}[tag]
                tests[case.get("name")] = {"outcome": outcome, "message": (node.get("message") or "")[:500]}
                break
        else:
            tests[case.get("name")] = {"outcome": outcome, "seconds": float(case.get("time", 0))}
    counts = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
    return {**counts, "seconds": float(suite.get("time", 0)), "cases": tests}


def merge(args) -> None:
    merged: dict = {"meta": dict(kv.split("=", 1) for kv in args.meta)}
    for name in args.parts:
        path = Path(name)
        if not path.is_file() or path.stat().st_size == 0:
            merged[path.stem] = None
            continue
        if path.suffix == ".xml":
            merged[path.stem] = junit_summary(path)
            continue
        text = path.read_text()
        try:
            merged[path.stem] = json.loads(text)
        except json.JSONDecodeError:  # JSON lines (train_speed.py --json), skipping comments and partial lines
            rows = []
            for line in text.splitlines():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError:
                    pass
            merged[path.stem] = rows
    write(args.out, merged)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("part", choices=["table2", "upscale", "merge"])
    parser.add_argument("parts", nargs="*", help="merge: the part files")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--dry-run", action="store_true", help="CPU, tiny sizes (also RSISR_GPU_CHECK_DRY_RUN=1)")
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--channels-last", action="store_true", help="table2: model weights in channels_last")
    parser.add_argument("--presets", default="small,paper")
    parser.add_argument("--size", type=int, default=None, help="table2: output side (600); upscale: LR side (4096)")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--batch-size", type=int, default=4, help="upscale: tiles per batch (the CLI's default 4)")
    parser.add_argument("--workdir", default=None, help="upscale: where the scene is written (default: the temp folder)")
    parser.add_argument("--meta", action="append", default=[], help="merge: KEY=VALUE to record")
    args = parser.parse_intermixed_args()
    if args.size is None:
        args.size = 600 if args.part == "table2" else 4096
    {"table2": table2, "upscale": upscale, "merge": merge}[args.part](args)


if __name__ == "__main__":
    main()
