"""Super-resolve whole folders of scenes with dask.distributed, locally or on an existing cluster.

Two entry points:

- :func:`upscale_folder` plans the jobs (output paths mirror the input's relative paths), starts
  a :class:`distributed.LocalCluster` of worker processes (or connects to ``scheduler``), runs
  every scene with retries, and returns a :class:`BatchReport`.
- :func:`upscale_scene` is the per-scene function: users can ``client.map`` it over their own
  file lists. Each worker process loads the model once and keeps it.

Resumable: a scene whose output already exists and opens as a complete raster is skipped
(outputs are written atomically by :func:`rsisr.upscale.upscale_file`, so an existing output is
a finished one).
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from rsisr.errors import InputError, OutputError

log = logging.getLogger(__name__)

#: Attempts per scene in :func:`upscale_folder` beyond the first (a dead worker counts too).
DEFAULT_RETRIES = 1

_MODEL_CACHE: dict[tuple[str | None, str], Any] = {}
_MODEL_LOCK = threading.Lock()


@dataclass
class SceneResult:
    """What happened to one scene: ``status`` is done, skipped or failed."""

    input: str
    output: str
    status: str
    seconds: float = 0.0
    error: str | None = None


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
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")


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
    """True when ``path`` exists and opens as a raster (a finished atomic write)."""
    path = Path(path)
    if not path.is_file():
        return False
    import rasterio
    from rasterio.errors import RasterioIOError

    try:
        with rasterio.open(path) as ds:
            return ds.width > 0 and ds.height > 0 and "RSISR_VERSION" in ds.tags()
    except RasterioIOError:
        return False


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
                  overwrite: bool = False, threads: int | None = None, **options) -> SceneResult:
    """Super-resolve one scene; the per-scene function of :func:`upscale_folder`.

    Errors of the scene itself (a corrupt input, say) come back as a ``failed`` result rather
    than an exception, so ``client.map(upscale_scene, inputs, outputs)`` never loses a batch.
    """
    from rsisr.errors import RsisrError
    from rsisr.upscale import upscale_file

    t0 = time.perf_counter()
    if not overwrite and is_complete(dst):
        return SceneResult(str(src), str(dst), "skipped", 0.0)
    if threads:
        import torch

        torch.set_num_threads(threads)
    try:
        Path(dst).parent.mkdir(parents=True, exist_ok=True)
        _remove_partial(dst)  # left by a worker that was killed while writing this scene
        net, device = _cached_model(model, str(options.pop("device", "auto")))
        upscale_file(src, dst, model=net, device=device, overwrite=True, progress=False, **options)
    except RsisrError as exc:
        return SceneResult(str(src), str(dst), "failed", time.perf_counter() - t0, str(exc))
    except Exception as exc:  # noqa: BLE001 - any scene failure is reported, the batch goes on
        log.exception("scene %s failed", src)
        return SceneResult(str(src), str(dst), "failed", time.perf_counter() - t0, f"{type(exc).__name__}: {exc}")
    return SceneResult(str(src), str(dst), "done", time.perf_counter() - t0)


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

    # dask.distributed logs cluster start-up and shutdown at INFO; show it only when rsisr itself
    # logs at INFO or below (-v).
    logging.getLogger("distributed").setLevel(logging.INFO if log.getEffectiveLevel() <= logging.INFO else logging.ERROR)
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
    results: dict[int, SceneResult] = {}
    todo: list[int] = []
    for i, (src, dst) in enumerate(jobs):
        if not overwrite and is_complete(dst):
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
                                   dashboard_address=":0", silence_logs=logging.ERROR)
            client = Client(cluster)
            threads_per_worker = threads
        try:
            n_workers = n_workers or len(client.scheduler_info().get("workers", {}))
            futures = {}
            for i in todo:
                src, dst = jobs[i]
                fut = client.submit(fn, str(src), str(dst), model=str(model) if model else None,
                                    overwrite=overwrite, threads=threads_per_worker, retries=retries,
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
                    _remove_partial(dst)
                results[i] = res
                if bar is not None:
                    bar.update(1)
            if bar is not None:
                bar.close()
        finally:
            client.close()
            if cluster is not None:
                cluster.close()
    out = BatchReport([results[i] for i in range(len(jobs))], time.perf_counter() - t0, n_workers)
    if report is not None:
        out.write_json(report)
    return out


def _remove_partial(dst: str | os.PathLike) -> None:
    """Remove the temporary files that a process killed while writing ``dst`` left behind (the
    engine's own cleanup cannot run in a killed process)."""
    dst = Path(dst)
    for tmp in dst.parent.glob(f".{dst.name}.*.rsisr-tmp*"):
        tmp.unlink(missing_ok=True)


def _bar(progress: bool, total: int, initial: int):
    if not progress:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, unit="scene", desc="batch", disable=None)


def format_table(report: BatchReport) -> str:
    """A plain-text table of the scenes (status, seconds, input, error)."""
    rows = [("status", "seconds", "input", "error")]
    for s in report.scenes:
        rows.append((s.status, f"{s.seconds:.1f}", s.input, s.error or ""))
    widths = [max(len(r[c]) for r in rows) for c in range(3)]
    lines = ["  ".join(r[c].ljust(widths[c]) for c in range(3)) + ("  " + r[3] if r[3] else "") for r in rows]
    c = report.counts
    lines.append(f"{c['done']} done, {c['skipped']} skipped, {c['failed']} failed in {report.seconds:.1f} s")
    return "\n".join(lines)


__all__: Sequence[str] = ["BatchReport", "SceneResult", "format_table", "is_complete", "plan_jobs",
                          "upscale_folder", "upscale_scene"]
