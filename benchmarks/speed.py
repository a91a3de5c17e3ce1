"""CPU speed of the default model: end to end against the bare forward, FLOPs against the
measured peak, and which inference settings pay on this CPU, side by side in one run.

    python benchmarks/speed.py [--raster PATH] [--crop N] [--repeats 3] [--threads 1]
                               [--candidates fp32,fp32-cl,bf16,bf16-cl,int8,int8-cl] [--compile]
                               [--val DIR [--val-limit N] | --no-quality] [--metric-weights DIR]
                               [--no-sweep] [--no-e2e] [--json]

Sections, all in one process with ``--threads`` torch threads (default 1):

1. **Peak**: the best of a few runs of a 1024^3 matmul and of a 3x3 64->64 convolution
   (channels_last, batch 4 of 128x128) in fp32 and in bf16: what this CPU reaches for the kind of
   work the model does.
2. **FLOPs** of the default model per output pixel (``torch.utils.flop_counter``: convolutions and
   matrix products) for one engine tile, and per scene output pixel once the tile overlap is
   counted.
3. **Candidates**: the bare forward of the default model over one batch of the engine's real
   tiles (4 tiles of 128x128 from the raster), interleaved repeats of each setting: fp32 eager
   (today's engine), channels_last (``-cl``: weights and input), bf16 autocast, int8 post-training
   static quantization of every convolution through torch's x86 quantized backend (eager mode,
   calibrated on other tiles of the raster; dynamic quantization does not cover convolutions),
   and with ``--compile`` a ``torch.compile`` of the candidates in ``--compile-of`` (its warm-up
   is reported apart). Each gets its median wall and CPU time, output MP/s, speed-up over fp32,
   share of the peak and its difference from the fp32 output (in 1/255 units).
4. **Quality** of every candidate on ``--val`` (default ``../shared/data/val``) as ``rsisr
   evaluate`` scores it (seed 0, one tile per image, 8-bit output): PSNR and, with metric weights,
   LPIPS, and their differences from fp32 (bar: within 0.02 dB and 0.002). The best candidate is
   the fastest by CPU time among those within the bar.
5. **Tile and batch** (``--no-sweep`` skips it): the best candidate over tiles 96-256 and
   batches 1 and 4, as new scene output MP per CPU-second (the overlap removed).
6. **End to end**: ``upscale_file`` of the raster (or its top-left ``--crop``), today's fp32 and
   the best candidate's settings (a model object carrying them; the engine is unchanged), also at
   the sweep's best tile and batch when they differ from today's, next to
   the bare fp32 eager forward over exactly the engine's tiles (``_scenes.bare_forward_seconds``), interleaved.

With one torch thread, this process's CPU time leaves out the time spent waiting for a core on a
shared machine, so ratios of CPU times are the steadier figures; both are printed.
Absolute MP/s depend on the machine's load (printed); ratios measured side by side do much less.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

HERE = Path(__file__).resolve().parent
SHARED = HERE.parent.parent / "shared" / "data"
DEFAULT_RASTER = SHARED / "geotiff" / "rasterio_cogeo_rgb_u8_3857_0.6m.tif"
CANDIDATES = ("fp32", "fp32-cl", "bf16", "bf16-cl", "int8", "int8-cl")


# ---------------------------------------------------------------------------------------------
# Model variants
# ---------------------------------------------------------------------------------------------


class ChannelsLast(nn.Module):
    """``model`` with its weights and every input in channels_last; the engine's interface
    (``latent_shape``, ``config``) unchanged."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.inner = model.to(memory_format=torch.channels_last)
        self.config = model.config

    def latent_shape(self, h: int, w: int, batch: int = 1):
        return self.inner.latent_shape(h, w, batch)

    def forward(self, lr, noises, steps: int = 1):
        return self.inner(lr.contiguous(memory_format=torch.channels_last), noises, steps)


