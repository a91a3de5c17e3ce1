"""Training crops from GeoTIFFs of any number of bands and any integer or float dtype, read
window by window (never a whole file at once).

- :func:`scan_raster` decodes every block of the bands a model reads once (rows of
  ``SCAN_ROWS``), so a damaged file fails before training, and records which cells of
  ``CELL`` x ``CELL`` pixels hold only valid pixels: GDAL's per-band masks of those bands (nodata,
  an internal or external mask, an alpha band) and, for floats, finite values.
- :func:`draw_window` draws a crop window whose every pixel is valid, so nodata and masked pixels
  never enter a crop; an image with no such window is skipped at the scan.
- :func:`read_raster_window` reads one window, scaled to [0, 1] with the record's scaling.

Bands: an N-band model (``ModelConfig.bands``) reads the first N bands that are not an alpha band;
a 3-band model also takes one band (replicated later), as it always has. Scaling: the model's
stored one (``ModelConfig.scaling``) for every file, else uint8 as is and other dtypes as
``rsisr upscale --scale`` does (``data.scale``: ``auto`` = per-file percentiles of a decimated
read of the whole raster).
"""

from __future__ import annotations

import numpy as np

from rsisr.errors import InputError
from rsisr.radiometry import Scaling, resolve_scaling

#: Rows decoded at once when :func:`scan_raster` checks every block of a raster.
SCAN_ROWS = 1024
#: Side of the cells of the validity grid (pixels); SCAN_ROWS is a multiple of it.
CELL = 16
#: Random windows tried per round (:func:`draw_window`) and rounds before the exhaustive draw.
DRAWS, ROUNDS = 64, 8


def raster_bands(src, model_bands: int = 3) -> list[int]:
    """1-based bands a ``model_bands``-band model reads of the open raster ``src``: the first N
    that are not an alpha band (one band for a 3-band model on a raster of one or two)."""
    from rasterio.enums import ColorInterp

    candidates = [i for i, ci in zip(src.indexes, src.colorinterp) if ci != ColorInterp.alpha]
    if len(candidates) >= model_bands:
        return candidates[:model_bands]
    if model_bands == 3 and candidates:
        return candidates[:1]
    raise InputError(f"{src.name} has {len(candidates)} band{'s' if len(candidates) != 1 else ''}; "
                     f"this {model_bands}-band model needs at least {model_bands}")


