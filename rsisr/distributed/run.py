"""Running a split upscale on a Dask cluster: :func:`upscale_distributed`.

The client checks everything and makes the plan (the ``--scale auto`` statistics of the whole
scene are computed here once and travel to every part in the plan), starts or joins the cluster,
asks a worker how it resolves the device and precision, cuts the output into parts
(:mod:`~rsisr.distributed.parts`), keeps the parts an interrupted run left, submits the others
(largest first), and assembles the finished parts into the output. A part whose worker dies is
recomputed elsewhere (Dask reschedules it); one that fails is retried ``retries`` times. After
success, an error or an interrupt, the parts folder is gone; only a client killed outright
leaves it, for the next run to resume.
"""

from __future__ import annotations

import logging
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from rsisr.distributed.job import PartJob, assemble, discard, open_folder
from rsisr.distributed.parts import Part, submission_order
from rsisr.distributed.prepare import draft, finish
from rsisr.distributed.worker import PartStats, probe, run_part
from rsisr.errors import ClusterError, ConfigError

log = logging.getLogger(__name__)

#: Attempts per part beyond the first when it raises (a dead worker's part is rescheduled by Dask).
DEFAULT_RETRIES = 1
#: How long to wait for the first worker of an existing cluster.
WORKER_TIMEOUT = 60


@dataclass(frozen=True)
class DistributedResult:
    """What :func:`upscale_distributed` did: the output, its parts (``parts_run`` computed now,
    ``parts_kept`` from an interrupted run), model runs, and seconds (``model_seconds`` and
    ``part_seconds`` summed over the parts computed now; ``assembly_seconds`` on the client);
    ``stats`` of each part computed now; ``phases``: wall seconds of the plan (checks and the
    statistics sample), starting or joining the cluster, and the parts."""

    path: Path
    width: int
    height: int
    count: int
    parts: tuple[Part, ...]
    parts_run: int
    parts_kept: int
    tiles: int
    workers: int
    seconds: float
    part_seconds: float
    model_seconds: float
    assembly_seconds: float
    scaling: str
    stats: tuple[PartStats, ...] = ()
    phases: dict | None = None
    uncertainty: Path | None = None  # the uncertainty raster, where one was written


def upscale_distributed(src, dst, model=None, *, workers: int | None = None, threads_per_worker: int | None = None,
                        scheduler: str | None = None, client=None, part_size: int | None = None,
                        retries: int = DEFAULT_RETRIES, progress=False, overwrite: bool = False,
                        part_fn: Callable[..., PartStats] | None = None, **options) -> DistributedResult:
    """Super-resolve ``src`` into ``dst`` like :func:`rsisr.upscale.upscale_file` (same keywords
    in ``options``, same output bit for bit at the same precision and torch threads), split into
    parts over a Dask cluster: a new LocalCluster of ``workers`` processes with
    ``threads_per_worker`` torch threads each, the scheduler at ``scheduler``, or ``client``.

    ``part_size``: input rows per part (rounded to whole tile rows); default: chosen from the
    scene, the tile and the number of workers. ``progress``: bool (a bar over the parts) or
    callable(done, total). ``part_fn``: the part task (default :func:`run_part`; tests).
    """
    from rsisr.batch.run import _dask_log_levels

    quiet = _dask_log_levels()
    t0 = time.perf_counter()
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 1):
        raise ConfigError(f"--workers must be at least 1, got {workers!r}")
    if part_size is not None:
        from rsisr.distributed.parts import rows_for_size

        rows_for_size(part_size, 3, 1)  # checks the value before any work
    d = draft(src, dst, model, overwrite=overwrite, **options)
    marks = {"plan": time.perf_counter()}
    folder = None
    try:
        with cluster(client, scheduler, workers, threads_per_worker, quiet) as (c, n_workers, threads):
            device_type, precision = c.submit(probe, d.device, d.precision, pure=False).result()
            marks["cluster"] = time.perf_counter()
            job = finish(d, workers=n_workers, device_type=device_type, precision=precision, part_size=part_size,
                         threads=threads, quiet=quiet)
            folder = job.folder
            kept = open_folder(job)
            done = {p.index for p in kept}
            todo = [p for p in job.parts if p.index not in done]
            log.info("%d parts of %s (%d kept), %d workers", len(job.parts), d.dst, len(kept), n_workers)
            tick, close = _progress(progress, len(job.parts), len(kept))
            try:
                stats = run_parts(c, job, todo, d.model.obj, retries, tick, part_fn)
            finally:
                close()
            marks["parts"] = time.perf_counter()
        assembly = assemble(job, d.dst, overwrite)
    except BaseException:
        if folder is not None:
            discard(folder)
        raise
    discard(folder)
    p = job.plan.profile
    return DistributedResult(d.dst, p["width"], p["height"], p["count"], job.parts, len(todo), len(kept),
                             sum(s.tiles for s in stats), n_workers, time.perf_counter() - t0,
                             sum(s.seconds for s in stats), sum(s.model_seconds for s in stats), assembly,
                             job.plan.scaling.to_tag(), tuple(sorted(stats, key=lambda s: s.index)),
                             {"plan": marks["plan"] - t0, "cluster": marks["cluster"] - marks["plan"],
                              "parts": marks["parts"] - marks["cluster"]},
                             None if job.spread is None else job.spread.path)


