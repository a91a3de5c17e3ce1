"""Shared helpers of the upscale benchmarks (not a benchmark): synthetic GeoTIFF scenes, and the
bare model calls that the engine makes for a scene."""

from __future__ import annotations

import time

import numpy as np
import torch


def make_scene(path, size: int, block: int = 512, dtype: str = "uint8") -> str:
    """A size x size RGB GeoTIFF (tiled, DEFLATE) with texture, written block row by block row."""
    import rasterio
    from rasterio.transform import from_origin
    from rasterio.windows import Window

    profile = dict(driver="GTiff", width=size, height=size, count=3, dtype=dtype, crs="EPSG:32633",
                   transform=from_origin(500000.0, 5000000.0, 10.0, 10.0), tiled=True, blockxsize=block,
                   blockysize=block, compress="deflate", predictor=2)
    rng = np.random.default_rng(0)
    with rasterio.open(path, "w", **profile) as dst:
        for r in range(0, size, block):
            h = min(block, size - r)
            yy, xx = np.mgrid[r:r + h, 0:size]
            base = (np.sin(xx / 23.0) + np.cos(yy / 17.0) + 2.0) * 60.0
            data = np.stack([base + 10 * b for b in range(3)]) + rng.normal(0, 8, (3, h, size))
            dst.write(np.clip(data, 0, 255).astype(dtype), window=Window(0, r, size, h))
    return str(path)


def bare_forward_seconds(engine, shape, window) -> float:
    """Time only the model calls the engine makes for ``window`` of a scene of ``shape``."""
    from rsisr.config import SCALE

    py, px = engine.plans(shape)
    r, c, h, w = window
    calls = []
    for i in py.intersecting(SCALE * r, SCALE * (r + h)):
        groups: dict[int, list[int]] = {}
        for j in px.intersecting(SCALE * c, SCALE * (c + w)):
            groups.setdefault(px.size(j), []).append(j)
        for tw, js in groups.items():
            for k in range(0, len(js), engine.batch_size):
                batch = js[k:k + engine.batch_size]
                x = torch.rand(len(batch), 3, py.size(i), tw, device=engine.device) * 2 - 1
                origins = [(py.start(i), px.start(j)) for j in batch]
                calls.append((x, engine.noises(origins, py.size(i), tw)))
    sync = torch.cuda.synchronize if engine.device.type == "cuda" else (lambda: None)
    with torch.inference_mode():
        sync()
        t0, c0 = time.perf_counter(), time.process_time()
        for x, noises in calls:
            engine.model(x, noises, engine.steps)
        sync()
    return time.perf_counter() - t0, time.process_time() - c0
