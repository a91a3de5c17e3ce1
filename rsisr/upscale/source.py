"""Raster input of ``rsisr upscale``: opening and checking the input, choosing bands, the mask
mode, the ``--scale auto`` statistics sample, and :class:`RasterSource`, which the engine reads
tiles from and the sink reads each output block's inputs from (values and masks together).

Every read goes through :func:`rsisr.rasterio_io.reading` (one InputError naming the file, what
was read and GDAL's message).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from rsisr.errors import BandSelectionWarning, GeoreferencingWarning, InputError

#: Side of the decimated sample that ``--scale auto`` reads.
SAMPLE_SIDE = 1024


@dataclass(frozen=True)
class BlockInput:
    """What one output block needs of the input, read once: the LR ``window`` (rasterio Window),
    ``raw`` values of the model bands (or None where not needed), the dataset ``valid`` mask,
    GDAL's per-band masks ``band_valid`` (nodata rasters) and the ``alpha`` band, each (.., h, w)
    or None."""

    window: object
    raw: np.ndarray | None
    valid: np.ndarray | None
    band_valid: np.ndarray | None
    alpha: np.ndarray | None

    def cut(self, r0: int, r1: int, c0: int, c1: int):
        """(raw, valid) of scene rows [r0, r1) and cols [c0, c1), which lie inside the window."""
        y, x = int(self.window.row_off), int(self.window.col_off)
        rows, cols = slice(r0 - y, r1 - y), slice(c0 - x, c1 - x)
        return self.raw[:, rows, cols], None if self.valid is None else self.valid[rows, cols]


class RasterSource:
    """Reads the model bands (three, or one replicated) of a rasterio dataset, scaled to [0, 1]."""

    def __init__(self, src, indexes: tuple[int, ...], scaling, mask_mode: str, alpha: int | None = None):
        self.src = src
        self.indexes = list(indexes)
        self.scaling = scaling
        self.mask_mode = mask_mode
        self.alpha = alpha
        self.shape = (src.height, src.width)
        self.float = np.dtype(src.dtypes[0]).kind == "f"
        self.gdal_mask = mask_mode in ("nodata", "mask", "alpha")
        self.has_mask = self.gdal_mask or self.float

    def _read(self, fn, what: str, **kwargs):
        from rsisr.rasterio_io import describe_window, reading

        with reading(self.src.name, f"{what} ({describe_window(kwargs['window'], kwargs.get('indexes'))})"):
            return fn(**kwargs)

    def _valid(self, window, raw: np.ndarray | None) -> np.ndarray | None:
        """(h, w) bool: GDAL's dataset mask, and finite values for float rasters."""
        if not self.has_mask:
            return None
        valid = np.ones((int(window.height), int(window.width)), bool)
        if self.gdal_mask:
            valid &= self._read(self.src.dataset_mask, "the mask", window=window) > 0
        if self.float:
            valid &= np.isfinite(raw).all(axis=0)
        return valid

    def read(self, rows, cols):
        """The engine's read: (3, h, w) values in [0, 1] and the validity mask (or None)."""
        from rasterio.windows import Window

        window = Window(cols[0], rows[0], cols[1] - cols[0], rows[1] - rows[0])
        raw = self._read(self.src.read, "pixels", indexes=self.indexes, window=window)
        values = self.scaling.forward(raw)
        if values.shape[0] == 1:
            values = np.repeat(values, 3, axis=0)
        return values, self._valid(window, raw)

    def block(self, window) -> BlockInput:
        """Everything an output block needs of the LR ``window``, each read once: raw values
        where the scaling may carry some over or the mask needs them (floats), the masks, and
        the alpha band."""
        need_raw = self.scaling.mode != "uint8" or self.float
        raw = self._read(self.src.read, "pixels", indexes=self.indexes, window=window) if need_raw else None
        band_valid = alpha = None
        if self.mask_mode == "nodata":
            band_valid = self._read(self.src.read_masks, "the band masks", indexes=self.indexes, window=window) > 0
        if self.alpha is not None:
            alpha = self._read(self.src.read, "the alpha band", indexes=[self.alpha], window=window)
        return BlockInput(window, raw, self._valid(window, raw), band_valid, alpha)


def mask_mode(src, alpha: int | None) -> str:
    from rasterio.enums import MaskFlags

    flags = set(src.mask_flag_enums[0])
    if alpha is not None and MaskFlags.alpha in flags:
        return "alpha"
    if MaskFlags.per_dataset in flags:
        return "mask"
    if MaskFlags.nodata in flags:
        return "nodata"
    return "none"


