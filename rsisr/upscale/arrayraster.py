"""Arrays with georeferencing as rasters: :class:`ArrayRaster` reads like an open rasterio
dataset, :class:`ArrayOutput` takes writes like one.

They carry arrays (:func:`rsisr.upscale_dataarray`) through exactly the steps of ``rsisr
upscale``: the plan (:func:`~rsisr.upscale.plan.make_plan`: bands, window, masks, the ``--scale
auto`` sample, tags), :class:`~rsisr.upscale.source.RasterSource`, the engine and
:class:`~rsisr.upscale.sink.RasterSink`. So the same pixels and options give the same output as
a GeoTIFF, with the same nodata rules. Masks come from nodata alone (GDAL's rules for a raster
with a nodata value: a band is invalid where it equals nodata, a pixel where every band does) and,
for floats, from non-finite values.

An :class:`ArrayRaster` may hold only a region of the scene (``data[:, 0, 0]`` is scene pixel
``origin``): the pieces of a chunked run (:mod:`rsisr.upscale.chunked`) hold the region their
output needs, and a read outside it is a bug (RuntimeError), never a silent wrong answer.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

#: Output block of :class:`ArrayOutput`: the GeoTIFF block, so blocks are cut as in a file run.
OUTPUT_BLOCK = (512, 512)


@dataclass(frozen=True)
class RasterMeta:
    """What the header of an array raster holds (picklable; a chunked run sends it to workers).

    ``shape`` (H, W) is the whole scene's; ``dtype`` the raster's values. ``decoded``: the float
    dtype of the array when it holds ``dtype`` values decoded to floats with NaN for ``nodata``
    (rioxarray's ``masked=True``); reads give them back in ``dtype``, and results come back as
    ``decoded`` floats with NaN where the output is nodata. None: the array holds ``dtype``.
    """

    name: str
    shape: tuple[int, int]
    count: int
    dtype: str
    nodata: float | None = None
    crs: object = None
    transform: object = None
    tags: dict = field(default_factory=dict)
    descriptions: tuple = ()
    units: tuple = ()
    scales: tuple = ()
    offsets: tuple = ()
    decoded: str | None = None


def gdal_nearest(n: int, length: int) -> np.ndarray:
    """The pixels (int64) GDAL's nearest-neighbour read of ``length`` pixels into ``n`` takes:
    floor((i + 0.5) * length / n), so a decimated sample equals a decimated read of a file."""
    return ((np.arange(n) + 0.5) * (length / n)).astype(np.int64)


class ArrayRaster:
    """A (C, h, w) array (numpy, or dask where only :meth:`read` of a decimated sample is used)
    and its :class:`RasterMeta`, with the parts of rasterio's reading interface that rsisr uses."""

    def __init__(self, data, meta: RasterMeta, origin: tuple[int, int] = (0, 0)):
        from affine import Affine
        from rasterio.enums import ColorInterp, MaskFlags

        self.data = data
        self.meta = meta
        self.origin = (int(origin[0]), int(origin[1]))
        self.name = meta.name
        self.height, self.width = meta.shape
        self.shape = meta.shape
        self.count = meta.count
        self.indexes = tuple(range(1, meta.count + 1))
        self.dtypes = (np.dtype(meta.dtype).name,) * meta.count
        self.nodata = None if meta.nodata is None else float(meta.nodata)
        self.crs = meta.crs
        self.transform = meta.transform if meta.transform is not None else Affine.identity()
        self.gcps = ([], None)
        self.rpcs = None
        self.colorinterp = (ColorInterp.undefined,) * meta.count  # never alpha: masks come from nodata
        flag = MaskFlags.nodata if meta.nodata is not None else MaskFlags.all_valid
        self.mask_flag_enums = tuple([flag] for _ in range(meta.count))
        self.descriptions = tuple(meta.descriptions) or (None,) * meta.count
        self.units = tuple(meta.units) or (None,) * meta.count
        self.scales = tuple(meta.scales) or (1.0,) * meta.count
        self.offsets = tuple(meta.offsets) or (0.0,) * meta.count
        self._sample = None

    def tags(self) -> dict:
        return dict(self.meta.tags)

    def window_transform(self, window):
        from rasterio.windows import transform

        return transform(window, self.transform)

    # -- values ------------------------------------------------------------------------------
    def _slices(self, window) -> tuple[slice, slice]:
        if window is None:
            return slice(0, self.height), slice(0, self.width)
        r0, c0 = int(window.row_off) - self.origin[0], int(window.col_off) - self.origin[1]
        h, w = int(window.height), int(window.width)
        if r0 < 0 or c0 < 0 or r0 + h > self.data.shape[-2] or c0 + w > self.data.shape[-1]:
            raise RuntimeError(f"read of rows {r0 + self.origin[0]}-{r0 + self.origin[0] + h}, columns "
                               f"{c0 + self.origin[1]}-{c0 + self.origin[1] + w} outside the region held, rows "
                               f"{self.origin[0]}-{self.origin[0] + self.data.shape[-2]}, columns "
                               f"{self.origin[1]}-{self.origin[1] + self.data.shape[-1]}")
        return slice(r0, r0 + h), slice(c0, c0 + w)

    def _encode(self, values) -> np.ndarray:
        """Values in the raster's dtype (decoded floats: NaN back to nodata)."""
        values = np.asarray(values)
        if self.meta.decoded is not None:
            values = np.where(np.isnan(values), self.nodata, values).astype(self.meta.dtype)
        return values

    def _band_valid(self, values: np.ndarray) -> np.ndarray:
        """(C, h, w) bool: GDAL's per-band masks of a nodata raster (all True without nodata)."""
        if self.nodata is None:
            return np.ones(values.shape, bool)
        if np.isnan(self.nodata):
            return ~np.isnan(values)
        return values != self.nodata  # a python float: compared as a float, as GDAL does

    def _decimated(self, shape: tuple[int, int]) -> np.ndarray:
        """All bands, read as GDAL reads the scene into ``shape`` (nearest); computed once."""
        if self._sample is None or self._sample.shape[1:] != tuple(shape):
            if self.origin != (0, 0) or self.data.shape[-2:] != (self.height, self.width):
                raise RuntimeError("a decimated read needs the whole scene")
            rows, cols = gdal_nearest(shape[0], self.height), gdal_nearest(shape[1], self.width)
            sample = self.data[:, rows][:, :, cols]
            self._sample = self._encode(sample.compute() if hasattr(sample, "compute") else sample)
        return self._sample

    def read(self, indexes=None, window=None, out_shape=None, resampling=None, **_) -> np.ndarray:
        """(len(indexes), h, w) values of the 1-based bands ``indexes`` in ``window`` (scene
        coordinates); with ``out_shape``, the whole scene decimated as GDAL's nearest read."""
        bands = [b - 1 for b in (indexes or self.indexes)]
        if out_shape is not None:
            return self._decimated(out_shape[-2:])[bands]
        rows, cols = self._slices(window)
        return self._encode(self.data[bands, rows, cols])

    def read_masks(self, indexes=None, window=None, **_) -> np.ndarray:
        """GDAL's per-band masks (uint8, 255 = valid) of ``indexes`` in ``window``."""
        return np.where(self._band_valid(self.read(indexes, window)), 255, 0).astype(np.uint8)

    def dataset_mask(self, window=None, out_shape=None, **_) -> np.ndarray:
        """GDAL's dataset mask (uint8, 255 = valid): valid where any band is."""
        if self.nodata is None:
            h, w = out_shape if out_shape is not None else (int(window.height), int(window.width))
            return np.full((h, w), 255, np.uint8)
        values = self._decimated(out_shape) if out_shape is not None else self.read(None, window)
        return np.where(self._band_valid(values).any(axis=0), 255, 0).astype(np.uint8)


class ArrayOutput:
    """An in-memory output raster as :class:`~rsisr.upscale.sink.RasterSink` writes it:
    ``array`` (count, height, width) in ``dtype``, written in blocks of :data:`OUTPUT_BLOCK`."""

    def __init__(self, count: int, height: int, width: int, dtype, nodata=None):
        self.array = np.zeros((count, height, width), dtype)
        self.dtypes = (np.dtype(dtype).name,) * count
        self.nodata = nodata
        self.block_shapes = [OUTPUT_BLOCK] * count

    def write(self, values: np.ndarray, window) -> None:
        r, c = int(window.row_off), int(window.col_off)
        self.array[:, r:r + int(window.height), c:c + int(window.width)] = values
