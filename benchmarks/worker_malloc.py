"""glibc's malloc settings in a Dask worker: page faults, CPU time and wall time per scene with
and without :func:`rsisr.malloc.keep_freed_memory`, on two one-worker LocalClusters side by side
(both made as ``rsisr batch`` makes its own, so without dask's ``MALLOC_TRIM_THRESHOLD_``).

    python benchmarks/worker_malloc.py [--scene PATH] [--rounds 3]

Each round runs ``upscale_scene`` once on each cluster (the order alternates), one torch thread,
the default model at ``--precision auto``; the first round warms up and is left out. Figures are
the worker process's own ``getrusage`` deltas: minor page faults, user and system CPU seconds.
Page faults do not depend on what else the machine runs; times do (the load average is printed).
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import tempfile
from contextlib import ExitStack
from pathlib import Path

SCENE = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "geotiff" / "rasterio_cogeo_rgb_u8_3857_0.6m.tif"


def _usage() -> tuple[int, float, float]:
    u = resource.getrusage(resource.RUSAGE_SELF)
    return u.ru_minflt, u.ru_utime, u.ru_stime


def _tune() -> bool:
    from rsisr.malloc import keep_freed_memory

    return keep_freed_memory()


def main() -> None:
    from rsisr.batch.run import _client, upscale_scene

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scene", default=str(SCENE))
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    print(f"scene {args.scene}; load average {os.getloadavg()}")
    figures: dict[str, list[tuple[int, float, float, float]]] = {"glibc default": [], "keep_freed_memory": []}
    with ExitStack() as stack, tempfile.TemporaryDirectory() as tmp:
        clients = {}
        for mode in figures:
            client, _, _ = stack.enter_context(_client(None, 1, 1, True))
            if mode == "keep_freed_memory":
                assert all(client.run(_tune).values()), "mallopt failed in the worker"
            clients[mode] = client
        for r in range(args.rounds):
            for mode in (list(figures) if r % 2 == 0 else list(figures)[::-1]):
                client = clients[mode]
                (before,) = client.run(_usage).values()
                result = client.submit(upscale_scene, args.scene, f"{tmp}/{r}-{mode[:4]}.tif", overwrite=True,
                                       threads=1, quiet=True, pure=False).result()
                (after,) = client.run(_usage).values()
                assert result.status == "done", result
                row = (after[0] - before[0], after[1] - before[1], after[2] - before[2], result.seconds)
                print(f"round {r} {mode:18s} faults {row[0]:>9,d} user {row[1]:6.1f} s sys {row[2]:5.1f} s "
                      f"wall {row[3]:6.1f} s")
                if r:
                    figures[mode].append(row)
    print(f"median of rounds 1-{args.rounds - 1}; load average {os.getloadavg()}")
    for mode, rows in figures.items():
        med = [statistics.median(col) for col in zip(*rows)]
        print(f"{mode:18s} faults {med[0]:>9,.0f} user {med[1]:6.1f} s sys {med[2]:5.1f} s wall {med[3]:6.1f} s")


if __name__ == "__main__":
    main()
