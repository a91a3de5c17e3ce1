"""One scene split over a Dask cluster, bit-identical to a single-process run
(``rsisr upscale --workers N`` / ``--scheduler ADDRESS``).

The engine ties the tile grid and the latent noise to scene coordinates, and the sink's
conversion (scaling, the clipped-value carry, masks) is a function of scene coordinates too, so
a window computed alone equals that window of a whole-scene run. :mod:`~rsisr.distributed.parts`
cuts the output where that holds exactly, model calls included; each Dask task computes one part
into a temporary GeoTIFF beside the target (:mod:`~rsisr.distributed.worker`), and the client
assembles the parts into the output with the single-process run's profile, creation options,
tags and masks (:mod:`~rsisr.distributed.job`). Parts are the unit of retry and of resume
(:mod:`~rsisr.distributed.run`). ``rsisr batch`` splits its last scenes the same way when it has
more workers than scenes left (:mod:`~rsisr.distributed.scenes`).
"""

from __future__ import annotations

from rsisr.distributed.parts import Part, choose_rows, split
from rsisr.distributed.run import DEFAULT_RETRIES, DistributedResult, upscale_distributed
from rsisr.distributed.worker import PartStats, run_part

__all__ = ["DEFAULT_RETRIES", "DistributedResult", "Part", "PartStats", "choose_rows", "run_part", "split",
           "upscale_distributed"]
