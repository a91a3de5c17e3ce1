"""Super-resolve whole folders of scenes with dask.distributed, locally or on an existing cluster.

Two entry points:

- :func:`upscale_folder` plans the jobs (output paths mirror the input's relative paths), starts
  a :class:`distributed.LocalCluster` of worker processes (or connects to ``scheduler``), runs
  every scene with retries, and returns a :class:`BatchReport`.
- :func:`upscale_scene` is the per-scene function: users can ``client.map`` it over their own
  file lists. Each worker process loads the model once and keeps it.

Resumable: a scene is skipped when its output exists, opens as a complete raster (outputs are
written atomically by :func:`rsisr.upscale.upscale_file`, so an existing output is a finished
one) and its ``RSISR_*`` tags match the request: the model file's sha256, steps, seed, tile and
overlap (as aligned to the model), bands and scaling (for ``--scale auto`` the mode, since the
percentiles come from the data; otherwise the values). A scene whose output was made otherwise
is redone, and its ``reason`` in the report says what differed. Other options (``--bounds``,
``--aoi``, ``--precision``, creation options) are not recorded in the tags and not compared.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
import warnings
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from rsisr.atomic import remove_stale, write_text
from rsisr.errors import InputError, OutputError

log = logging.getLogger(__name__)

#: Attempts per scene in :func:`upscale_folder` beyond the first (a dead worker counts too).
DEFAULT_RETRIES = 1

_MODEL_CACHE: dict[tuple[str | None, str], Any] = {}
_MODEL_LOCK = threading.Lock()


@dataclass
class SceneResult:
    """What happened to one scene: ``status`` is done, skipped or failed; ``reason`` says why an
    existing output was redone (made with other settings, unreadable, ``--overwrite``)."""

    input: str
    output: str
    status: str
    seconds: float = 0.0
    error: str | None = None
    reason: str | None = None


@dataclass
class BatchReport:
    scenes: list[SceneResult] = field(default_factory=list)
    seconds: float = 0.0
    workers: int = 0

    @property
    def counts(self) -> dict[str, int]:
        out = {"done": 0, "skipped": 0, "failed": 0}
        for s in self.scenes:
            out[s.status] += 1
        return out

    @property
    def failed(self) -> list[SceneResult]:
        return [s for s in self.scenes if s.status == "failed"]

    def to_dict(self) -> dict[str, Any]:
        return {"scenes": [asdict(s) for s in self.scenes], "summary": {**self.counts, "seconds": self.seconds,
                                                                        "workers": self.workers}}

    def write_json(self, path: str | os.PathLike) -> None:
        """Write the report atomically (a failed write is a one-line OutputError)."""
        write_text(path, json.dumps(self.to_dict(), indent=2) + "\n", "report")


def plan_jobs(input_dir: str | os.PathLike, output_dir: str | os.PathLike, pattern: str = "*.tif",
              recursive: bool = False) -> list[tuple[Path, Path]]:
    """(input, output) pairs; output paths mirror the input's relative paths under ``output_dir``.

    Rejected before any work: a missing input folder, ``output_dir`` inside ``input_dir`` (a
    rerun would pick up its own outputs) and two inputs that map to one output.
    """
    src_root = Path(input_dir)
    if not src_root.is_dir():
        raise InputError(f"input folder {str(src_root)!r} does not exist or is not a folder")
    dst_root = Path(output_dir)
    src_abs, dst_abs = src_root.resolve(), dst_root.resolve()
    if dst_abs == src_abs or src_abs in dst_abs.parents:
        raise OutputError(
            f"output folder {str(dst_root)!r} is inside the input folder {str(src_root)!r}; choose an output folder "
            "outside it"
        )
    found = src_root.rglob(pattern) if recursive else src_root.glob(pattern)
    inputs = sorted(p for p in found if p.is_file())
    if not inputs:
        how = "recursively " if recursive else ""
        raise InputError(f"no file in {str(src_root)!r} matches {pattern!r} {how}(use --pattern or --recursive)")
    jobs: list[tuple[Path, Path]] = []
    seen: dict[str, Path] = {}
    for p in inputs:
        rel = p.relative_to(src_root)
        out = dst_root / rel.with_suffix(".tif")
        key = os.path.normcase(str(out.resolve())).lower()
        if key in seen:
            raise OutputError(
                f"{str(seen[key])!r} and {str(p)!r} would both be written to {str(out)!r}; rename one of them"
            )
        seen[key] = p
        jobs.append((p, out))
    return jobs


def is_complete(path: str | os.PathLike) -> bool:
    """True when ``path`` exists and opens as a raster written by rsisr (a finished atomic
    write), whatever settings it was made with (see :func:`scene_status`)."""
    return _read_tags(path) is not None


def _read_tags(path: str | os.PathLike) -> dict[str, str] | None:
    """The tags of a finished rsisr output at ``path``, or None (missing, unreadable, not rsisr's)."""
    path = Path(path)
    if not path.is_file():
        return None
    from rsisr.rasterio_io import dataset_tags, open_raster, reading

    try:
        with open_raster(path, check=False) as ds, reading(path, "the tags"):
            tags = dataset_tags(ds)
            return tags if ds.width > 0 and ds.height > 0 and "RSISR_VERSION" in tags else None
    except InputError:  # damaged: not complete, so the scene runs again
        return None


@dataclass(frozen=True)
class Request:
    """What a scene's output tags must say to count as complete (:func:`request_for`)."""

    model_sha256: str
    steps: int
    seed: int
    tile: int
    overlap: int
    bands: tuple[int, ...] | None  # None: the default choice, which depends on the input
    scale: Any  # "auto", "none", (min, max) or a per-band Scaling (rsisr.radiometry.parse_scale)


_SHA256: dict[tuple[str, int, int], str] = {}


def request_for(model: str | os.PathLike | None = None, *, steps: int = 1, seed: int = 0, tile: int | None = None,
                overlap: int | None = None, bands=None, scale="auto", **_ignored) -> Request:
    """The :class:`Request` of :func:`rsisr.upscale.upscale_file` options (unknown ones are not
    recorded in outputs and ignored). Invalid values raise the error upscale_file would."""
    from rsisr.api import require_default_model
    from rsisr.checkpoint import file_sha256, read_metadata
    from rsisr.config import ModelConfig
    from rsisr.radiometry import parse_scale
    from rsisr.tiling import effective_tiling
    from rsisr.upscale import DEFAULT_OVERLAP, DEFAULT_TILE, parse_bands

    path = Path(model) if model is not None else require_default_model()
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _SHA256:
        _SHA256[key] = file_sha256(path)
    multiple = ModelConfig.from_json(read_metadata(path)["config"]).lr_multiple
    tile, overlap = effective_tiling(DEFAULT_TILE if tile is None else tile,
                                     DEFAULT_OVERLAP if overlap is None else overlap, multiple)
    scale_spec = parse_scale(scale or "auto") if isinstance(scale, str) or scale is None else scale
    if isinstance(scale_spec, (list, tuple)):  # as upscale_file takes them
        scale_spec = parse_scale(",".join(map(str, scale_spec)))
    return Request(_SHA256[key], int(steps), int(seed), tile, overlap, parse_bands(bands), scale_spec)


def scene_status(src: str | os.PathLike, dst: str | os.PathLike, request: Request) -> tuple[bool, str | None]:
    """(complete, reason): complete when ``dst`` is a finished rsisr output of ``src`` whose tags
    match ``request``; otherwise ``reason`` says why it must be (re)done (None: no output yet)."""
    if not Path(dst).exists():
        return False, None
    tags = _read_tags(dst)
    if tags is None:
        return False, "the existing output is unreadable or was not written by rsisr"
    wanted = _wanted_tags(src, request)
    if wanted is None:  # the input cannot be read: let the scene run and report that
        return False, "the input could not be checked against the existing output"
    differences = [f"{name} {_show(name, tags.get(key))} (now {_show(name, want)})"
                   for name, key, want in wanted if not _same(name, tags.get(key), want)]
    if differences:
        return False, "the existing output was made with " + ", ".join(differences)
    return True, None


def _wanted_tags(src, request: Request) -> list[tuple[str, str, Any]] | None:
    """(name, tag, wanted value) for every compared tag; None when ``src`` cannot be opened."""
    import numpy as np
    import rasterio
    from rasterio._err import CPLE_BaseError
    from rasterio.errors import RasterioError

    from rsisr.radiometry import resolve_scaling
    from rsisr.upscale import select_bands

    try:
        with rasterio.open(src) as ds, warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the band choice's warning belongs to the run, not this check
            bands = request.bands or select_bands(ds, None)[0]
            dtype = np.dtype(ds.dtypes[0])
        if request.scale == "auto" and dtype != np.uint8:
            scaling = {"mode": "auto"}  # its percentiles come from the data: the mode is what can be compared
        else:
            s = resolve_scaling(request.scale, dtype, len(bands))
            scaling = {"mode": s.mode, "lo": list(s.lo), "hi": list(s.hi)}
    except (RasterioError, CPLE_BaseError, OSError, ValueError):  # InputError is a ValueError
        return None
    return [
        ("model", "RSISR_MODEL_SHA256", request.model_sha256),
        ("steps", "RSISR_STEPS", str(request.steps)),
        ("seed", "RSISR_SEED", str(request.seed)),
        ("tile", "RSISR_TILE", str(request.tile)),
        ("overlap", "RSISR_OVERLAP", str(request.overlap)),
        ("bands", "RSISR_BANDS", ",".join(map(str, bands))),
        ("scaling", "RSISR_SCALING", scaling),
    ]


def _same(name: str, got: str | None, want) -> bool:
    """Tags match; a scaling by its mode for ``auto``, else by its values (``none`` and the
    dtype's range, or an auto run's values given back as a range, make the same output)."""
    if name != "scaling":
        return got == want
    try:
        recorded = json.loads(got or "")
    except ValueError:
        return False
    if not isinstance(recorded, dict):
        return False
    keys = ("mode",) if want["mode"] == "auto" else ("lo", "hi")
    return all(recorded.get(k) == want[k] for k in keys)


def _show(name: str, value) -> str:
    if value is None:
        return "(none)"
    if name == "model":
        return f"sha256 {value[:12]}"
    if name == "scaling":
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except ValueError:
                return repr(value)
        lo, hi = value.get("lo") or [], value.get("hi") or []
        if value.get("mode") == "range" and lo and len(lo) == len(hi):
            pairs = list(zip(lo, hi))
            return ",".join(f"{a:g},{b:g}" for a, b in (pairs[:1] if len(set(pairs)) == 1 else pairs))
        return str(value.get("mode"))
    return str(value)


def _cached_model(model: str | os.PathLike | None, device: str):
    """Load each (model file, device) once per process and keep it."""
    from rsisr.api import default_model_path, load_model
    from rsisr.device import resolve_device

    dev = resolve_device(_worker_device(device))
    key = (str(model) if model is not None else None, str(dev))
    with _MODEL_LOCK:
        if key not in _MODEL_CACHE:
            log.info("loading model %s on %s", model or default_model_path(), dev)
            _MODEL_CACHE[key] = load_model(model, device=dev)
        return _MODEL_CACHE[key], dev


def _worker_device(device: str) -> str:
    """With ``auto`` and several GPUs, worker N of a LocalCluster takes GPU N (one worker per GPU)."""
    if device != "auto":
        return device
    import torch

    if not torch.cuda.is_available() or torch.cuda.device_count() < 2:
        return device
    try:
        from distributed import get_worker

        name = get_worker().name
        index = int(name) if str(name).isdigit() else abs(hash(name))
    except (ImportError, ValueError):
        return device
    return f"cuda:{index % torch.cuda.device_count()}"


def upscale_scene(src: str | os.PathLike, dst: str | os.PathLike, model: str | os.PathLike | None = None,
                  overwrite: bool = False, threads: int | None = None, quiet: bool = False,
                  **options) -> SceneResult:
    """Super-resolve one scene; the per-scene function of :func:`upscale_folder`.

    Skipped when ``dst`` is complete and made with these settings (:func:`scene_status`).
    Errors of the scene itself (a corrupt input, say) come back as a ``failed`` result rather
    than an exception, so ``client.map(upscale_scene, inputs, outputs)`` never loses a batch.
    ``quiet``: no warnings from this scene (``rsisr batch -q``).
    """
    from rsisr.errors import RsisrError
    from rsisr.rasterio_io import undecodable_gdal_messages
    from rsisr.upscale import upscale_file

    t0 = time.perf_counter()
    with _quiet(quiet):
        reason = "--overwrite" if overwrite and Path(dst).exists() else None
        try:
            if not overwrite:
                complete, reason = scene_status(src, dst, request_for(model, **options))
                if complete:
                    return SceneResult(str(src), str(dst), "skipped", 0.0)
            if threads:
                import torch

                torch.set_num_threads(threads)
            Path(dst).parent.mkdir(parents=True, exist_ok=True)
            net, device = _cached_model(model, str(options.pop("device", "auto")))
            with undecodable_gdal_messages():  # in a worker process, no CLI has set them up
                upscale_file(src, dst, model=net, device=device, overwrite=True, progress=False, **options)
        except RsisrError as exc:
            return SceneResult(str(src), str(dst), "failed", time.perf_counter() - t0, str(exc), reason)
        except Exception as exc:  # noqa: BLE001 - any scene failure is reported, the batch goes on
            log.exception("scene %s failed", src)
            return SceneResult(str(src), str(dst), "failed", time.perf_counter() - t0,
                               f"{type(exc).__name__}: {exc}", reason)
    return SceneResult(str(src), str(dst), "done", time.perf_counter() - t0, reason=reason)


@contextmanager
def _quiet(enabled: bool) -> Iterator[None]:
    """With ``enabled``: no warnings and no log records below ERROR while the block runs."""
    if not enabled:
        yield
        return
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logging.disable(previous)


def default_workers() -> int:
    """One worker per GPU when there are GPUs, else one per two cores (at least one)."""
    import torch

    if torch.cuda.is_available():
        return torch.cuda.device_count()
    return max(1, (os.cpu_count() or 1) // 2)


def upscale_folder(input_dir: str | os.PathLike, output_dir: str | os.PathLike, model: str | os.PathLike | None = None,
                   *, pattern: str = "*.tif", recursive: bool = False, workers: int | None = None,
                   threads_per_worker: int | None = None, scheduler: str | None = None,
                   report: str | os.PathLike | None = None, retries: int = DEFAULT_RETRIES, progress: bool = False,
                   overwrite: bool = False, scene_fn: Callable[..., SceneResult] | None = None,
                   **options) -> BatchReport:
    """Super-resolve every scene of ``input_dir`` matching ``pattern`` into ``output_dir``.

    ``scheduler``: the address of an existing dask scheduler (``tcp://host:port``); without it a
    LocalCluster of ``workers`` processes with ``threads_per_worker`` torch threads each. Other
    keywords are :func:`rsisr.upscale.upscale_file`'s options. A failing scene is retried
    ``retries`` times (also when its worker dies), then reported; the rest of the batch goes on.
    """
    from distributed import Client, LocalCluster, as_completed

    # dask.distributed logs cluster start-up and shutdown at INFO, and races at shutdown (a
    # worker's last heartbeat) at ERROR: INFO shows with -v, ERROR by default, nothing with -q.
    level = log.getEffectiveLevel()
    quiet = level > logging.WARNING
    logging.getLogger("distributed").setLevel(logging.INFO if level <= logging.INFO else
                                              logging.CRITICAL if quiet else logging.ERROR)
    logging.getLogger("tornado").setLevel(logging.CRITICAL if quiet else logging.ERROR)
    t0 = time.perf_counter()
    jobs = plan_jobs(input_dir, output_dir, pattern, recursive)
    if model is not None and not Path(model).is_file():
        raise InputError(f"model file {str(model)!r} does not exist; pass the path of a .safetensors model")
    if model is None:
        from rsisr.api import require_default_model

        require_default_model()  # before any cluster starts
    if workers is not None and workers < 1:
        raise InputError(f"--workers must be at least 1, got {workers}")
    fn = scene_fn or upscale_scene
    request = request_for(model, **options)  # also checks tile, overlap, bands and scale before any work
    results: dict[int, SceneResult] = {}
    todo: list[int] = []
    reasons: dict[int, str | None] = {}
    for i, (src, dst) in enumerate(jobs):
        if overwrite:
            complete, reasons[i] = False, "--overwrite" if dst.exists() else None
        else:
            complete, reasons[i] = scene_status(src, dst, request)
        if complete:
            results[i] = SceneResult(str(src), str(dst), "skipped")
        else:
            todo.append(i)

    cluster = None
    n_workers = 0
    if todo:
        if scheduler:
            client = Client(scheduler, timeout="20s")
        else:
            n_workers = workers or default_workers()
            threads = threads_per_worker or max(1, (os.cpu_count() or 1) // n_workers)
            cluster = LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=True,
                                   dashboard_address=":0", silence_logs=logging.CRITICAL if quiet else logging.ERROR)
            client = Client(cluster)
            threads_per_worker = threads
        try:
            n_workers = n_workers or len(client.scheduler_info().get("workers", {}))
            futures = {}
            for i in todo:
                src, dst = jobs[i]
                fut = client.submit(fn, str(src), str(dst), model=str(model) if model else None,
                                    overwrite=overwrite, threads=threads_per_worker, quiet=quiet, retries=retries,
                                    pure=False, key=f"rsisr-scene-{i}-{time.time_ns()}", **options)
                futures[fut] = i
            bar = _bar(progress, len(jobs), len(jobs) - len(todo))
            for fut in as_completed(list(futures)):
                i = futures[fut]
                src, dst = jobs[i]
                try:
                    res = fut.result()
                except Exception as exc:  # noqa: BLE001 - e.g. KilledWorker after repeated worker deaths
                    res = SceneResult(str(src), str(dst), "failed", 0.0, f"{type(exc).__name__}: {exc}")
                    remove_stale(dst.parent)  # the dead workers' temporary files
                if res.reason is None:
                    res.reason = reasons[i]
                results[i] = res
                if bar is not None:
                    bar.update(1)
            if bar is not None:
                bar.close()
        finally:
            # the client first (its heartbeats stop), then the workers, then the scheduler
            client.close()
            if cluster is not None:
                cluster.close()
    out = BatchReport([results[i] for i in range(len(jobs))], time.perf_counter() - t0, n_workers)
    if report is not None:
        out.write_json(report)
    return out


def _bar(progress: bool, total: int, initial: int):
    if not progress:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, unit="scene", desc="batch", disable=None)


def format_table(report: BatchReport) -> str:
    """A plain-text table of the scenes (status, seconds, input, then the error, or why an
    existing output was redone)."""
    rows = [("status", "seconds", "input", "error / reason")]
    for s in report.scenes:
        note = s.error or (f"redone: {s.reason}" if s.reason else "")
        rows.append((s.status, f"{s.seconds:.1f}", s.input, note))
    widths = [max(len(r[c]) for r in rows) for c in range(3)]
    lines = ["  ".join(r[c].ljust(widths[c]) for c in range(3)) + ("  " + r[3] if r[3] else "") for r in rows]
    c = report.counts
    lines.append(f"{c['done']} done, {c['skipped']} skipped, {c['failed']} failed in {report.seconds:.1f} s")
    return "\n".join(lines)


__all__: Sequence[str] = ["BatchReport", "Request", "SceneResult", "format_table", "is_complete", "plan_jobs",
                          "request_for", "scene_status", "upscale_folder", "upscale_scene"]