def quantize_convs(model: nn.Module, calibrate) -> nn.Module:
    """A copy of ``model`` whose every ``nn.Conv2d`` runs as int8 (torch's x86 backend, eager-mode
    static post-training quantization): each conv is wrapped in quantize -> int8 conv ->
    dequantize, with per-channel weight and histogram activation observers calibrated by
    ``calibrate(model)``. Everything else (GroupNorm, attention, activations) stays fp32."""
    import torch.ao.quantization as tq

    torch.backends.quantized.engine = "x86"
    qconfig = tq.get_default_qconfig("x86")
    qmodel = copy.deepcopy(model).eval()

    def wrap(module: nn.Module) -> None:
        for name, child in module.named_children():
            if type(child) is nn.Conv2d:
                wrapper = tq.QuantWrapper(child)
                wrapper.qconfig = qconfig
                setattr(module, name, wrapper)
            else:
                wrap(child)

    wrap(qmodel)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao.quantization's deprecation notice
        tq.prepare(qmodel, inplace=True)
        with torch.inference_mode():
            calibrate(qmodel)
        tq.convert(qmodel, inplace=True)
    return qmodel


def dynamic_conv_quantization_note(model: nn.Module) -> str:
    """What torch's dynamic quantization does to the model's convolutions (it covers Linear and
    RNN layers only), measured rather than assumed."""
    import torch.ao.quantization as tq

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dq = tq.quantize_dynamic(copy.deepcopy(model), {nn.Conv2d}, dtype=torch.qint8)
    convs = sum(1 for m in model.modules() if isinstance(m, nn.Conv2d))
    left = sum(1 for m in dq.modules() if type(m) is nn.Conv2d)
    return f"quantize_dynamic({{nn.Conv2d}}) left {left} of {convs} convolutions in fp32"


def make_candidates(names, model, calib_batches, device):
    """name -> (module, autocast precision)."""
    out = {}
    int8 = None
    for name in names:
        base, _, cl = name.partition("-")
        if base in ("fp32", "bf16"):
            module = copy.deepcopy(model)
        elif base == "int8":
            if int8 is None:
                def calibrate(m):
                    for x, noises in calib_batches:
                        m(x, noises, 1)
                int8 = quantize_convs(model, calibrate)
            module = copy.deepcopy(int8)
        else:
            raise SystemExit(f"unknown candidate {name!r}; choose from {', '.join(CANDIDATES)}")
        if cl:
            if cl != "cl":
                raise SystemExit(f"unknown candidate {name!r}; choose from {', '.join(CANDIDATES)}")
            module = ChannelsLast(module)
        out[name] = (module.to(device).eval(), "bf16" if base == "bf16" else "fp32")
    return out


# ---------------------------------------------------------------------------------------------
# Measurements
# ---------------------------------------------------------------------------------------------


def best_seconds(fn, runs: int = 5) -> float:
    fn()
    best = float("inf")
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def measure_peak() -> dict:
    """GFLOP/s of a 1024^3 matmul and a 3x3 64->64 conv on (4, 64, 128, 128), fp32 and bf16."""
    peak = {}
    n = 1024
    conv_flops = 2 * 4 * 128 * 128 * 64 * 64 * 9
    for dtype, name in ((torch.float32, "fp32"), (torch.bfloat16, "bf16")):
        a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
        x = torch.randn(4, 64, 128, 128).to(dtype).contiguous(memory_format=torch.channels_last)
        conv = nn.Conv2d(64, 64, 3, padding=1).to(dtype).to(memory_format=torch.channels_last)
        with torch.inference_mode():
            peak[f"matmul_{name}"] = 2 * n**3 / best_seconds(lambda: a @ b) / 1e9
            peak[f"conv_{name}"] = conv_flops / best_seconds(lambda: conv(x)) / 1e9
    return peak


def model_flops(model, x, noises) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with torch.inference_mode(), counter:
        model(x, noises, 1)
    return counter.get_total_flops()


def read_tiles(raster: Path, tile: int, overlap: int, count: int, row: int = 0):
    """``count`` tiles of ``tile`` pixels from tile row ``row`` of the raster's engine grid, as
    (count, 3, tile, tile) in [-1, 1], with their LR origins."""
    import rasterio
    from rasterio.windows import Window

    step = tile - overlap
    origins = [(row * step, k * step) for k in range(count)]
    with rasterio.open(raster) as src:
        data = src.read([1, 2, 3], window=Window(0, row * step, (count - 1) * step + tile, tile))
    x = torch.from_numpy(data.astype(np.float32) / 127.5 - 1.0)
    tiles = torch.stack([x[:, :, c: c + tile] for _, c in origins])
    return tiles, origins


