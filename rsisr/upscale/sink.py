"""The raster sink of ``rsisr upscale``: blended [0, 1] blocks back to the raster's values, with
the clipped values carried over (:meth:`rsisr.radiometry.Scaling.carry`) and the input's masks."""

from __future__ import annotations

import numpy as np
import torch

from rsisr.config import SCALE
from rsisr.imageops import bicubic_support
from rsisr.tiling import lr_span, nearest_up
from rsisr.upscale.source import BlockInput, RasterSource


class RasterSink:
    """Converts blended [0, 1] output back to the raster's values and writes it, each block once
    with all bands, with its mask (nodata, internal mask or alpha band, as the input had)."""

    def __init__(self, dst, source: RasterSource, window, bands: int, spread=None):
        """``bands``: the model bands read (1: one band, replicated for the model and averaged back)."""
        self.dst = dst
        self.source = source
        self.window = window  # LR window of the input that the output covers
        self.mask_mode = source.mask_mode
        self.bands = bands
        self.dtype = np.dtype(dst.dtypes[0])
        self.nodata = dst.nodata
        bh, bw = dst.block_shapes[0]
        self.block_shape = (bh, bw)
        # an ensemble's standard deviation goes here (rsisr.upscale.uncertainty.SpreadWriter), or nowhere
        self.spread = spread

    def write(self, row: int, col: int, data: torch.Tensor, std: torch.Tensor | None = None) -> None:
        from rasterio.windows import Window

        h, w = data.shape[-2:]
        if self.bands == 1:
            data = data.mean(dim=0, keepdim=True)
            std = None if std is None else std.mean(dim=0, keepdim=True)  # the ensemble's channels agree
        oy, ox = SCALE * int(self.window.row_off), SCALE * int(self.window.col_off)
        rows, cols = (oy + row, oy + row + h), (ox + col, ox + col + w)
        # One read of the input for this block: its LR pixels and the bicubic taps around them.
        ra, rb, _, _ = bicubic_support(*rows, self.source.shape[0], SCALE)
        ca, cb, _, _ = bicubic_support(*cols, self.source.shape[1], SCALE)
        block = self.source.block(Window(ca, ra, cb - ca, rb - ra))
        carry = self._carry(block, rows, cols, data.device)
        values = self._values(data, carry)
        if self.source.choice.others:
            values = self.source.choice.assemble(values, self._others(rows, cols))
        masks = None
        if self.source.has_mask or block.alpha is not None:
            masks = self._masks(block, rows, cols)
            values = self._masked(values, masks, Window(col, row, w, h))
        self.dst.write(values, window=Window(col, row, w, h))
        if std is not None and self.spread is not None:
            self.spread.write(Window(col, row, w, h), std, None if carry is None else carry[1], masks)

    def _carry(self, block: BlockInput, rows, cols, device):
        """(x01, weight, extra) on ``device``: what the scaling clipped, carried over
        (:meth:`rsisr.radiometry.Scaling.carry`); None where nothing in reach was clipped."""
        scaling = self.source.scaling
        if scaling.mode == "uint8":
            return None
        carry = scaling.carry(block.cut, self.source.shape, rows, cols, SCALE)
        return None if carry is None else tuple(t.to(device) for t in carry)

    def _values(self, data: torch.Tensor, carry) -> np.ndarray:
        """The block in the raster's dtype: the scaling's inverse, with what it clipped carried over."""
        scaling = self.source.scaling
        extra = None
        if carry is not None:
            x01, weight, extra = carry
            data = data.double()
            data += weight * (x01 - data)
            extra = extra if data.device.type != "cpu" else extra.numpy()
        if data.device.type == "cpu":  # numpy: same float64 result, no thread pool to wait on
            return scaling.inverse(data.numpy(), self.dtype, extra)
        return scaling.inverse_torch(data, self.dtype, extra)

    def _others(self, rows, cols) -> np.ndarray:
        """The bands written bicubic x4 (``--other-bands bicubic``), in the raster's dtype."""
        from rsisr.radiometry import to_dtype
        from rsisr.upscale.bands import other_bands_up
        from rsisr.upscale.engine import FILL_GROW

        grow = FILL_GROW if self.source.has_mask else 0
        up = other_bands_up(self.source.read_others, self.source.shape, rows, cols, grow, SCALE)
        return to_dtype(up.numpy(), self.dtype)

    def _masks(self, block: BlockInput, rows, cols):
        """(valid, band_valid, alpha) of the HR rows/cols: nearest x4 of the block's dataset mask,
        per-band masks and alpha band (each None where the input has none)."""
        (ya, yb), (xa, xb) = rows, cols
        r0, r1, dy = lr_span(ya, yb)
        c0, c1, dx = lr_span(xa, xb)
        y, x = r0 - int(block.window.row_off), c0 - int(block.window.col_off)
        inner = (slice(y, y + r1 - r0), slice(x, x + c1 - c0))
        shape, offset = (yb - ya, xb - xa), (dy, dx)
        valid = band_valid = alpha = None
        if self.source.has_mask:
            valid = nearest_up(block.valid[inner], offset, shape)
            if block.band_valid is not None:
                band_valid = nearest_up(block.band_valid[(slice(None), *inner)], offset, shape)
        if block.alpha is not None:  # also when nodata shadows the alpha band in GDAL's mask flags
            alpha = nearest_up(block.alpha[(slice(None), *inner)], offset, shape)
        return valid, band_valid, alpha

    def _masked(self, values: np.ndarray, masks, window) -> np.ndarray:
        """``masks`` (:meth:`_masks`) applied to ``values`` and written (an internal mask), and
        the alpha band added."""
        valid, band_valid, alpha = masks
        if valid is not None:
            self._apply_mask(values, valid, band_valid)
            if self.mask_mode == "mask":
                self.dst.write_mask(np.where(valid, 255, 0).astype(np.uint8), window=window)
        if alpha is not None:
            values = np.concatenate([values, alpha])
        return values

    def _apply_mask(self, values: np.ndarray, valid: np.ndarray, band_valid: np.ndarray | None = None) -> None:
        """Write nodata / NaN / 0 where the input was invalid (nearest x4).

        With a nodata value, each band's own mask is kept too (``band_valid``, (C, h, w), GDAL's
        per-band masks of the input x4): a band is nodata exactly where the input band was, and a
        valid value that the model made equal to nodata moves one step away. So the output's band
        masks and dataset mask are the input's x4 (without this a dark band clipped to 0 would
        read as a hole in tools that honour per-band nodata).
        """
        invalid = ~valid
        if self.nodata is not None:
            nodata = np.array(self.nodata).astype(self.dtype)
            values[:, invalid] = nodata
            if not np.isnan(nodata):
                if self.dtype.kind == "f":
                    step = np.nextafter(nodata, np.inf).astype(self.dtype)
                else:
                    step = nodata + 1 if nodata < np.iinfo(self.dtype).max else nodata - 1
                if band_valid is None:
                    # a valid pixel equal to nodata in every band would turn invalid: one step away
                    same = valid & np.all(values == nodata, axis=0)
                    values[0][same] = step
                else:
                    values[(values == nodata) & band_valid] = step
                    values[~band_valid] = nodata
        elif self.dtype.kind == "f":
            values[:, invalid] = np.nan
        else:
            values[:, invalid] = 0

