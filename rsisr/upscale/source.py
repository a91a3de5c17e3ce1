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

from rsisr.errors import GeoreferencingWarning, InputError
from rsisr.upscale.bands import BandChoice, choose_bands, parse_bands  # noqa: F401 - parse_bands is re-exported

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
    """Reads the model bands of a rasterio dataset, scaled to [0, 1] (one band replicated for a
    3-band model), and what each output block needs: masks, the alpha band and, with
    ``--other-bands bicubic``, the other bands' raw values (``choice``)."""

    def __init__(self, src, indexes: tuple[int, ...], scaling, mask_mode: str, alpha: int | None = None,
                 model_bands: int = 3, choice: BandChoice | None = None):
        self.src = src
        self.indexes = list(indexes)
        self.scaling = scaling
        self.mask_mode = mask_mode
        self.alpha = alpha
        self.shape = (src.height, src.width)
        self.float = np.dtype(src.dtypes[0]).kind == "f"
        self.gdal_mask = mask_mode in ("nodata", "mask", "alpha")
        self.has_mask = self.gdal_mask or self.float
        self.replicate = model_bands if len(self.indexes) == 1 else 1
        self.choice = choice or BandChoice(tuple(indexes), tuple(indexes))

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
        if self.float and raw is not None:
            valid &= np.isfinite(raw).all(axis=0)
        return valid

    def read(self, rows, cols):
        """The engine's read: (C, h, w) values in [0, 1] and the validity mask (or None)."""
        from rasterio.windows import Window

        window = Window(cols[0], rows[0], cols[1] - cols[0], rows[1] - rows[0])
        raw = self._read(self.src.read, "pixels", indexes=self.indexes, window=window)
        values = self.scaling.forward(raw)
        if self.replicate > 1:
            values = np.repeat(values, self.replicate, axis=0)
        return values, self._valid(window, raw)

    def read_others(self, r0: int, r1: int, c0: int, c1: int):
        """Raw values of the bands written bicubic x4 and the dataset mask (or None) of LR rows
        [r0, r1) and cols [c0, c1) (:func:`rsisr.upscale.bands.other_bands_up`)."""
        from rasterio.windows import Window

        window = Window(c0, r0, c1 - c0, r1 - r0)
        raw = self._read(self.src.read, "pixels", indexes=list(self.choice.others), window=window)
        return raw, self._valid(window, None)

    def block(self, window) -> BlockInput:
        """Everything an output block needs of the LR ``window``, each read once: raw values
        where the scaling may carry some over or the mask needs them (floats), the masks (of
        every band written), and the alpha band."""
        need_raw = self.scaling.mode != "uint8" or self.float
        raw = self._read(self.src.read, "pixels", indexes=self.indexes, window=window) if need_raw else None
        band_valid = alpha = None
        if self.mask_mode == "nodata":
            band_valid = self._read(self.src.read_masks, "the band masks", indexes=list(self.choice.out),
                                    window=window) > 0
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


def select_bands(src, bands: tuple[int, ...] | None, model_bands: int = 3,
                 other_bands: str | None = None) -> tuple[tuple[int, ...], int | None]:
    """(model band indexes, alpha band index or None) for ``--bands`` (or the default choice)."""
    choice, alpha = band_choice(src, bands, model_bands, other_bands)
    return choice.model, alpha


def band_choice(src, bands: tuple[int, ...] | None, model_bands: int = 3, other_bands: str | None = None):
    """(:class:`~rsisr.upscale.bands.BandChoice`, alpha band index or None) of the open raster."""
    from rasterio.enums import ColorInterp

    alpha = next((i for i, ci in zip(src.indexes, src.colorinterp) if ci == ColorInterp.alpha), None)
    return choose_bands(src.count, model_bands, bands, other_bands, src.name, alpha), alpha


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