def noises_for(model, origins, h, w, device):
    from rsisr.noise import tile_noises

    return [torch.from_numpy(n).to(device) for n in tile_noises(model.latent_shape, 0, 1, origins, h, w)]


def forward_fn(module, precision, x, noises, device):
    from rsisr.device import autocast

    def fn():
        with torch.inference_mode(), autocast(device, precision):
            return module(x, noises, 1)
    return fn


def timed(fn) -> tuple[float, float]:
    """(wall seconds, this process's CPU seconds) of ``fn()``. With one torch thread the CPU time
    leaves out the time spent waiting for a core, which a shared machine adds to the wall time."""
    t0, c0 = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - t0, time.process_time() - c0


def interleaved(fns: dict, repeats: int, self_timed=()) -> dict[str, dict[str, float | list[float]]]:
    """Run every fn once per round, ``repeats`` rounds; median wall and CPU seconds of each (the
    fns named in ``self_timed`` return their own (wall, CPU) seconds)."""
    runs = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            runs[k].append(fn() if k in self_timed else timed(fn))
    return {k: {"wall_s": statistics.median(w for w, _ in v), "cpu_s": statistics.median(c for _, c in v),
                "runs_wall_s": [round(w, 3) for w, _ in v], "runs_cpu_s": [round(c, 3) for _, c in v]}
            for k, v in runs.items()}


def write_crop(raster: Path, crop: int, path: Path) -> Path:
    """The top-left crop x crop of ``raster`` (three bands and its dataset mask) as a GeoTIFF."""
    import rasterio
    from rasterio.windows import Window

    with rasterio.open(raster) as src:
        window = Window(0, 0, crop, crop)
        data = src.read([1, 2, 3], window=window)
        mask = src.dataset_mask(window=window)
        profile = dict(driver="GTiff", width=crop, height=crop, count=3, dtype=data.dtype, crs=src.crs,
                       transform=src.window_transform(window), tiled=True, blockxsize=256, blockysize=256,
                       compress="deflate")
    with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True), rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
        if not mask.all():
            dst.write_mask(mask)
    return path


def quality(candidates, val: Path, weights, device, limit=None) -> dict:
    """Mean PSNR / LPIPS on ``val`` of every candidate, as ``rsisr evaluate`` scores a model."""
    from rsisr.evaluation import metrics as pixel
    from rsisr.evaluation import perceptual
    from rsisr.evaluation.evaluate import degrade, list_images, read_hr, to_8bit
    from rsisr.upscale import TiledUpscaler

    folder = perceptual.metric_weights_dir(weights)
    lpips_net = perceptual.load_lpips(folder, device) if folder is not None else None
    files = list_images(val, limit)
    engines = {k: TiledUpscaler(m, seed=0, device=device, precision=p) for k, (m, p) in candidates.items()}
    scores = {k: {"psnr": [], "lpips": []} for k in candidates}
    with torch.inference_mode():
        for path in files:
            hr = read_hr(path)
            lr = degrade(hr)
            for k, engine in engines.items():
                sr = to_8bit(engine.forward(lr, [(0, 0)]))
                scores[k]["psnr"].append(pixel.psnr(sr, hr).item())
                if lpips_net is not None:
                    scores[k]["lpips"].append(perceptual.lpips_distance(lpips_net, sr, hr).item())
    out = {}
    for k, s in scores.items():
        out[k] = {"psnr": float(np.mean(s["psnr"])), "lpips": float(np.mean(s["lpips"])) if s["lpips"] else None}
    ref = out.get("fp32")
    for k, q in out.items():
        if ref is not None:
            q["d_psnr"] = q["psnr"] - ref["psnr"]
            q["d_lpips"] = None if q["lpips"] is None else q["lpips"] - ref["lpips"]
            q["within_bar"] = abs(q["d_psnr"]) <= 0.02 and (q["d_lpips"] is None or abs(q["d_lpips"]) <= 0.002)
    return {"images": len(files), "lpips": lpips_net is not None, "candidates": out}


