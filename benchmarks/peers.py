"""Speed against peers on the same machine and input: output megapixels per second, interleaved.

    python benchmarks/peers.py [--size 128] [--repeats 3] [--threads 1] [--precision fp32]
                               [--channels-last] [--ldm-steps 100] [--methods ...] [--json]

Every method super-resolves the same real LR crop (``--size`` pixels square, top left of
``--raster``, uint8 RGB) by 4x: our default model (bundled weights, single step, one tile), the
``paper`` preset, Real-ESRGAN's RRDBNet x4, SwinIR-light x4, a ``--ldm-steps`` DDIM sampler
around the ``paper`` preset's UNet (the cost shape of ESA's LDSR-S2), torch's bicubic and
``gdal_translate -outsize 400% 400% -r cubic`` on a GeoTIFF of the crop (a subprocess: its time
includes starting GDAL and writing the file; when ``gdal_translate`` is missing, rasterio's cubic
resampled read with ``out_shape`` stands in and the row says so). Peer architectures are written
from their papers (``_peers.py``) with random weights: the time does not depend on them.

Each method runs once to warm up (the sampler with 2 steps), then ``--repeats`` rounds run every
method once in turn, so all see the same load; a method stops repeating once ``--budget``
seconds are spent (at least one timed run). Reported: the median, output MP/s and the speed-up
of our default model over each method. Learned models run at ``--precision`` (autocast) and,
with ``--channels-last``, in that memory format; bicubic and GDAL are unaffected.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
DEFAULT_RASTER = HERE.parent.parent / "shared" / "data" / "geotiff" / "rasterio_cogeo_rgb_u8_3857_0.6m.tif"
METHODS = ("default", "paper", "rrdbnet", "swinir", "ldm", "bicubic", "gdal")


def read_crop(raster: Path, size: int, workdir: Path) -> tuple[torch.Tensor, Path]:
    """The top-left size x size of ``raster`` (first three bands, uint8) as (1, 3, s, s) in
    [-1, 1], and a GeoTIFF of exactly those pixels (same georeferencing) for GDAL."""
    import rasterio
    from rasterio.windows import Window

    with rasterio.open(raster) as src:
        if min(src.height, src.width) < size:
            raise SystemExit(f"{raster} is {src.width}x{src.height}; --size {size} does not fit")
        window = Window(0, 0, size, size)
        data = src.read([1, 2, 3], window=window)
        profile = dict(driver="GTiff", width=size, height=size, count=3, dtype=data.dtype, crs=src.crs,
                       transform=src.window_transform(window))
    path = workdir / "input.tif"
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
    if data.dtype != np.uint8:
        raise SystemExit(f"{raster} is {data.dtype}; give a uint8 raster")
    lr = torch.from_numpy(data.astype(np.float32) / 127.5 - 1.0)[None]
    return lr, path


def gdal_runner(src: Path, workdir: Path):
    """(label, fn) for a GDAL cubic x4: the ``gdal_translate`` CLI when present, else rasterio."""
    exe = shutil.which("gdal_translate")
    dst = workdir / "gdal_x4.tif"
    if exe:
        def run():
            subprocess.run([exe, "-q", "-outsize", "400%", "400%", "-r", "cubic", str(src), str(dst)], check=True)
        return "gdal_translate -r cubic", run

    import rasterio
    from rasterio.enums import Resampling

    def read():
        with rasterio.open(src) as ds:
            return ds.read(out_shape=(ds.count, 4 * ds.height, 4 * ds.width), resampling=Resampling.cubic)
    return "rasterio cubic read (no gdal_translate)", read


def build_methods(names, lr, args, workdir, input_tif):
    """name -> (label, parameters or None, fn, warm-up fn)."""
    import rsisr
    from _peers import LatentDiffusionSR, RRDBNet, SwinIR, count_params

    from rsisr.device import autocast
    from rsisr.imageops import bicubic_up
    from rsisr.noise import tile_noises

    device = torch.device("cpu")
    fmt = torch.channels_last if args.channels_last else torch.contiguous_format
    x = lr.contiguous(memory_format=fmt)

    def learned(module, call):
        module = module.eval().to(memory_format=fmt)

        def fn():
            with torch.inference_mode(), autocast(device, args.precision):
                return call(module)
        return fn

    def lcmsr(model):
        noises = [torch.from_numpy(n) for n in tile_noises(model.latent_shape, 0, 1, [(0, 0)], *lr.shape[-2:])]
        return learned(model, lambda m: m(x, noises, 1))

    methods = {}
    for name in names:
        torch.manual_seed(0)
        if name == "default":
            model = rsisr.load_model()
            fn = lcmsr(model)
            methods[name] = ("rsisr default (small, 1 step)", rsisr.describe("small")["inference_params"], fn, fn)
        elif name == "paper":
            model = rsisr.build_model("paper")
            fn = lcmsr(model)
            methods[name] = ("rsisr paper preset (1 step)", rsisr.describe("paper")["inference_params"], fn, fn)
        elif name == "rrdbnet":
            net = RRDBNet()
            fn = learned(net, lambda m: m(x))
            methods[name] = ("Real-ESRGAN RRDBNet x4", count_params(net), fn, fn)
        elif name == "swinir":
            net = SwinIR()
            fn = learned(net, lambda m: m(x))
            methods[name] = ("SwinIR-light x4", count_params(net), fn, fn)
        elif name == "ldm":
            net = LatentDiffusionSR("paper", args.ldm_steps)
            fn = learned(net, lambda m: m(x))
            warm = learned(net, lambda m: m(x, steps=2))
            methods[name] = (f"latent diffusion, {args.ldm_steps} DDIM steps (paper UNet)", count_params(net), fn, warm)
        elif name == "bicubic":
            def fn():
                with torch.inference_mode():
                    return bicubic_up(lr, 4)
            methods[name] = ("bicubic (torch)", 0, fn, fn)
        elif name == "gdal":
            label, fn = gdal_runner(input_tif, workdir)
            methods[name] = (label, 0, fn, fn)
        else:
            raise SystemExit(f"unknown method {name!r}; choose from {', '.join(METHODS)}")
    return methods


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--raster", type=Path, default=DEFAULT_RASTER, help="uint8 RGB GeoTIFF to crop the input from")
    parser.add_argument("--size", type=int, default=128, help="LR side of the input (output 4x)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--budget", type=float, default=120.0, help="seconds of timed runs per method at most")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1: a shared machine)")
    parser.add_argument("--precision", choices=["fp32", "bf16"], default="fp32", help="autocast of learned models")
    parser.add_argument("--channels-last", action="store_true", help="learned models in channels_last")
    parser.add_argument("--ldm-steps", type=int, default=100)
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    sys.path.insert(0, str(HERE))
    from rsisr.device import native_bf16

    names = [n for n in args.methods.split(",") if n]
    workdir = Path(tempfile.mkdtemp(prefix="rsisr_bench_peers_"))
    try:
        lr, input_tif = read_crop(args.raster, args.size, workdir)
        methods = build_methods(names, lr, args, workdir, input_tif)
        load0 = os.getloadavg()
        for name, (_, _, _, warm) in methods.items():
            warm()
        times: dict[str, list[float]] = {n: [] for n in methods}
        for _ in range(args.repeats):
            for name, (_, _, fn, _) in methods.items():
                if times[name] and sum(times[name]) >= args.budget:
                    continue
                t0 = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - t0)
        load1 = os.getloadavg()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    out_mp = (4 * args.size) ** 2 / 1e6
    ref = statistics.median(times["default"]) if "default" in times else None
    rows = []
    for name, (label, params, _, _) in methods.items():
        med = statistics.median(times[name])
        rows.append({"method": name, "label": label, "params": params, "median_s": med,
                     "runs_s": [round(t, 4) for t in times[name]], "output_mp_per_s": out_mp / med,
                     "default_speedup": med / ref if ref else None})
    record = {
        "machine": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
        "torch": torch.__version__, "native_bf16": native_bf16(torch.device("cpu")),
        "precision": args.precision, "channels_last": args.channels_last, "input": str(args.raster),
        "input_size": args.size, "output_size": 4 * args.size, "repeats": args.repeats,
        "load_average_start": load0, "load_average_end": load1, "rows": rows,
    }
    if args.json:
        print(json.dumps(record))
        return
    print(f"# CPU, {record['threads']} torch thread(s), torch {torch.__version__}, native bf16 "
          f"{record['native_bf16']}; learned models {args.precision}{', channels_last' if args.channels_last else ''}; "
          f"input {args.size}x{args.size} crop of {args.raster.name} -> {4 * args.size}x{4 * args.size}; "
          f"median of {args.repeats} interleaved rounds; load average {load0[0]:.1f} -> {load1[0]:.1f} "
          "(absolute MP/s depend on the load; the ratios were measured side by side)")
    print(f"{'method':<52}{'params (M)':>11}{'median s':>10}{'out MP/s':>10}{'default is x faster':>21}")
    for r in rows:
        speed = f"{r['default_speedup']:.3g}" if r["default_speedup"] else "-"
        print(f"{r['label']:<52}{r['params'] / 1e6:>11.2f}{r['median_s']:>10.3f}{r['output_mp_per_s']:>10.3f}"
              f"{speed:>21}")


if __name__ == "__main__":
    main()
