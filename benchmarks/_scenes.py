"""Synthetic GeoTIFF scenes for the upscale benchmarks (helper module, not a benchmark)."""

from __future__ import annotations

import numpy as np


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