# ---------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--raster", type=Path, default=DEFAULT_RASTER, help="uint8 RGB GeoTIFF")
    parser.add_argument("--crop", type=int, default=None, help="use the top-left N x N of the raster")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--candidates", default=",".join(CANDIDATES))
    parser.add_argument("--compile", action="store_true", help="also time torch.compile of --compile-of")
    parser.add_argument("--compile-of", default="bf16-cl")
    parser.add_argument("--val", type=Path, default=SHARED / "val")
    parser.add_argument("--val-limit", type=int, default=None, help="the first N images of --val only")
    parser.add_argument("--no-quality", action="store_true")
    parser.add_argument("--metric-weights", default=None, help="LPIPS weights folder (or $RSISR_METRIC_WEIGHTS)")
    parser.add_argument("--no-sweep", action="store_true")
    parser.add_argument("--no-e2e", action="store_true")
    parser.add_argument("--json", action="store_true", help="print one JSON object at the end")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    sys.path.insert(0, str(HERE))

    import rsisr
    from rsisr.device import native_bf16
    from rsisr.defaults import default_batch_size
    from rsisr.upscale import DEFAULT_OVERLAP, DEFAULT_TILE, TiledUpscaler, upscale_file

    from _scenes import bare_forward_seconds

    DEFAULT_BATCH_SIZE = default_batch_size("cpu")  # noqa: N806 (the default on this CPU)

    device = torch.device("cpu")
    say = (lambda *a, **k: None) if args.json else (lambda *a, **k: print(*a, **k, flush=True))
    record: dict = {
        "machine": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
        "torch": torch.__version__, "native_bf16": native_bf16(device), "load_average_start": os.getloadavg(),
        "raster": str(args.raster), "repeats": args.repeats,
    }
    say(f"# CPU, {record['threads']} torch thread(s), torch {torch.__version__}, native bf16 {record['native_bf16']}, "
        f"load average {record['load_average_start'][0]:.1f} (absolute figures depend on the load; ratios were "
        "measured side by side)")
    model = rsisr.load_model().eval()

    # 1. peak
    peak = measure_peak()
    record["peak_gflops"] = peak
    say("peak GFLOP/s (best of 5): " + ", ".join(f"{k} {v:.1f}" for k, v in peak.items()))

    # 2. FLOPs
    tile, overlap, batch = DEFAULT_TILE, DEFAULT_OVERLAP, DEFAULT_BATCH_SIZE
    x, origins = read_tiles(args.raster, tile, overlap, batch)
    noises = noises_for(model, origins, tile, tile, device)
    flops_batch = model_flops(model, x, noises)
    per_model_px = flops_batch / (batch * (4 * tile) ** 2)
    record["flops_per_model_output_pixel"] = per_model_px
    say(f"FLOPs per output pixel (one {tile}x{tile} tile): {per_model_px / 1e3:.1f} k "
        f"({flops_batch / batch / 1e9:.2f} GFLOP per tile)")

    # 3. candidates
    names = [n for n in args.candidates.split(",") if n]
    if "fp32" not in names:
        names.insert(0, "fp32")
    calib = []
    for row in (3, 6):
        cx, co = read_tiles(args.raster, tile, overlap, batch, row=row)
        calib.append((cx, noises_for(model, co, tile, tile, device)))
    candidates = make_candidates(names, model, calib, device)
    if "int8" in {n.partition("-")[0] for n in names}:
        record["int8_dynamic"] = dynamic_conv_quantization_note(model)
        say(f"int8 dynamic: {record['int8_dynamic']} (torch's dynamic quantization covers Linear/RNN only)")
    fns = {k: forward_fn(m, p, x, noises, device) for k, (m, p) in candidates.items()}
    warmup = {}
    if args.compile:
        for k in args.compile_of.split(","):
            m, p = candidates[k]
            fn = forward_fn(torch.compile(m), p, x, noises, device)
            warmup[f"{k}+compile"] = timed(fn)[0]
            fns[f"{k}+compile"] = fn
            say(f"torch.compile warm-up of {k}: {warmup[f'{k}+compile']:.1f} s")
    outputs = {k: fn().float() for k, fn in fns.items()}  # also the warm-up
    times = interleaved(fns, args.repeats)
    out_mp = batch * (4 * tile) ** 2 / 1e6
    ref = times["fp32"]
    rows = {}
    say(f"\nbare forward, {batch} real tiles of {tile}x{tile} ({out_mp:.2f} output MP), median of {args.repeats} "
        "interleaved runs (wall, and CPU seconds of this one-thread process):")
    say(f"{'candidate':<16}{'wall s':>8}{'CPU s':>8}{'MP/s':>7}{'MP/CPU-s':>9}{'x fp32 wall':>12}{'x fp32 CPU':>11}"
        f"{'% peak':>8}{'max|d|/255':>11}{'mean|d|/255':>12}")
    for k, t in times.items():
        kind = "bf16" if k.startswith("bf16") else "fp32"
        d = (outputs[k] - outputs["fp32"]).abs() * 127.5
        r = rows[k] = {**t, "output_mp_per_s": out_mp / t["wall_s"], "output_mp_per_cpu_s": out_mp / t["cpu_s"],
                       "speedup_wall": ref["wall_s"] / t["wall_s"], "speedup_cpu": ref["cpu_s"] / t["cpu_s"],
                       "peak_share": flops_batch / t["cpu_s"] / 1e9 / peak[f"conv_{kind}"],
                       "max_abs_diff_255": d.max().item(), "mean_abs_diff_255": d.mean().item(),
                       "compile_warmup_s": warmup.get(k)}
        say(f"{k:<16}{t['wall_s']:>8.2f}{t['cpu_s']:>8.2f}{r['output_mp_per_s']:>7.3f}{r['output_mp_per_cpu_s']:>9.3f}"
            f"{r['speedup_wall']:>12.2f}{r['speedup_cpu']:>11.2f}{100 * r['peak_share']:>7.1f}%"
            f"{r['max_abs_diff_255']:>11.2f}{r['mean_abs_diff_255']:>12.3f}")
    say("% peak: model FLOPs per CPU-second against the conv peak of the same precision (int8 against fp32's)")
    record["candidates"] = rows

    # 4. quality: which candidates keep the fp32 quality on val
    eligible = [k for k in candidates]
    if not args.no_quality and args.val.is_dir():
        q = quality(candidates, args.val, args.metric_weights, device, args.val_limit)
        record["quality"] = q
        say(f"\nquality on {args.val} ({q['images']} images, seed 0, one tile each, 8-bit output; "
            f"LPIPS {'on' if q['lpips'] else 'off: no metric weights'}):")
        for k, v in q["candidates"].items():
            lp = "-" if v["lpips"] is None else f"{v['lpips']:.4f} ({v['d_lpips']:+.4f})"
            say(f"  {k:<10} PSNR {v['psnr']:.3f} dB ({v['d_psnr']:+.3f})  LPIPS {lp}  "
                f"{'within' if v['within_bar'] else 'OUTSIDE'} the bar (0.02 dB, 0.002)")
        eligible = [k for k in candidates if q["candidates"][k]["within_bar"]]
    best = min(eligible, key=lambda k: rows[k]["cpu_s"])
    record["best_candidate"] = best
    say(f"\nfastest by CPU time{' within the quality bar' if 'quality' in record else ''} (compile aside): {best}, "
        f"{rows[best]['speedup_cpu']:.2f}x fp32 in CPU time, {rows[best]['speedup_wall']:.2f}x in wall time")

    # 5. tile and batch sweep
    if not args.no_sweep:
        module, prec = candidates[best]
        fns, useful = {}, {}
        for t in (96, 128, 192, 256):
            for b in (1, 4):
                sx, so = read_tiles(args.raster, t, overlap, b, row=1)
                fns[(t, b)] = forward_fn(module, prec, sx, noises_for(model, so, t, t, device), device)
                useful[(t, b)] = b * (4 * (t - overlap)) ** 2 / 1e6
                fns[(t, b)]()
        st = interleaved(fns, args.repeats)
        record["sweep"] = [{"tile": t, "batch": b, **v, "scene_mp_per_s": useful[(t, b)] / v["wall_s"],
                            "scene_mp_per_cpu_s": useful[(t, b)] / v["cpu_s"]} for (t, b), v in st.items()]
        say(f"\n{best}, tile/batch sweep (new scene output MP per CPU-second, overlap {overlap} removed; "
            f"today {DEFAULT_TILE}/{DEFAULT_BATCH_SIZE}):")
        say("  " + ", ".join(f"tile {r['tile']} batch {r['batch']}: {r['scene_mp_per_cpu_s']:.3f}"
                             for r in record["sweep"]))

    # 6. end to end
    if not args.no_e2e:
        import rasterio

        workdir = Path(tempfile.mkdtemp(prefix="rsisr_bench_speed_"))
        src = write_crop(args.raster, args.crop, workdir / "crop.tif") if args.crop else args.raster
        with rasterio.open(src) as ds:
            shape = (ds.height, ds.width)
        dst = workdir / "out.tif"
        engine = TiledUpscaler(model, device=device)
        window = (0, 0, *shape)

        def tiling(t: int) -> tuple[int, int]:
            """(tiles, model output pixels) of the engine's plan at tile ``t``."""
            py, px = TiledUpscaler(model, tile=t, overlap=overlap, device=device).plans(shape)
            ii, jj = py.intersecting(0, 4 * shape[0]), px.intersecting(0, 4 * shape[1])
            return len(ii) * len(jj), sum(16 * py.size(i) * px.size(j) for i in ii for j in jj)

        n_tiles, model_px = tiling(tile)
        scene_mp = 16 * shape[0] * shape[1] / 1e6
        scene_flops = per_model_px * model_px
        runs = {"bare fp32 eager": lambda: bare_forward_seconds(engine, shape, window)}
        variants = {"upscale_file fp32 (today)": (model, "fp32", DEFAULT_TILE, DEFAULT_BATCH_SIZE)}
        if best != "fp32":
            variants[f"upscale_file {best}"] = (*candidates[best], DEFAULT_TILE, DEFAULT_BATCH_SIZE)
        if "sweep" in record:  # and at the sweep's best tile and batch, when they differ from today's
            top = max(record["sweep"], key=lambda r: r["scene_mp_per_cpu_s"])
            if (top["tile"], top["batch"]) != (DEFAULT_TILE, DEFAULT_BATCH_SIZE):
                variants[f"upscale_file {best} t{top['tile']} b{top['batch']}"] = (*candidates[best], top["tile"],
                                                                                 top["batch"])
        for label, (m, p, t, b) in variants.items():
            runs[label] = lambda m=m, p=p, t=t, b=b: upscale_file(src, dst, m, device=device, precision=p, tile=t,
                                                                  batch_size=b, overwrite=True)
        bare_forward_seconds(engine, shape, window)  # warm-up
        e2e = interleaved(runs, args.repeats, self_timed=("bare fp32 eager",))
        bare = e2e["bare fp32 eager"]
        record["end_to_end"] = {"raster": str(src), "shape": shape, "tiles": n_tiles,
                                "output_mp": scene_mp, "flops_per_scene_output_pixel": scene_flops / scene_mp / 1e6,
                                "runs": {}}
        say(f"\nend to end, {shape[1]}x{shape[0]} -> {4 * shape[1]}x{4 * shape[0]} ({scene_mp:.1f} MP, "
            f"{record['end_to_end']['tiles']} tiles of {tile}, overlap {overlap}, batch {batch}; "
            f"{scene_flops / (scene_mp * 1e6) / 1e3:.1f} kFLOP per scene output pixel), median of {args.repeats}:")
        for k, v in e2e.items():
            kind = "bf16" if "bf16" in k else "fp32"
            flops = per_model_px * tiling(variants[k][2])[1] if k in variants else scene_flops
            r = {**v, "output_mp_per_s": scene_mp / v["wall_s"], "output_mp_per_cpu_s": scene_mp / v["cpu_s"],
                 "vs_bare_fp32_wall": bare["wall_s"] / v["wall_s"], "vs_bare_fp32_cpu": bare["cpu_s"] / v["cpu_s"],
                 "peak_share": flops / v["cpu_s"] / 1e9 / peak[f"conv_{kind}"]}
            record["end_to_end"]["runs"][k] = r
            say(f"  {k:<36}{v['wall_s']:>7.1f} s wall {v['cpu_s']:>7.1f} s CPU  {r['output_mp_per_s']:.3f} MP/s "
                f"{r['output_mp_per_cpu_s']:.3f} MP/CPU-s  {r['vs_bare_fp32_wall']:.2f}x / {r['vs_bare_fp32_cpu']:.2f}x "
                f"bare fp32 (wall / CPU)  {100 * r['peak_share']:.1f}% of the {kind} conv peak")
        say("bar: end to end >= 2x the bare fp32 eager forward")
    record["load_average_end"] = os.getloadavg()
    say(f"load average at the end {record['load_average_end'][0]:.1f}")
    if args.json:
        print(json.dumps(record))


if __name__ == "__main__":
    main()