def run_parts(client, job: PartJob, todo: list[Part], model_obj, retries: int, tick: Callable[[int], None],
              part_fn: Callable[..., PartStats] | None = None) -> list[PartStats]:
    """Compute the parts ``todo`` of ``job`` on ``client``'s workers; ``tick(1)`` as each ends.
    On any error or interrupt the remaining tasks are cancelled and the error is raised."""
    from distributed import as_completed

    if not todo:
        return []
    model_ref = client.scatter(model_obj, broadcast=True, hash=False) if model_obj is not None else None
    futures = {}
    for part in submission_order(todo):
        fut = client.submit(part_fn or run_part, job, part.index, model_ref, retries=retries, pure=False,
                            key=f"rsisr-part-{job.key[:12]}-{part.index}-{time.time_ns()}")
        futures[fut] = part
    stats = []
    try:
        for fut in as_completed(list(futures)):
            stats.append(_result(fut, futures[fut], job))
            tick(1)
    except BaseException:
        client.cancel(list(futures), force=True)
        raise
    return stats


def _result(fut, part: Part, job: PartJob) -> PartStats:
    from distributed.scheduler import KilledWorker

    from rsisr.errors import RsisrError

    try:
        return fut.result()
    except RsisrError:
        raise
    except KilledWorker as exc:
        raise ClusterError(f"part {part.index} of {job.src} (input rows {part.row_off}-{part.row_off + part.height}, "
                           f"columns {part.col_off}-{part.col_off + part.width}) failed: every worker that ran it died "
                           f"({exc}); check the workers' memory and logs") from None


@contextmanager
def cluster(client, scheduler: str | None, workers: int | None, threads_per_worker: int | None, quiet: bool):
    """Yields (client, workers, torch threads per worker or None): ``client`` as given, the
    scheduler at ``scheduler``, or a new LocalCluster (:func:`rsisr.batch.run._client`)."""
    from rsisr.batch.run import _client

    if client is not None:
        yield client, max(1, len(client.scheduler_info().get("workers", {}))), threads_per_worker
        return
    try:
        context = _client(scheduler, workers, threads_per_worker, quiet)
        c, n, threads = context.__enter__()
    except (OSError, TimeoutError) as exc:
        raise ClusterError(f"cannot reach the Dask scheduler at {scheduler}: {' '.join(str(exc).split())}; start it "
                           "(`dask scheduler`) or check the address") from None
    try:
        if scheduler:
            try:
                c.wait_for_workers(1, timeout=WORKER_TIMEOUT)
            except TimeoutError:
                raise ClusterError(f"the Dask scheduler at {scheduler} has no workers after {WORKER_TIMEOUT} s; "
                                   f"start some (`dask worker {scheduler}`)") from None
            n = len(c.scheduler_info().get("workers", {}))
        yield c, n, threads
    except BaseException:
        context.__exit__(None, None, None)
        raise
    context.__exit__(None, None, None)


def _progress(progress, total: int, initial: int):
    """(tick(n), close) for ``progress``: False, True (a tqdm bar over the parts, silent when
    stderr is not a terminal) or callable(done, total), called at once with the kept parts."""
    if callable(progress):
        state = {"done": initial}
        progress(initial, total)

        def tick(n: int) -> None:
            state["done"] += n
            progress(state["done"], total)

        return tick, lambda: None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=total, initial=initial, unit="part", desc="upscale", disable=None, leave=False)
        return bar.update, bar.close
    return (lambda n: None), (lambda: None)


__all__ = ["DEFAULT_RETRIES", "DistributedResult", "cluster", "run_parts", "upscale_distributed"]