def _valid_cells(valid: np.ndarray) -> np.ndarray:
    """(h, w) pixel validity -> (ceil(h / CELL), ceil(w / CELL)): True where a cell is all valid
    (pixels past the raster's edge count as valid: no window reaches them)."""
    h, w = valid.shape
    padded = np.ones((-(-h // CELL) * CELL, -(-w // CELL) * CELL), bool)
    padded[:h, :w] = valid
    return padded.reshape(padded.shape[0] // CELL, CELL, padded.shape[1] // CELL, CELL).all(axis=(1, 3))


def scan_raster(path, scale: str = "auto", model_bands: int = 3, stored: Scaling | None = None) -> dict:
    """Decode the model's bands of the raster at ``path`` whole, in row chunks; returns the
    fields of its :class:`rsisr.training.data.ImageRecord`: height, width, bands, scaling and the
    validity grid (None when every pixel is valid). InputError naming the file on a read that fails."""
    from rasterio.windows import Window

    from rsisr.rasterio_io import describe_window, open_raster, reading

    with open_raster(path) as src:
        bands = raster_bands(src, model_bands)
        is_float = np.dtype(src.dtypes[0]).kind == "f"
        rows = []
        for r0 in range(0, src.height, SCAN_ROWS):
            window = Window(0, r0, src.width, min(SCAN_ROWS, src.height - r0))
            with reading(path, f"pixels ({describe_window(window, bands)})"):
                values = src.read(bands, window=window)
                valid = (src.read_masks(bands, window=window) > 0).all(axis=0)
            if is_float:
                valid &= np.isfinite(values).all(axis=0)
            rows.append(_valid_cells(valid))
        grid = np.concatenate(rows)
        scaling = stored
        if scaling is not None and len(bands) != len(scaling.lo):
            scaling = Scaling("model", scaling.lo[:1], scaling.hi[:1])
        if scaling is None and np.dtype(src.dtypes[0]) != np.uint8:
            step = max(1, max(src.height, src.width) // 512)
            shape = (len(bands), max(1, src.height // step), max(1, src.width // step))
            with reading(path, "the statistics sample"):
                sample = src.read(bands, out_shape=shape)
                valid = src.dataset_mask(out_shape=shape[1:]) > 0
            scaling = resolve_scaling(scale, src.dtypes[0], len(bands), sample, valid)
        return dict(height=src.height, width=src.width, bands=tuple(bands), scaling=scaling,
                    grid=None if grid.all() else grid)


def _bad_counts(grid: np.ndarray) -> np.ndarray:
    """Summed-area table of the invalid cells, with a zero row and column in front."""
    bad = np.zeros((grid.shape[0] + 1, grid.shape[1] + 1), np.int64)
    bad[1:, 1:] = np.cumsum(np.cumsum(~grid, axis=0), axis=1)
    return bad


def _windows_valid(bad: np.ndarray, tops, lefts, size: int) -> np.ndarray:
    """Whether each window (top, left, size) covers only all-valid cells."""
    r0, c0 = np.asarray(tops) // CELL, np.asarray(lefts) // CELL
    r1, c1 = (np.asarray(tops) + size - 1) // CELL + 1, (np.asarray(lefts) + size - 1) // CELL + 1
    return (bad[r1, c1] - bad[r0, c1] - bad[r1, c0] + bad[r0, c0]) == 0


def valid_anchors(grid: np.ndarray, height: int, width: int, size: int) -> np.ndarray:
    """(K, 2) cell-aligned (top, left) of every window of ``size`` with only valid pixels. Any
    valid window has one: moving a window up and left to its cell's corner covers no new cell."""
    tops = np.arange(0, height - size + 1, CELL)
    lefts = np.arange(0, width - size + 1, CELL)
    if not len(tops) or not len(lefts):
        return np.zeros((0, 2), np.int64)
    t, l = np.meshgrid(tops, lefts, indexing="ij")
    ok = _windows_valid(_bad_counts(grid), t.ravel(), l.ravel(), size)
    return np.stack([t.ravel()[ok], l.ravel()[ok]], axis=1)


def draw_window(grid: np.ndarray | None, height: int, width: int, size: int, rng: np.random.Generator,
                bad: np.ndarray | None = None) -> tuple[int, int]:
    """(top, left) of a random ``size`` window of an image whose pixels are all valid.

    Without a grid (every pixel valid) one uniform draw, as before grids existed. Otherwise
    ``ROUNDS`` rounds of ``DRAWS`` uniform draws, the first valid one taken; then a uniform choice
    among the cell-aligned valid windows (:func:`valid_anchors`). ``bad``: the grid's
    :func:`_bad_counts` (cached by the caller)."""
    if grid is None:
        return int(rng.integers(height - size + 1)), int(rng.integers(width - size + 1))
    bad = _bad_counts(grid) if bad is None else bad
    for _ in range(ROUNDS):
        tops = rng.integers(height - size + 1, size=DRAWS)
        lefts = rng.integers(width - size + 1, size=DRAWS)
        ok = _windows_valid(bad, tops, lefts, size)
        if ok.any():
            k = int(np.argmax(ok))
            return int(tops[k]), int(lefts[k])
    anchors = valid_anchors(grid, height, width, size)
    if not len(anchors):
        raise InputError(f"no {size}x{size} window without nodata or masked pixels")
    top, left = anchors[int(rng.integers(len(anchors)))]
    return int(top), int(left)


def read_raster_window(path: str, bands: tuple[int, ...], scaling: Scaling | None, top: int, left: int,
                       size: int) -> np.ndarray:
    """(len(bands), size, size) float32 in [0, 1]: the window, scaled (None: uint8 / 255)."""
    from rasterio.windows import Window

    from rsisr.rasterio_io import describe_window, open_raster, reading

    with open_raster(path, check=False) as src:
        window = Window(left, top, size, size)
        with reading(path, f"pixels ({describe_window(window, list(bands))})"):
            values = src.read(list(bands), window=window)
    return values.astype(np.float32) / 255.0 if scaling is None else scaling.forward(values)
