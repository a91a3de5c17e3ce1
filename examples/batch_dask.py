"""Super-resolve folders of scenes with Dask, from a script.

    python examples/batch_dask.py INPUT_DIR OUTPUT_DIR [tcp://scheduler:8786]

The bundled default model runs; set ``RSISR_EXAMPLE_MODEL=path.safetensors`` for your own.

1. ``rsisr.batch.upscale_folder``: the whole job (what ``rsisr batch`` runs): a LocalCluster, or
   an existing cluster when a scheduler address is given.
2. ``rsisr.batch.upscale_scene`` mapped with your own Dask client over your own file list: each
   worker loads the model once and keeps it; a failing scene comes back as a ``failed`` result.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from distributed import Client, LocalCluster

from rsisr.batch import format_table, upscale_folder, upscale_scene


def whole_folder(model: str | None, input_dir: str, output_dir: str, scheduler: str | None) -> None:
    report = upscale_folder(input_dir, output_dir, model, pattern="*.tif", recursive=True, workers=2,
                            scheduler=scheduler, report=Path(output_dir) / "report.json", seed=0)
    print(format_table(report))


def own_file_list(model: str | None, input_dir: str, output_dir: str, scheduler: str | None) -> None:
    inputs = sorted(str(p) for p in Path(input_dir).glob("*.tif"))
    outputs = [str(Path(output_dir) / "mapped" / Path(p).name) for p in inputs]
    cluster = None if scheduler else LocalCluster(n_workers=2, threads_per_worker=1)
    with Client(scheduler or cluster) as client:
        futures = client.map(upscale_scene, inputs, outputs, model=model, seed=0, tile=128, overlap=16,
                             threads=1, pure=False)
        for result in client.gather(futures):
            print(result.status, f"{result.seconds:.1f}s", result.input, result.error or "")
    if cluster is not None:
        cluster.close()


if __name__ == "__main__":
    src_dir, dst_dir = sys.argv[1:3]
    address = sys.argv[3] if len(sys.argv) > 3 else None
    model_path = os.environ.get("RSISR_EXAMPLE_MODEL")  # None: the bundled default model
    whole_folder(model_path, src_dir, dst_dir, address)
    own_file_list(model_path, src_dir, dst_dir, address)
