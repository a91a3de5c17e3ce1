"""Super-resolve a Cloud Optimized GeoTIFF lazily with xarray and dask, then write it with rioxarray.

    pip install 'rsisr[xarray]'
    python examples/xarray_dask.py INPUT OUTPUT.tif [--chunk 1024] [--model tiny] [--workers N]

INPUT is a path or a URL (``https://...``, ``s3://...``, ``gs://...``, ``/vsicurl/...``): rioxarray
opens it through GDAL with rsisr's settings for remote reads (``rsisr.gdal_env.remote_config``),
so only the byte ranges of the chunks being computed are fetched. ``rsisr.upscale_dataarray`` returns at once with a lazy
result: one output chunk (4x the input chunk) per input chunk, each computed from the input
region it needs (its tiles and their halo), with the tile grid and the noise tied to the scene.
``rio.to_raster`` then computes and writes it chunk by chunk, on dask's threads or, with
``--workers N``, on a local distributed cluster. ``--model tiny``: the untrained test-size model.
"""

from __future__ import annotations

import argparse
import os
import threading
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("input")
    parser.add_argument("output")
    parser.add_argument("--chunk", type=int, default=1024, help="input chunk side in pixels (default 1024)")
    parser.add_argument("--model", default=None,
                        help="a .safetensors model file, or 'tiny' (untrained); default: the bundled model")
    parser.add_argument("--workers", type=int, default=0, help="run on a local distributed cluster of N workers")
    args = parser.parse_args()

    import rasterio
    import rioxarray

    import rsisr
    from rsisr.gdal_env import remote_config

    model = rsisr.build_model("tiny") if args.model == "tiny" else args.model
    # GDAL's settings for remote reads (none for a local file), as environment variables: rioxarray
    # reads when dask computes the chunks, on this process's threads or in worker processes, which
    # inherit them
    os.environ.update(remote_config(args.input))
    scene = rioxarray.open_rasterio(args.input, chunks={"x": args.chunk, "y": args.chunk, "band": -1})
    t0 = time.perf_counter()
    lazy = rsisr.upscale_dataarray(scene, model, device="cpu")
    print(f"input {dict(scene.sizes)} in chunks of {args.chunk}: lazy result in {time.perf_counter() - t0:.2f} s")
    print(f"  {lazy.data!r}")
    t0 = time.perf_counter()
    if args.workers:
        from distributed import Client, LocalCluster, Lock

        with LocalCluster(n_workers=args.workers, threads_per_worker=1) as cluster, Client(cluster):
            # workers write their chunks' windows in turn (rioxarray's recipe for distributed writes)
            lazy.rio.to_raster(args.output, tiled=True, compress="DEFLATE", lock=Lock("rsisr-example-write"))
    else:
        lazy.rio.to_raster(args.output, tiled=True, compress="DEFLATE", lock=threading.Lock())
    with rasterio.open(args.output) as out:
        print(f"{args.output}: {out.width} x {out.height}, {out.count} bands, {out.crs}, "
              f"computed and written in {time.perf_counter() - t0:.1f} s")
        print("tags:", {k: v for k, v in out.tags().items() if k.startswith("RSISR_")})


if __name__ == "__main__":
    main()
