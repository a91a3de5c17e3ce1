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

Modules: :mod:`~rsisr.batch.jobs` (the plan and the report), :mod:`~rsisr.batch.status` (is an
output complete and made with these settings), :mod:`~rsisr.batch.run` (the scene function and
the cluster).
"""

from __future__ import annotations

from rsisr.batch.jobs import DEFAULT_PATTERN, BatchReport, SceneResult, format_table, plan_jobs
from rsisr.batch.run import DEFAULT_RETRIES, default_workers, upscale_folder, upscale_scene
from rsisr.batch.status import Request, is_complete, request_for, scene_status

__all__ = ["DEFAULT_PATTERN", "DEFAULT_RETRIES", "BatchReport", "Request", "SceneResult", "default_workers",
           "format_table", "is_complete", "plan_jobs", "request_for", "scene_status", "upscale_folder",
           "upscale_scene"]
