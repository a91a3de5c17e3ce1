"""Running a batch: :func:`upscale_scene` per scene, :func:`upscale_folder` on a dask cluster."""

from __future__ import annotations

import logging
import os
import threading
import time
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

from rsisr.batch.jobs import DEFAULT_PATTERN, BatchReport, SceneResult, plan_jobs, uncertainty_paths
from rsisr.batch.status import Request, request_for, scene_status
from rsisr.errors import InputError

log = logging.getLogger(__name__)

#: Attempts per scene in :func:`upscale_folder` beyond the first (a dead worker counts too).
DEFAULT_RETRIES = 1

_MODEL_CACHE: dict[tuple[str | None, str], Any] = {}
_MODEL_LOCK = threading.Lock()


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

    Skipped when ``dst`` is complete and made with these settings (:func:`scene_status`), and
    so is the ``uncertainty`` raster (a path, one of ``options``) where one is asked for.
    Errors of the scene itself (a corrupt input, say) come back as a ``failed`` result rather
    than an exception, so ``client.map(upscale_scene, inputs, outputs)`` never loses a batch.
    ``quiet``: no warnings from this scene (``rsisr batch -q``).
    """
    from rsisr import malloc
    from rsisr.errors import RsisrError
    from rsisr.rasterio_io import undecodable_gdal_messages
    from rsisr.upscale import upscale_file

    t0 = time.perf_counter()
    malloc.keep_freed_memory_in_dask_worker()
    with _quiet(quiet):
        reason = "--overwrite" if overwrite and Path(dst).exists() else None
        try:
            if not overwrite:
                complete, reason = scene_status(src, dst, request_for(model, **options), options.get("uncertainty"))
                if complete:
                    return SceneResult(str(src), str(dst), "skipped", 0.0)
            if threads:
                import torch

                torch.set_num_threads(threads)
            for path in (dst, options.get("uncertainty")):
                if path is not None:
                    Path(path).parent.mkdir(parents=True, exist_ok=True)
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
                   *, pattern: str = DEFAULT_PATTERN, recursive: bool = False, workers: int | None = None,
                   threads_per_worker: int | None = None, scheduler: str | None = None,
                   report: str | os.PathLike | None = None, retries: int = DEFAULT_RETRIES, progress: bool = False,
                   overwrite: bool = False, scene_fn: Callable[..., SceneResult] | None = None,
                   uncertainty: str | os.PathLike | None = None, part_size: int | None = None,
                   **options) -> BatchReport:
    """Super-resolve every scene of ``input_dir`` matching ``pattern`` into ``output_dir``.

    ``scheduler``: the address of an existing dask scheduler (``tcp://host:port``); without it a
    LocalCluster of ``workers`` processes with ``threads_per_worker`` torch threads each. Other
    keywords are :func:`rsisr.upscale.upscale_file`'s options, but ``uncertainty`` is a folder:
    each scene's uncertainty raster goes there under its output's relative path. A failing scene is retried
    ``retries`` times (also when its worker dies), then reported; the rest of the batch goes on.
    Once fewer scenes are left than workers, the rest are split into parts of about
    ``part_size`` input rows (default: chosen per scene) over all workers (:mod:`rsisr.distributed`),
    unless ``scene_fn`` replaces :func:`upscale_scene`.
    """
    quiet = _dask_log_levels()
    t0 = time.perf_counter()
    jobs = plan_jobs(input_dir, output_dir, pattern, recursive)
    if model is not None and not Path(model).is_file():
        raise InputError(f"model file {str(model)!r} does not exist; pass the path of a .safetensors model")
    if model is None:
        from rsisr.api import require_default_model

        require_default_model()  # before any cluster starts
    if workers is not None and workers < 1:
        raise InputError(f"--workers must be at least 1, got {workers}")
    request = request_for(model, **options)  # also checks tile, overlap, bands and scale before any work
    spreads = uncertainty_paths(jobs, input_dir, output_dir, uncertainty, request.ensemble)
    results, todo, reasons = _pending(jobs, request, overwrite, spreads)
    n_workers = 0
    if todo:
        with _client(scheduler, workers, threads_per_worker, quiet) as (client, n_workers, threads):
            _run(client, n_workers, threads, quiet, jobs, todo, reasons, results,
                 _bar(progress, len(jobs), len(jobs) - len(todo)),
                 dict(model=str(model) if model else None, overwrite=overwrite, retries=retries, scene_fn=scene_fn,
                      part_size=part_size, options=options, spreads=spreads))
    out = BatchReport([results[i] for i in range(len(jobs))], time.perf_counter() - t0, n_workers)
    if report is not None:
        out.write_json(report)
    return out


def _dask_log_levels() -> bool:
    """Set dask's loggers after rsisr's; returns whether that is quiet (``-q``).

    dask.distributed logs cluster start-up and shutdown at INFO, and races at shutdown (a
    worker's last heartbeat) at ERROR: INFO shows with -v, ERROR by default, nothing with -q.
    """
    import distributed  # noqa: F401  (importing it sets its loggers from dask's config: set ours after)

    level = log.getEffectiveLevel()
    quiet = level > logging.WARNING
    logging.getLogger("distributed").setLevel(logging.INFO if level <= logging.INFO else
                                              logging.CRITICAL if quiet else logging.ERROR)
    logging.getLogger("tornado").setLevel(logging.CRITICAL if quiet else logging.ERROR)
    return quiet


def _pending(jobs: list[tuple[Path, Path]], request: Request, overwrite: bool, spreads: list[Path] | None = None):
    """(results of the scenes already complete, indexes of the others, why each must be (re)done)."""
    results: dict[int, SceneResult] = {}
    todo: list[int] = []
    reasons: dict[int, str | None] = {}
    for i, (src, dst) in enumerate(jobs):
        if overwrite:
            complete, reasons[i] = False, "--overwrite" if dst.exists() else None
        else:
            complete, reasons[i] = scene_status(src, dst, request, None if spreads is None else spreads[i])
        if complete:
            results[i] = SceneResult(str(src), str(dst), "skipped")
        else:
            todo.append(i)
    return results, todo, reasons


@contextmanager
def _client(scheduler: str | None, workers: int | None, threads_per_worker: int | None, quiet: bool):
    """A dask client of the scheduler at ``scheduler``, or of a new LocalCluster of ``workers``
    processes; yields (client, workers, torch threads per worker). Closes what it opened."""
    from distributed import Client, LocalCluster

    cluster = None
    if scheduler:
        client = Client(scheduler, timeout="20s")
        n_workers, threads = 0, threads_per_worker
    else:
        n_workers = workers or default_workers()
        threads = threads_per_worker or max(1, (os.cpu_count() or 1) // n_workers)
        with _worker_environ():
            cluster = LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=True,
                                   dashboard_address=":0", silence_logs=logging.CRITICAL if quiet else logging.ERROR)
        client = Client(cluster)
    try:
        yield client, n_workers or len(client.scheduler_info().get("workers", {})), threads
    finally:
        # the client first (its heartbeats stop), then the workers, then the scheduler
        client.close()
        if cluster is not None:
            cluster.close()


def _worker_environ():
    """dask's environment for new worker processes, less its ``MALLOC_TRIM_THRESHOLD_=65536``:
    with it glibc hands every large tensor back to the OS and the next one page-faults in again,
    which cost the default model 1.6x the CPU time per tile in a worker (3x the page faults;
    448-pixel scene, one thread, two runs each way; README, "One large scene on a Dask cluster")."""
    import dask

    environ = dict(dask.config.get("distributed.nanny.pre-spawn-environ", {}))
    environ.pop("MALLOC_TRIM_THRESHOLD_", None)
    return dask.config.set({"distributed.nanny.pre-spawn-environ": environ})


def _run(client, n_workers: int, threads: int | None, quiet: bool, jobs: list[tuple[Path, Path]], todo: list[int],
         reasons: dict[int, str | None], results: dict[int, SceneResult], bar, how: dict) -> None:
    """Run the scenes ``todo`` (whole, and split into parts once fewer are left than workers,
    :class:`rsisr.distributed.scenes.BatchRun`); each result goes into ``results`` as it ends."""
    from rsisr.distributed.prepare import draft
    from rsisr.distributed.scenes import BatchRun

    options = how["options"]

    def spread(i: int) -> dict:
        return {} if how["spreads"] is None else {"uncertainty": str(how["spreads"][i])}

    def submit_scene(i: int):
        src, dst = jobs[i]
        return client.submit(how["scene_fn"] or upscale_scene, str(src), str(dst), model=how["model"],
                             overwrite=how["overwrite"], threads=threads, quiet=quiet, retries=how["retries"],
                             pure=False, key=f"rsisr-scene-{i}-{time.time_ns()}", **spread(i), **options)

    def draft_scene(i: int):
        src, dst = jobs[i]
        Path(dst).parent.mkdir(parents=True, exist_ok=True)
        with _quiet(quiet):
            return draft(src, dst, how["model"], overwrite=True, **spread(i), **options)

    def done(i: int, res: SceneResult) -> None:
        if res.reason is None:
            res.reason = reasons[i]
        results[i] = res
        if bar is not None:
            bar.update(1)

    batch = BatchRun(client, n_workers, submit_scene=submit_scene, draft_scene=draft_scene, done=done, scenes=jobs,
                     retries=how["retries"], threads=threads, quiet=quiet, part_size=how["part_size"],
                     split=how["scene_fn"] is None)  # a caller's own scene function sees every scene whole
    try:
        batch.run(todo)
    except BaseException:
        batch.cancel()
        raise
    finally:
        if bar is not None:
            bar.close()


def _bar(progress: bool, total: int, initial: int):
    if not progress:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, unit="scene", desc="batch", disable=None)
