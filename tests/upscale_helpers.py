"""Helpers of the upscale tests (imported by them; not a test module)."""

import json
from pathlib import Path

import numpy as np
import rasterio
from affine import Affine
from rasterio.windows import bounds as window_bounds
from scipy.ndimage import binary_dilation


def up4(a):
    return a.repeat(4, axis=-2).repeat(4, axis=-1)


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if "rsisr-tmp" in p.name or p.suffix in (".xml", ".msk"))


def check_against_input(src_path, out_path, window, bands, with_values=True):
    """What a GIS analyst would check: grid, CRS, dtype, bands, nodata, mask, and (nearest
    stand-in) that valid pixels are the input's, x4."""
    with rasterio.open(src_path) as s, rasterio.open(out_path) as o:
        assert o.crs == s.crs
        assert o.transform.almost_equals(s.window_transform(window) @ Affine.scale(0.25), precision=1e-9)
        np.testing.assert_allclose(o.bounds, window_bounds(window, s.transform), rtol=0, atol=1e-6)
        assert (o.width, o.height) == (4 * window.width, 4 * window.height)
        assert o.dtypes[0] == s.dtypes[0]
        assert o.count == len(bands)
        assert o.nodata == s.nodata
        assert o.colorinterp == tuple(s.colorinterp[b - 1] for b in bands)
        assert o.descriptions == tuple(s.descriptions[b - 1] for b in bands)
        mask_in = s.dataset_mask(window=window)
        assert np.array_equal(o.dataset_mask(), up4(mask_in))
        if s.nodata is not None:  # each band's own nodata mask too (what per-band nodata readers see)
            for k, b in enumerate(bands, start=1):
                assert np.array_equal(o.read_masks(k), up4(s.read_masks(b, window=window))), (src_path, b)
        assert o.profile["tiled"] and o.profile["compress"] == "deflate"
        tags = o.tags()
        assert tags["RSISR_BANDS"] == ",".join(map(str, bands)) and "RSISR_SCALING" in tags
        if with_values:
            out = o.read().astype(np.int64)
            ref = up4(s.read(list(bands), window=window)).astype(np.int64)
            valid = o.dataset_mask() > 0
            if s.dtypes[0] == "uint16":
                # Near values outside the stretch the output is the bicubic x4 of the true values
                # (test_radiometry_carry.py); elsewhere it is the stand-in's, exactly.
                scaling = json.loads(tags["RSISR_SCALING"])
                lo = np.array(scaling["lo"])[:, None, None]
                hi = np.array(scaling["hi"])[:, None, None]
                raw = s.read(list(bands), window=window)
                clipped = ((raw < lo) | (raw > hi)).any(axis=0)
                near = up4(binary_dilation(clipped, np.ones((5, 5), bool)))
                valid &= ~near
            diff = np.abs(out - ref)[:, valid]
            # exact, except pixels moved one step off nodata (valid in the input, nodata in these bands)
            assert diff.max(initial=0) <= (1 if s.nodata is not None else 0)
