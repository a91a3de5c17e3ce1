"""The uncertainty raster of an ensemble (``rsisr upscale --ensemble N --uncertainty FILE``).

Per pixel and output band: the standard deviation of the N samples (population, ddof 0: the
variance of the blended moments, :mod:`rsisr.upscale.ensemble`), in the output's units, as
float32. The output is ``inverse((1 - weight) * model + weight * x01) + extra``
(:meth:`rsisr.radiometry.Scaling.carry`), affine in the model's value, so a spread of ``s`` in
model units is ``s * (1 - weight) * (hi - lo)`` in the output's: where the input was clipped the
output is the bicubic x4 of the true values, which every sample shares, and the spread is 0. It
is the spread before the output's rounding to its dtype.

Same grid, CRS and transform as the output, one band per output band (the alpha band aside; a
band written bicubic with ``--other-bands bicubic`` has a spread of 0);
the same mask: with a nodata value, nodata = NaN in each band where the output band is nodata;
with an internal mask or an alpha band, an internal mask equal to the output's dataset mask (and
NaN there). Written in the same atomic pass as the output (:func:`rsisr.upscale.output.write_geotiffs`),
with rsisr's float32 creation options (``--co`` is for the output) and the output's block size;
``--cog`` makes both Cloud Optimized GeoTIFFs. Tags: the output's, with ``RSISR_ENSEMBLE``,
``RSISR_ENSEMBLE_SEEDS``, ``RSISR_UNCERTAINTY`` and ``RSISR_OUTPUT`` (the output's file name).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from rsisr.errors import ConfigError, OutputError

#: What the uncertainty raster holds (its ``RSISR_UNCERTAINTY`` tag).
UNCERTAINTY_TAG = "std: per-pixel standard deviation of the ensemble's samples (ddof 0), in the output's units"


def same_file(a: Path, b: Path) -> bool:
    if a.resolve() == b.resolve():
        return True
    return a.exists() and b.exists() and os.path.samefile(a, b)


def require_ensemble(what: str, ensemble: int) -> None:
    """A one-line ConfigError unless ``ensemble`` has the 2 samples that a spread needs."""
    if ensemble < 2:
        raise ConfigError(f"{what} needs an ensemble to measure a spread: add --ensemble N with N of 2 or more "
                          "(e.g. --ensemble 8)")


def check_uncertainty(path, ensemble: int, output, src_name: str, overwrite: bool) -> Path | None:
    """``--uncertainty`` checked before any work: None when not asked for, else its path. It
    needs an ensemble of 2 or more, and must differ from the output and the input."""
    from rsisr.upscale.output import check_output

    if path is None:
        return None
    path = Path(path)
    require_ensemble(f"--uncertainty {str(path)!r}", ensemble)
    if output is not None and same_file(path, Path(output)):
        raise OutputError(f"--uncertainty {str(path)!r} is the output file; give it another name, e.g. "
                          f"{Path(output).stem}_std.tif")
    return check_output(path, src_name, overwrite, "uncertainty raster")


def spread_units(std: torch.Tensor, scaling, weight: torch.Tensor | None = None) -> np.ndarray:
    """(C, h, w) standard deviation in model units [0, 1] -> float32 numpy in the output's
    units: times ``(1 - weight)`` (the carry's weight, :meth:`Scaling.carry`) and ``hi - lo``."""
    s = std.double()
    if weight is not None:
        s = s * (1.0 - weight.to(s.device, s.dtype))
    span = torch.tensor([h - lo for lo, h in zip(scaling.lo, scaling.hi)], dtype=s.dtype, device=s.device)
    return (s * span[:, None, None]).float().cpu().numpy()


class SpreadWriter:
    """Writes the blocks of the uncertainty raster beside :class:`rsisr.upscale.sink.RasterSink`
    (which calls :meth:`write` with each block's carry weight and masks). ``choice``: the output's
    :class:`~rsisr.upscale.bands.BandChoice`; bands written bicubic (``--other-bands bicubic``) do
    not depend on the model, and their spread is 0."""

    def __init__(self, dst, scaling, mask_mode: str, choice=None):
        self.dst = dst
        self.scaling = scaling
        self.mask_mode = mask_mode
        self.choice = choice

    def write(self, window, std: torch.Tensor, weight: torch.Tensor | None, masks) -> None:
        values = spread_units(std, self.scaling, weight)
        if self.choice is not None and self.choice.others:
            values = self.choice.assemble(values, np.zeros((len(self.choice.others), *values.shape[1:]), np.float32))
        valid, band_valid, _ = masks if masks is not None else (None, None, None)
        if valid is not None:
            values[:, ~valid] = np.nan
            if band_valid is not None:
                values[~band_valid] = np.nan
            if self.mask_mode in ("mask", "alpha"):
                self.dst.write_mask(np.where(valid, 255, 0).astype(np.uint8), window=window)
        self.dst.write(values, window=window)


@dataclass(frozen=True)
class SpreadPlan:
    """The uncertainty raster of an upscale: path, profile, COG options, band texts and tags."""

    path: Path
    profile: dict
    cog_options: dict | None
    descriptions: list
    units: list
    scales: list | None
    tags: dict


def spread_plan(path: Path, plan, tags: dict, output_name: str) -> SpreadPlan:
    """The :class:`SpreadPlan` beside the output's :class:`~rsisr.upscale.plan.UpscalePlan`
    (``tags``: the ensemble's); checks that it fits on its disk."""
    from rsisr.gdal_env import cog_defaults, gtiff_defaults
    from rsisr.rasterio_io import check_output_space

    out_bands = plan.choice.out if plan.choice is not None else plan.indexes  # the output's, alpha aside
    n = len(out_bands)
    out = plan.profile
    blocks = {k: out[k] for k in ("TILED", "BLOCKXSIZE", "BLOCKYSIZE") if k in out}
    profile = dict(driver="GTiff", width=out["width"], height=out["height"], count=n, dtype="float32",
                   crs=out["crs"], transform=out["transform"],
                   nodata=float("nan") if plan.mask_mode == "nodata" else None, **{**gtiff_defaults(np.float32), **blocks})
    check_output_space(path, out["width"], out["height"], n, np.float32, plan.mask_mode in ("mask", "alpha"))
    descriptions = [f"std of {d}" if d else f"std of band {b}" for d, b in zip(plan.descriptions, out_bands)]
    return SpreadPlan(path=path, profile=profile, cog_options=cog_defaults() if plan.cog_options is not None else None,
                      descriptions=descriptions, units=list(plan.units[:n]),
                      scales=None if plan.scales is None else list(plan.scales[:n]),
                      tags={**plan.tags, **tags, "RSISR_UNCERTAINTY": UNCERTAINTY_TAG, "RSISR_OUTPUT": output_name})


def write_spread_metadata(out, spread: SpreadPlan) -> None:
    """Band texts, scales (offsets 0: a spread has no offset) and tags into the open raster."""
    for k, (description, unit) in enumerate(zip(spread.descriptions, spread.units), start=1):
        out.set_band_description(k, description)
        if unit:
            out.set_band_unit(k, unit)
    if spread.scales is not None:
        out.scales = spread.scales
        out.offsets = [0.0] * len(spread.scales)
    out.update_tags(**spread.tags)