def parse_bands(bands) -> tuple[int, ...] | None:
    if bands is None or bands == "" or bands == ():
        return None
    if isinstance(bands, int):
        bands = (bands,)
    if isinstance(bands, str):
        try:
            bands = [int(b) for b in bands.replace(" ", "").split(",") if b]
        except ValueError:
            raise InputError(f"invalid --bands {bands!r}; give 1-based band numbers, e.g. 4,3,2") from None
    bands = tuple(int(b) for b in bands)
    if len(bands) not in (1, 3):
        raise InputError(f"--bands takes one band or three (red,green,blue), got {len(bands)}: "
                         f"{','.join(map(str, bands))}")
    return bands


def select_bands(src, bands: tuple[int, ...] | None) -> tuple[tuple[int, ...], int | None]:
    """(model band indexes, alpha band index or None) for ``--bands`` (or the default choice)."""
    from rasterio.enums import ColorInterp

    alpha = next((i for i, ci in zip(src.indexes, src.colorinterp) if ci == ColorInterp.alpha), None)
    candidates = [i for i in src.indexes if i != alpha]
    if bands is not None:
        for b in bands:
            if not 1 <= b <= src.count:
                raise InputError(f"--bands {','.join(map(str, bands))}: band {b} does not exist; "
                                 f"{src.name} has bands 1 to {src.count}")
            if b == alpha:
                raise InputError(f"--bands: band {b} is the alpha band, which rsisr uses as the mask; "
                                 "choose colour bands")
        return bands, alpha
    if len(candidates) == 1:
        return (candidates[0],), alpha
    if len(candidates) == 2:
        warnings.warn(f"{src.name} has 2 bands; using band {candidates[0]} only (choose with --bands N)",
                      BandSelectionWarning, stacklevel=3)
        return (candidates[0],), alpha
    chosen = tuple(candidates[:3])
    if len(candidates) > 3:
        warnings.warn(
            f"{src.name} has {len(candidates)} bands; using bands {','.join(map(str, chosen))} as red, green "
            "and blue (choose others with --bands, e.g. --bands 4,3,2)", BandSelectionWarning, stacklevel=3)
    return chosen, alpha


def open_source(src):
    """(dataset, owned): open a path, or take an open rasterio dataset as it is (both checked
    by :func:`rsisr.rasterio_io.check_raster`)."""
    from rsisr.rasterio_io import check_raster, open_raster

    if hasattr(src, "read") and hasattr(src, "profile"):
        check_raster(src)
        return src, False
    return open_raster(src), True


def check_georeferencing(src) -> None:
    gcps, gcp_crs = src.gcps
    no_transform = src.transform.is_identity
    if no_transform and (gcps or src.rpcs):
        kind = "ground control points" if gcps else "RPCs"
        raise InputError(
            f"{src.name} is georeferenced by {kind} only, without a geotransform; warp it first, "
            f"e.g. `gdalwarp -r cubic {src.name} warped.tif` (or `rio warp`), then upscale warped.tif"
        )
    if no_transform or src.crs is None:
        what = "no geotransform" if no_transform else "no CRS"
        warnings.warn(f"{src.name} has {what}; the output keeps its pixel grid scaled by 1/4 and no "
                      f"{'georeferencing' if no_transform else 'CRS'}", GeoreferencingWarning, stacklevel=3)


def statistics_sample(src, indexes, has_mask: bool):
    """The statistics sample of ``--scale auto``: a decimated read of the whole scene (at most
    SAMPLE_SIDE pixels a side; overviews when present), whatever the window, so that a window
    equals that window of a whole-scene run. Returns (values, valid mask or None)."""
    from rasterio.enums import Resampling
    from rasterio.windows import Window

    from rsisr.rasterio_io import describe_window, reading

    window = Window(0, 0, src.width, src.height)
    factor = max(1.0, max(window.height, window.width) / SAMPLE_SIDE)
    shape = (max(1, int(window.height / factor)), max(1, int(window.width / factor)))
    with reading(src.name, f"the --scale auto statistics sample ({describe_window(window, indexes)})"):
        data = src.read(list(indexes), window=window, out_shape=(len(indexes), *shape), resampling=Resampling.nearest)
        valid = src.dataset_mask(window=window, out_shape=shape) > 0 if has_mask else None
    return data, valid
