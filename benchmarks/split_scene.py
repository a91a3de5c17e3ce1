"""One scene split over a Dask LocalCluster (issue 16): wall time with 1 and 2 workers against the
single-process run, what the split adds (the repeated halo tiles, each part's reading, blending,
converting and writing, the client's assembly) as a share of the model's time, and an estimate
for a 43,920-pixel-square output on 1, 8 and 64 workers from the measured per-part costs.

    python benchmarks/split_scene.py [--size 2048] [--threads 1] [--workers 1,2] [--tile 192] [--overlap 16]
        [--batch-size N] [--gpu-tile-ms 4]

The default model at ``--precision auto``; one torch thread per worker (and for the single run).
The load average is printed at the start and the end: on a shared machine wall times follow it.
Every split output is checked against the single-process output, pixel for pixel.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time

from rsisr.defaults import DEFAULT_OVERLAP, DEFAULT_TILE

#: The issue's example: a Sentinel-2 tile (10,980 px at 10 m) upscaled to 2.5 m.
BIG_LR = 10_980


def _load() -> str:
    return "{:.1f} {:.1f} {:.1f}".format(*os.getloadavg())


def _same_pixels(a: str, b: str) -> bool:
    import numpy as np
    import rasterio
    from rasterio.windows import Window

    with rasterio.open(a) as x, rasterio.open(b) as y:
        for r in range(0, x.height, 1024):
            w = Window(0, r, x.width, min(1024, x.height - r))
            if not np.array_equal(x.read(window=w), y.read(window=w)):
                return False
            if not np.array_equal(x.dataset_mask(window=w), y.dataset_mask(window=w)):
                return False
    return True


def run_single(src: str, dst: str, threads: int, tiling: dict) -> dict:
    import torch

    from rsisr.upscale import upscale_file

    torch.set_num_threads(threads)
    t0, c0 = time.perf_counter(), time.process_time()
    result = upscale_file(src, dst, device="cpu", overwrite=True, **tiling)
    return {"wall": time.perf_counter() - t0, "cpu": time.process_time() - c0, "tiles": result.tiles}


def run_split(src: str, dst: str, workers: int, threads: int, tiling: dict) -> dict:
    from rsisr.distributed import upscale_distributed

    t0 = time.perf_counter()
    r = upscale_distributed(src, dst, workers=workers, threads_per_worker=threads, device="cpu", overwrite=True,
                            **tiling)
    model = r.model_seconds
    other = r.part_seconds - model
    return {"wall": time.perf_counter() - t0, "parts": len(r.parts), "tiles": r.tiles, "model": model,
            "cpu": sum(s.cpu_seconds for s in r.stats), "part_other": other, "assembly": r.assembly_seconds,
            "phases": r.phases}


def report(single: dict, splits: dict[int, dict]) -> None:
    """Print the measured table and the overhead as a share of the model's time."""
    print(f"\nsingle process: {single['wall']:.1f} s wall, {single['cpu']:.1f} s CPU, {single['tiles']} tiles")
    print("| workers | wall s | x single | parts | tiles (+halo) | model s | part CPU s | part I/O+blend s | "
          "assembly s | plan s | cluster start s | parts phase s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for w, m in splits.items():
        halo = m["tiles"] - single["tiles"]
        ph = m["phases"]
        print(f"| {w} | {m['wall']:.1f} | {single['wall'] / m['wall']:.2f} | {m['parts']} | {m['tiles']} (+{halo}) | "
              f"{m['model']:.1f} | {m['cpu']:.1f} | {m['part_other']:.1f} | {m['assembly']:.1f} | {ph['plan']:.1f} | "
              f"{ph['cluster']:.1f} | {ph['parts']:.1f} |")
    print("\nper-part overhead as a share of the model's time:")
    for w, m in splits.items():
        per_tile = m["model"] / m["tiles"]
        halo = (m["tiles"] - single["tiles"]) * per_tile
        base = single["tiles"] * per_tile
        print(f"  {w} worker(s): halo {100 * halo / base:.1f} %, part read+fill+blend+convert+write "
              f"{100 * m['part_other'] / base:.1f} %, assembly {100 * m['assembly'] / base:.1f} %, "
              f"total {100 * (halo + m['part_other'] + m['assembly']) / base:.1f} %")


def costs_from(single: dict, splits: dict[int, dict], hr_mpx: float) -> dict:
    """Per-unit costs for :func:`estimate`, from the least load-sensitive measurements: the single
    run's CPU seconds per tile; the parts' non-model time as its measured share of the model's
    time (mean over the split runs), on that CPU basis; the slowest measured assembly rate."""
    tile_s = single["cpu"] / single["tiles"]
    share = sum(m["part_other"] / m["model"] for m in splits.values()) / len(splits)
    return {"tile_s": tile_s, "other_s_per_mpx": share * tile_s * single["tiles"] / hr_mpx,
            "assembly_s_per_mpx": max(m["assembly"] / hr_mpx for m in splits.values())}


def estimate(costs: dict, gpu_tile_ms: float, tile: int, overlap: int) -> None:
    """Wall time of a BIG_LR-square input (4x out) on 1, 8 and 64 workers: the automatic part
    grid, each part costing its tiles x the tile time plus its pixels x the per-pixel part
    overhead, scheduled largest first (:func:`rsisr.distributed.parts.makespan`), plus the
    client's assembly. Tile time: this CPU's (measured) and an assumed GPU's (not measured)."""
    from rsisr.distributed.parts import choose_rows, makespan, panel_columns, split
    from rsisr.upscale.engine import PANEL_WIDTH

    shape, window = (BIG_LR, BIG_LR), (0, 0, BIG_LR, BIG_LR)
    panel = panel_columns(512, PANEL_WIDTH)
    out_mpx = (4 * BIG_LR) ** 2 / 1e6
    assembly = costs["assembly_s_per_mpx"] * out_mpx
    print(f"\nestimate for {BIG_LR} x {BIG_LR} in, {4 * BIG_LR} x {4 * BIG_LR} out ({out_mpx:.0f} Mpx), tile {tile}, "
          f"overlap {overlap}: assembly {_hours(assembly)} ({1 / costs['assembly_s_per_mpx']:.1f} Mpx/s), part overhead "
          f"{costs['other_s_per_mpx']:.3f} s per output Mpx, CPU tile {costs['tile_s']:.3f} s (all measured on this CPU)")
    print("| workers | parts | tiles | model time per tile | parts phase | + assembly = wall |")
    print("|---|---|---|---|---|---|")
    for label, tile_s in (("CPU, measured", costs["tile_s"]), ("GPU, assumed", gpu_tile_ms / 1000)):
        for w in (1, 8, 64):
            rows = choose_rows(shape, window, tile, overlap, panel, w)
            parts = split(shape, window, tile, overlap, panel, rows)
            cost = [p.tiles * tile_s + 16 * p.height * p.width / 1e6 * costs["other_s_per_mpx"] for p in parts]
            span = makespan(cost, w)
            print(f"| {w} | {len(parts)} | {sum(p.tiles for p in parts)} | {1000 * tile_s:.0f} ms ({label}) | "
                  f"{_hours(span)} | {_hours(span + assembly)} |")


def _hours(seconds: float) -> str:
    return f"{seconds / 3600:.2f} h" if seconds >= 3600 else f"{seconds / 60:.1f} min"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=2048, help="input side (pixels)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per worker and for the single run")
    parser.add_argument("--workers", default="1,2", help="worker counts to run, comma-separated")
    parser.add_argument("--tile", type=int, default=DEFAULT_TILE, help="tile (input pixels), as rsisr upscale")
    parser.add_argument("--overlap", type=int, default=DEFAULT_OVERLAP)
    parser.add_argument("--batch-size", type=int, default=None, help="tiles per model call (default: by device)")
    parser.add_argument("--gpu-tile-ms", type=float, default=4.0,
                        help="assumed GPU model time per 128-pixel tile for the estimate (not measured here)")
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    sys.path.insert(0, os.path.dirname(__file__))
    from _scenes import make_scene

    tiling = dict(tile=args.tile, overlap=args.overlap, batch_size=args.batch_size)

    print(f"load average at start: {_load()} ({os.cpu_count()} cores)")
    work = tempfile.mkdtemp(prefix="rsisr_bench_dist_")
    try:
        src = make_scene(os.path.join(work, "scene.tif"), args.size)
        single_out = os.path.join(work, "single.tif")
        single = run_single(src, single_out, args.threads, tiling)
        print(f"single done in {single['wall']:.1f} s, load {_load()}")
        splits = {}
        for w in (int(v) for v in args.workers.split(",")):
            out = os.path.join(work, f"split{w}.tif")
            splits[w] = run_split(src, out, w, args.threads, tiling)
            splits[w]["identical"] = _same_pixels(single_out, out)
            print(f"{w} worker(s) done, identical to the single run: {splits[w]['identical']}, load {_load()}")
        report(single, splits)
        estimate(costs_from(single, splits, (4 * args.size) ** 2 / 1e6), args.gpu_tile_ms, args.tile, args.overlap)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"\nload average at the end: {_load()}")


if __name__ == "__main__":
    main()
