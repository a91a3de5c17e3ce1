"""A seeded mutation fuzzer for rsisr's readers, and a fork server that runs ``rsisr`` on each case.

The corpus. Every real GeoTIFF of ``../shared/data/geotiff`` becomes a *miniature*: a 64x64 window
(the centre) written with the original's structure, which is what a corruption hits: dtype, band
count, compression (JPEG YCbCr for the COG), tiling or strips, interleave, nodata, internal mask,
overviews, tags and band descriptions. A full-size scene takes minutes through even the tiny model
on a busy 2-core CPU; a miniature takes a second, so hundreds of cases fit in a test run.

A mutation recipe is ``(source, seed, kind, params)``: ``params`` holds the exact byte patches
(or the truncated length), so a recipe replays the same file without the generator; a failing
case is kept as a recipe, never as a file. Kinds (the 150-case survey of issue 20):

- ``header``: 1-4 bytes of the first 512 XOR-ed with random values;
- ``random``: 1-16 random bytes anywhere;
- ``truncate``: the file cut at a random length;
- ``zero_block``: one 4 KB-aligned block zeroed;
- ``ifd_count``: the entry count of the first IFD (TIFF directory) replaced;
- ``ifd_value``: the type, count or value of one IFD entry replaced (width, height, block size,
  samples per pixel, bits per sample, offsets: the "damaged header" cases).

The fork server (``python tests/fuzzing.py serve CASES.json RESULTS.json``) imports torch, rasterio
and rsisr once, then forks one child per case that runs the ``rsisr`` command line exactly as the
console script does, with its stdout and stderr on files, and kills it after the case's time limit:
a separate process per case (so a traceback on stderr, a crash and a hang are observable) without
paying the 3 s interpreter start-up each time. ``python tests/fuzzing.py upscale --seed N --cases M``
runs M fresh cases through ``rsisr upscale`` and prints the counts.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import struct
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
GEOTIFF_DIR = ROOT.parent / "shared" / "data" / "geotiff"
KINDS = ("header", "random", "truncate", "zero_block", "ifd_count", "ifd_value")
MINI_SIDE = 64
#: Upscale options of every fuzz case (tile and overlap in LR pixels; the tiny model's multiple is 8).
UPSCALE_OPTIONS = ("--tile", "32", "--overlap", "8", "--device", "cpu", "--batch-size", "4")
CASE_TIMEOUT = 60.0  # seconds; a clean case takes 1-3 s (a miniature through the tiny model)


@dataclass(frozen=True)
class Recipe:
    """One mutated input: ``params`` is {"patches": [[offset, hex], ...]}, {"zero": [offset, length]}
    or {"truncate": length}."""

    source: str
    seed: int
    kind: str
    params: dict

    def id(self) -> str:
        return f"{self.source.split('_')[0]}-{self.seed}-{self.kind}"


# -- the corpus ---------------------------------------------------------------------------------

def make_miniature(src_path: Path, dst_path: Path, side: int = MINI_SIDE) -> Path:
    """The centre ``side`` x ``side`` window of ``src_path`` with the original's structure."""
    import rasterio
    import rasterio.shutil
    from rasterio.enums import MaskFlags, Resampling
    from rasterio.windows import Window

    with rasterio.open(src_path) as src:
        w, h = min(side, src.width), min(side, src.height)
        window = Window((src.width - w) // 2, (src.height - h) // 2, w, h)
        data = src.read(window=window)
        mask = src.dataset_mask(window=window)
        prof = src.profile
        has_mask = MaskFlags.per_dataset in src.mask_flag_enums[0] and src.nodata is None
        is_cog = src.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"
        overviews = bool(src.overviews(1))
        tags = {k: v for k, v in src.tags().items() if not k.startswith("TIFFTAG_")}
        descriptions, colorinterp = src.descriptions, src.colorinterp
        photometric = src.tags(ns="IMAGE_STRUCTURE").get("SOURCE_COLOR_SPACE") or prof.get("photometric")
    out = dict(driver="GTiff", width=w, height=h, count=prof["count"], dtype=prof["dtype"], crs=prof["crs"],
               transform=rasterio.windows.transform(window, prof["transform"]), nodata=prof.get("nodata"),
               interleave=prof.get("interleave", "pixel"))
    if prof.get("compress"):
        out["compress"] = prof["compress"]
    if photometric and str(photometric).upper() == "YCBCR":
        out["photometric"] = "YCBCR"
    if prof.get("tiled"):
        out.update(tiled=True, blockxsize=16, blockysize=16)
    else:
        out["blockysize"] = prof.get("blockysize", 8)
    target = dst_path.with_suffix(".stage.tif") if is_cog else dst_path
    with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True):
        with rasterio.open(target, "w", **out) as dst:
            dst.write(data)
            if has_mask:
                dst.write_mask(mask)
            dst.update_tags(**tags)
            dst.colorinterp = colorinterp
            for k, d in enumerate(descriptions, start=1):
                if d:
                    dst.set_band_description(k, d)
        if overviews and not is_cog:
            with rasterio.open(target, "r+") as dst:
                dst.build_overviews([2, 4], Resampling.nearest)
        if is_cog:
            rasterio.shutil.copy(target, dst_path, driver="COG", COMPRESS=out.get("compress", "DEFLATE"),
                                 BLOCKSIZE=32, OVERVIEWS="AUTO", OVERVIEW_COUNT=2)
            target.unlink()
    return dst_path


