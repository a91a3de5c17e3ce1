"""``rsisr batch`` on a cluster: whole scenes while there are at least as many scenes left as
workers, then the remaining scenes split into parts (:mod:`rsisr.distributed`), so that the last
scenes of a batch do not leave workers idle.

At most one whole scene per worker is in flight. As soon as fewer scenes are waiting than there
are workers, every waiting scene is planned on the client, split, and its parts are submitted;
when a scene's last part ends, the client assembles its output. A failing scene, whole or split,
is reported as ``failed`` and the batch goes on; a split scene's parts folder is removed either way.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from rsisr.batch.jobs import SceneResult
from rsisr.distributed.job import PartJob

log = logging.getLogger(__name__)


@dataclass
class _Split:
    """A scene being computed in parts."""

    index: int
    job: PartJob
    todo: set[int]
    futures: list = field(default_factory=list)
    t0: float = field(default_factory=time.perf_counter)
    over: bool = False  # assembled, or failed


class BatchRun:
    """Runs the scenes ``todo`` (indexes into ``jobs``) on ``client`` and fills ``results``.

    ``submit_scene(i)`` submits scene ``i`` whole and returns its future; ``draft_scene(i)``
    returns the :class:`~rsisr.distributed.prepare.Draft` of scene ``i`` (raising RsisrError
    for a scene that cannot be planned); ``done(i, result)`` records a scene's result.
    ``split=False`` runs every scene whole (a caller's own scene function).
    """

    def __init__(self, client, workers: int, *, submit_scene: Callable, draft_scene: Callable,
                 done: Callable[[int, SceneResult], None], scenes: list[tuple[Path, Path]], retries: int,
                 threads: int | None, quiet: bool, part_size: int | None = None, split: bool = True) -> None:
        from distributed import as_completed

        self.client, self.workers = client, max(1, workers)
        self.submit_scene, self.draft_scene, self.done = submit_scene, draft_scene, done
        self.scenes, self.retries, self.threads, self.quiet, self.part_size = scenes, retries, threads, quiet, part_size
        self.split = split  # False: every scene whole
        self.whole: dict = {}  # future -> scene index
        self.parts: dict = {}  # future -> (split scene, part index)
        self.splits: list[_Split] = []
        self.pending = as_completed()
        self._probe = None

    def run(self, todo: list[int]) -> None:
        queue = list(todo)
        self._fill(queue)
        for fut in self.pending:
            if fut in self.whole:
                self._whole_done(fut)
            else:
                self._part_done(fut)
            self._fill(queue)

    def _fill(self, queue: list[int]) -> None:
        while queue and (len(queue) >= self.workers or not self.split) and len(self.whole) < self.workers:
            i = queue.pop(0)
            fut = self.submit_scene(i)
            self.whole[fut] = i
            self.pending.add(fut)
        if queue and len(queue) < self.workers:
            for i in queue:
                self._split(i)
            queue.clear()

    def _whole_done(self, fut) -> None:
        from rsisr.atomic import remove_stale

        i = self.whole.pop(fut)
        src, dst = self.scenes[i]
        try:
            res = fut.result()
        except Exception as exc:  # noqa: BLE001 - e.g. KilledWorker after repeated worker deaths
            res = SceneResult(str(src), str(dst), "failed", 0.0, f"{type(exc).__name__}: {exc}")
            remove_stale(dst.parent)  # the dead workers' temporary files
        self.done(i, res)

    def _split(self, i: int) -> None:
        """Plan scene ``i`` on the client and submit its parts (its result on failure)."""
        from rsisr.distributed.job import open_folder
        from rsisr.distributed.prepare import finish
        from rsisr.distributed.run import run_part
        from rsisr.distributed.worker import probe
        from rsisr.errors import RsisrError

        src, dst = self.scenes[i]
        t0 = time.perf_counter()
        try:
            d = self.draft_scene(i)
            if self._probe is None:
                self._probe = self.client.submit(probe, d.device, d.precision, pure=False).result()
            job = finish(d, workers=self.workers, device_type=self._probe[0], precision=self._probe[1],
                         part_size=self.part_size, threads=self.threads, quiet=self.quiet)
            kept = {p.index for p in open_folder(job)}
        except RsisrError as exc:
            self.done(i, SceneResult(str(src), str(dst), "failed", time.perf_counter() - t0, str(exc)))
            return
        split = _Split(i, job, {p.index for p in job.parts} - kept, t0=t0)
        self.splits.append(split)
        log.info("%s: %d parts (%d kept)", src, len(job.parts), len(kept))
        for p in sorted(split.todo, key=lambda k: -job.parts[k].tiles):
            fut = self.client.submit(run_part, job, p, None, retries=self.retries, pure=False,
                                     key=f"rsisr-part-{job.key[:12]}-{p}-{time.time_ns()}")
            split.futures.append(fut)
            self.parts[fut] = (split, p)
            self.pending.add(fut)
        if not split.todo:
            self._assemble(split)

    def _part_done(self, fut) -> None:
        split, p = self.parts.pop(fut)
        if split.over:
            return  # its scene already failed
        try:
            fut.result()
        except Exception as exc:  # noqa: BLE001 - the scene fails, the batch goes on
            self._fail(split, exc)
            return
        split.todo.discard(p)
        if not split.todo:
            self._assemble(split)

    def _assemble(self, split: _Split) -> None:
        from rsisr.distributed.job import assemble, discard
        from rsisr.errors import RsisrError

        try:
            assemble(split.job, Path(self.scenes[split.index][1]), True)
        except RsisrError as exc:
            self._fail(split, exc)
            return
        discard(split.job.folder)
        split.over = True
        src, dst = self.scenes[split.index]
        self.done(split.index, SceneResult(str(src), str(dst), "done", time.perf_counter() - split.t0))

    def _fail(self, split: _Split, exc: BaseException) -> None:
        from rsisr.distributed.job import discard
        from rsisr.errors import RsisrError

        split.over = True
        self.client.cancel([f for f in split.futures if not f.done()], force=True)
        discard(split.job.folder)
        src, dst = self.scenes[split.index]
        error = str(exc) if isinstance(exc, RsisrError) else f"{type(exc).__name__}: {exc}"
        self.done(split.index, SceneResult(str(src), str(dst), "failed", time.perf_counter() - split.t0, error))

    def cancel(self) -> None:
        """After an interrupt: cancel everything and remove the split scenes' parts."""
        from rsisr.distributed.job import discard

        self.client.cancel(list(self.whole) + list(self.parts), force=True)
        for split in self.splits:
            if not split.over:
                discard(split.job.folder)