def build_corpus(folder: Path, geotiff_dir: Path = GEOTIFF_DIR) -> dict[str, Path]:
    """{real file name: its miniature in ``folder``} for every real GeoTIFF."""
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for src in sorted(geotiff_dir.glob("*.tif")):
        dst = folder / src.name
        if not dst.is_file():
            make_miniature(src, dst)
        out[src.name] = dst
    return out


# -- mutations ----------------------------------------------------------------------------------

def _ifd(data: bytes) -> tuple[str, int, int, int] | None:
    """(byte order, first IFD offset, its entry count, entry size) of a classic or BigTIFF file."""
    if len(data) < 16 or data[:2] not in (b"II", b"MM"):
        return None
    bo = "<" if data[:2] == b"II" else ">"
    magic = struct.unpack(bo + "H", data[2:4])[0]
    if magic == 42:
        off = struct.unpack(bo + "I", data[4:8])[0]
        if off + 2 > len(data):
            return None
        return bo, off, struct.unpack(bo + "H", data[off:off + 2])[0], 12
    if magic == 43:
        off = struct.unpack(bo + "Q", data[8:16])[0]
        if off + 8 > len(data):
            return None
        return bo, off, struct.unpack(bo + "Q", data[off:off + 8])[0], 20
    return None


def make_recipe(source: str, data: bytes, seed: int) -> Recipe:
    """The mutation of ``data`` (the bytes of corpus file ``source``) drawn from ``seed``."""
    rng = np.random.default_rng([20, seed])
    kind = KINDS[int(rng.integers(len(KINDS)))]
    n = len(data)
    ifd = _ifd(data)
    if kind.startswith("ifd") and ifd is None:
        kind = "header"
    patches: list[tuple[int, bytes]] = []
    if kind == "header":
        for _ in range(int(rng.integers(1, 5))):
            off = int(rng.integers(min(512, n)))
            patches.append((off, bytes([data[off] ^ int(rng.integers(1, 256))])))
    elif kind == "random":
        for _ in range(int(rng.integers(1, 17))):
            patches.append((int(rng.integers(n)), bytes([int(rng.integers(256))])))
    elif kind == "truncate":
        return Recipe(source, seed, kind, {"truncate": int(rng.integers(1, n))})
    elif kind == "zero_block":
        off = int(rng.integers(max(1, n // 4096))) * 4096
        return Recipe(source, seed, kind, {"zero": [off, min(4096, n - off)]})
    elif kind == "ifd_count":
        bo, off, count, _ = ifd
        small = ifd[3] == 12
        choice = [0, 1, max(0, count - 1), count + 1, count + 5, int(rng.integers(65536 if small else 2**32))]
        new = choice[int(rng.integers(len(choice)))]
        patches.append((off, struct.pack(bo + ("H" if small else "Q"), new)))
    else:  # ifd_value
        bo, off, count, size = ifd
        small = size == 12
        entry = off + (2 if small else 8) + int(rng.integers(max(1, count))) * size
        field = ("type", "count", "value")[int(rng.integers(3))]
        if field == "type":
            patches.append((entry + 2, struct.pack(bo + "H", int(rng.integers(0, 20)))))
        else:
            pos = entry + (4 if field == "count" else (8 if small else 12))
            big = [0, 1, 2, 3, 0xFFFF, 400_000, 0x7FFFFFFF, 0xFFFFFFFF, int(rng.integers(2**32))]
            value = big[int(rng.integers(len(big)))]
            patches.append((pos, struct.pack(bo + "I", value)))
    return Recipe(source, seed, kind, {"patches": [[o, b.hex()] for o, b in patches]})


def tag_patch(data: bytes, tag: int, value: int) -> list:
    """The patch that sets the single SHORT or LONG value of ``tag`` in the first IFD of the
    classic TIFF ``data`` to ``value`` (the entry becomes a LONG): a recipe's "patches" item."""
    bo, off, count, size = _ifd(data)
    assert size == 12, "classic TIFF only"
    for k in range(count):
        entry = off + 2 + k * size
        if struct.unpack(bo + "H", data[entry:entry + 2])[0] == tag:
            return [entry + 2, struct.pack(bo + "HII", 4, 1, value).hex()]
    raise KeyError(f"tag {tag} is not in the first IFD")


def apply_recipe(recipe: Recipe, data: bytes) -> bytes:
    if "truncate" in recipe.params:
        return data[:recipe.params["truncate"]]
    buf = bytearray(data)
    if "zero" in recipe.params:
        off, length = recipe.params["zero"]
        buf[off:off + length] = bytes(len(buf[off:off + length]))
        return bytes(buf)
    for off, hexbytes in recipe.params["patches"]:
        patch = bytes.fromhex(hexbytes)
        buf[off:off + len(patch)] = patch[:max(0, len(buf) - off)]
    return bytes(buf)


def recipes(corpus: dict[str, Path], seed: int, count: int) -> list[Recipe]:
    """``count`` recipes, cycling through the corpus; case k uses seed ``seed * 100003 + k``."""
    names = sorted(corpus)
    data = {name: corpus[name].read_bytes() for name in names}
    return [make_recipe(names[k % len(names)], data[names[k % len(names)]], seed * 100003 + k)
            for k in range(count)]


def write_case(recipe: Recipe, corpus: dict[str, Path], folder: Path) -> Path:
    path = folder / f"{recipe.id()}{Path(recipe.source).suffix}"
    path.write_bytes(apply_recipe(recipe, corpus[recipe.source].read_bytes()))
    return path


# -- the contract -------------------------------------------------------------------------------

def violations(rc: int | None, stderr: str, out_dir: Path, output: Path | None) -> list[str]:
    """What is wrong with one CLI run (empty: the contract holds).

    Exit 0 with an output that rasterio opens and reads, or exit 1 with exactly one line on
    stderr starting with ``Error:``, the last (only warnings, ``WARNING: ...`` log records of one
    line each, may come before it); never a traceback, a hang, or another file in ``out_dir``.
    """
    import rasterio

    problems = []
    if rc is None:
        problems.append("hang (killed after the time limit)")
    if "Traceback" in stderr or "Logging error" in stderr:
        problems.append("traceback on stderr")
    lines = [line for line in stderr.splitlines() if line.strip()]
    files = sorted(p.name for p in out_dir.iterdir())
    if rc == 1:
        # warnings (one log record a line) may come first; the error is one line, the last
        errors = [line for line in lines if line.startswith("Error: ")]
        if len(errors) != 1 or lines[-1] != errors[0] or any(
                not (line.startswith("WARNING: ") or line.startswith("Error: ")) for line in lines):
            problems.append(f"stderr is not warnings then one 'Error:' line: {lines[-3:]}")
        stray = files
    elif rc == 0:
        if output is None or not output.is_file():
            problems.append("exit 0 without an output")
        else:
            try:
                with rasterio.open(output) as ds:
                    ds.read(1, window=((0, min(8, ds.height)), (0, min(8, ds.width))))
            except Exception as exc:  # noqa: BLE001 - any failure to reopen is the finding
                problems.append(f"output does not open: {exc}")
        stray = [f for f in files if output is None or f != output.name]
    else:
        if rc is not None:
            problems.append(f"exit status {rc}")
        stray = []
    if stray:
        problems.append(f"stray files {stray}")
    return problems


# -- the fork server ----------------------------------------------------------------------------

def _child(args: list[str], stdout: str, stderr: str, threads: int) -> None:
    """Runs in the forked child: ``rsisr ARGS`` with its output on files; never returns."""
    code = 1
    try:
        out = os.open(stdout, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        err = os.open(stderr, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(out, 1)
        os.dup2(err, 2)
        os.setsid()
        import torch

        torch.set_num_threads(threads)
        from rsisr_cli.main import cli

        try:
            cli.main(args, prog_name="rsisr")
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        except BaseException:  # noqa: BLE001 - as the interpreter would: print it, exit 1
            import traceback

            traceback.print_exc()
            code = 1
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


def serve(cases: list[dict], threads: int = 1) -> list[dict]:
    """Run each case {"args", "stdout", "stderr", "timeout"} in a forked child; returns
    [{"rc" (None: killed after the timeout), "seconds", "stderr"}]."""
    import rasterio  # noqa: F401 - imported once, before the forks
    import torch

    import rsisr.upscale  # noqa: F401
    import rsisr_cli.main  # noqa: F401
    import rsisr_cli.upscale  # noqa: F401

    torch.set_num_threads(threads)
    results = []
    for case in cases:
        t0 = time.perf_counter()
        pid = os.fork()
        if pid == 0:
            _child(case["args"], case["stdout"], case["stderr"], threads)
        deadline = t0 + case["timeout"]
        rc = None
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                rc = os.waitstatus_to_exitcode(status)
                break
            if time.perf_counter() > deadline:
                try:
                    os.killpg(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                os.waitpid(pid, 0)
                break
            time.sleep(0.02)
        results.append({"rc": rc, "seconds": time.perf_counter() - t0,
                        "stderr": Path(case["stderr"]).read_text(errors="replace")})
    return results


def run_cases(cases: list[dict], python: str = sys.executable, threads: int = 1) -> list[dict]:
    """:func:`serve` in a fresh interpreter (this file run as a script)."""
    import subprocess
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        spec, res = Path(tmp) / "cases.json", Path(tmp) / "results.json"
        spec.write_text(json.dumps(cases))
        limit = sum(c["timeout"] for c in cases) + 120
        subprocess.run([python, __file__, "serve", str(spec), str(res), "--threads", str(threads)], check=True,
                       timeout=limit, cwd=ROOT)
        return json.loads(res.read_text())


def upscale_cases(recipes_: list[Recipe], corpus: dict[str, Path], model: Path, work: Path,
                  timeout: float = CASE_TIMEOUT, extra: tuple[str, ...] = ()) -> list[dict]:
    """Write each mutated input and prepare its ``rsisr upscale`` run into a folder of its own."""
    cases = []
    (work / "inputs").mkdir(parents=True, exist_ok=True)
    for r in recipes_:
        src = write_case(r, corpus, work / "inputs")
        out_dir = work / "out" / r.id()
        shutil.rmtree(out_dir, ignore_errors=True)
        out_dir.mkdir(parents=True)
        cases.append({"recipe": asdict(r), "out_dir": str(out_dir), "output": str(out_dir / "out.tif"),
                      "args": ["upscale", str(src), "-o", str(out_dir / "out.tif"), "--model", str(model),
                               *UPSCALE_OPTIONS, *extra],
                      "stdout": str(work / f"{r.id()}.stdout"), "stderr": str(work / f"{r.id()}.stderr"),
                      "timeout": timeout})
    return cases


def check_upscale(cases: list[dict], results: list[dict]) -> dict:
    """Counts and the contract violations of ``rsisr upscale`` runs."""
    summary = {"cases": len(cases), "exit0": 0, "exit1": 0, "violations": [], "longest_s": 0.0}
    for case, res in zip(cases, results):
        problems = violations(res["rc"], res["stderr"], Path(case["out_dir"]), Path(case["output"]))
        summary["exit0"] += res["rc"] == 0
        summary["exit1"] += res["rc"] == 1
        summary["longest_s"] = max(summary["longest_s"], res["seconds"])
        if problems:
            summary["violations"].append({"recipe": case["recipe"], "problems": problems,
                                          "stderr": res["stderr"][-2000:]})
    return summary


def tiny_model_file(path: Path) -> Path:
    import torch

    import rsisr

    torch.manual_seed(0)
    rsisr.save_model(rsisr.build_model("tiny").eval(), path)
    return path


def main(argv: list[str]) -> int:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("serve")
    p.add_argument("cases")
    p.add_argument("results")
    p.add_argument("--threads", type=int, default=1)
    p = sub.add_parser("upscale", help="run fresh cases through rsisr upscale and print the counts")
    p.add_argument("--seed", type=int, required=True)
    p.add_argument("--cases", type=int, default=300)
    p.add_argument("--work", type=Path, required=True, help="a scratch folder (outside the repository)")
    args = parser.parse_args(argv)
    if args.command == "serve":
        cases = json.loads(Path(args.cases).read_text())
        Path(args.results).write_text(json.dumps(serve(cases, args.threads)))
        return 0
    corpus = build_corpus(args.work / "corpus")
    model = tiny_model_file(args.work / "tiny.safetensors")
    rs = recipes(corpus, args.seed, args.cases)
    cases = upscale_cases(rs, corpus, model, args.work / f"seed{args.seed}")
    t0 = time.perf_counter()
    summary = check_upscale(cases, run_cases(cases))
    summary["wall_s"] = round(time.perf_counter() - t0, 1)
    summary["longest_s"] = round(summary["longest_s"], 1)
    print(json.dumps(summary, indent=1))
    return 1 if summary["violations"] else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
