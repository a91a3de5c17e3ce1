"""The plan of one ``rsisr upscale``: everything decided before any pixel is read.

:func:`make_plan` resolves, from the open input and the options, the model bands and the alpha
band, the LR window (``--bounds``/``--aoi``), the mask mode, the value scaling (the whole scene's
``--scale auto`` statistics), the output profile and creation options, the band metadata and
the ``RSISR_*`` tags, into a frozen :class:`UpscalePlan`. Bad options fail here, before the
engine runs.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rsisr.config import SCALE
from rsisr.errors import ConfigError, InputError
from rsisr.radiometry import Scaling, parse_scale, resolve_scaling
from rsisr.upscale.bands import BandChoice, parse_other_bands
from rsisr.upscale.source import band_choice, check_georeferencing, mask_mode, statistics_sample

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class UpscalePlan:
    """What an upscale writes, resolved before any pixel is read. ``window`` is the LR rasterio
    Window; ``cog_options`` None means a plain GeoTIFF; ``scales``/``offsets`` None: GDAL's
    defaults."""

    indexes: tuple[int, ...]
    alpha: int | None
    window: object
    mask_mode: str
    scaling: Scaling
    profile: dict
    cog_options: dict | None
    tags: dict
    colorinterp: list
    descriptions: list
    units: list
    scales: list | None
    offsets: list | None
    #: the model's bands and the bands written (``--other-bands``); None: the model's only
    choice: BandChoice | None = None

    @property
    def lr_window(self) -> tuple[int, int, int, int]:
        """(row_off, col_off, height, width) for the engine."""
        w = self.window
        return int(w.row_off), int(w.col_off), int(w.height), int(w.width)


def parse_options(scale, bands, bounds, bounds_crs, aoi, other_bands=None):
    """(scale spec, band tuple or None, other-bands mode or None): the options that need no
    raster, checked first (the count of ``--bands`` is checked against the model later)."""
    from rsisr.upscale.source import parse_bands

    spec = parse_scale(scale or "auto") if isinstance(scale, str) or scale is None else scale
    if isinstance(spec, (list, tuple)):
        spec = parse_scale(",".join(map(str, spec)))
    if bounds is not None and aoi is not None:
        raise InputError("give --bounds or --aoi, not both")
    if bounds is None and bounds_crs is not None:
        raise InputError("--bounds-crs needs --bounds")
    return spec, parse_bands(bands, None), parse_other_bands(other_bands)


def load_model(model):
    """(model, sha256 or None, name): a path, None (the default model) or a model object."""
    from rsisr.api import default_model_path, load_model as load
    from rsisr.checkpoint import file_sha256

    if model is None or isinstance(model, (str, os.PathLike)):
        loaded = load(model)
        path = Path(model) if model is not None else default_model_path()
        return loaded, file_sha256(path), path.name
    if not callable(model):
        raise ConfigError(f"model must be a path, None or a callable model, got {type(model).__name__}")
    source = getattr(model, "source_path", None)  # set by rsisr.load_model
    if source is not None and Path(source).is_file():
        return model, file_sha256(source), Path(source).name
    return model, None, type(model).__name__


def stored_scaling(model) -> Scaling | None:
    """The scaling stored in ``model``'s config (:meth:`rsisr.config.ModelConfig.band_scaling`), or None."""
    band_scaling = getattr(getattr(model, "config", None), "band_scaling", None)
    return band_scaling() if callable(band_scaling) else None


def _window(src, bounds, bounds_crs, aoi):
    from rasterio.windows import Window

    from rsisr.geo import aoi_window, bounds_window

    if bounds is not None:
        window = bounds_window(bounds, bounds_crs, src.crs, src.transform, src.width, src.height)
    elif aoi is not None:
        window = aoi_window(aoi, src.crs, src.transform, src.width, src.height)
    else:
        window = Window(0, 0, src.width, src.height)
    return Window(int(window.col_off), int(window.row_off), int(window.width), int(window.height))


def _scaling(src, spec, indexes, dtype, has_mask: bool, stored: Scaling | None = None) -> Scaling:
    """The value scaling: the model's stored one (``stored``) unless ``--scale`` names another
    than ``auto``; else ``--scale``'s rules."""
    if stored is not None and spec == "auto":
        scaling = stored if len(indexes) == len(stored.lo) else Scaling("model", stored.lo[:1], stored.hi[:1])
        log.info("scaling %s (stored in the model)", scaling.to_tag())
        return scaling
    if stored is not None:
        log.warning("--scale %s replaces the scaling the model was trained with (%s)",
                    spec if isinstance(spec, str) else Scaling("range", *_ranges(spec, len(indexes))).to_tag(),
                    stored.to_tag())
    if spec == "auto" and dtype != np.uint8:
        sample, valid = statistics_sample(src, indexes, has_mask)
        scaling = resolve_scaling(spec, dtype, len(indexes), sample, valid)
    else:
        scaling = resolve_scaling(spec, dtype, len(indexes))
    log.info("scaling %s", scaling.to_tag())
    return scaling


def _ranges(spec, bands: int):
    """(lo, hi) of a ``(min, max)`` or per-band :class:`Scaling` spec."""
    if isinstance(spec, Scaling):
        return spec.lo, spec.hi
    return (spec[0],) * bands, (spec[1],) * bands


def _tags(src, scaling: Scaling, indexes, run: dict) -> dict[str, str]:
    """The input's tags (less TIFF structure tags) and rsisr's own ``RSISR_*`` tags."""
    from rsisr import __version__
    from rsisr.rasterio_io import dataset_tags

    kept = {k: v for k, v in dataset_tags(src).items() if not k.startswith("TIFFTAG_") and k != "OVR_RESAMPLING_ALG"}
    return {
        **kept, "RSISR_VERSION": __version__, "RSISR_MODEL": run["model_name"],
        "RSISR_MODEL_SHA256": run["sha"] or "unknown", "RSISR_STEPS": str(run["steps"]), "RSISR_SEED": str(run["seed"]),
        "RSISR_TILE": str(run["tile"]), "RSISR_OVERLAP": str(run["overlap"]), "RSISR_SCALING": scaling.to_tag(),
        "RSISR_BANDS": ",".join(map(str, indexes)), "RSISR_PRECISION": run["precision"],
    }


def _band_metadata(src, out_bands) -> dict:
    from rsisr.rasterio_io import band_texts, reading

    with reading(src.name, "the band metadata"):
        colorinterp = [src.colorinterp[b - 1] for b in out_bands]
        scales, offsets = list(src.scales), list(src.offsets)
    descriptions, units = band_texts(src, out_bands)
    custom = any(s != 1.0 for s in scales) or any(o != 0.0 for o in offsets)
    return dict(colorinterp=colorinterp, descriptions=descriptions, units=units,
                scales=[scales[b - 1] for b in out_bands] if custom else None,
                offsets=[offsets[b - 1] for b in out_bands] if custom else None)


def make_plan(src, *, spec, bands, bounds, bounds_crs, aoi, co, cog: bool, dst_path: Path | None,
              run: dict, model_bands: int = 3, stored_scaling: Scaling | None = None,
              other_bands: str | None = None) -> UpscalePlan:
    """Resolve the plan for the open dataset ``src``. ``run``: model_name, sha, steps, seed and
    the engine's aligned tile and overlap (recorded in the tags). ``dst_path``: where the
    output goes (its free space is checked before the statistics sample), or None.
    ``model_bands``/``stored_scaling``: the model's bands and stored scaling (None: none);
    ``other_bands``: ``--other-bands`` (None: drop, with a warning naming the bands left out)."""
    from affine import Affine

    from rsisr.gdal_env import check_creation_options, cog_defaults, gtiff_defaults, parse_creation_options
    from rsisr.geo import compose
    from rsisr.rasterio_io import check_output_space, reading

    with reading(src.name, "the georeferencing and bands"):
        check_georeferencing(src)
        choice, alpha = band_choice(src, bands, model_bands, other_bands)
    indexes = choice.model
    window = _window(src, bounds, bounds_crs, aoi)
    dtype = np.dtype(src.dtypes[0])
    count = len(choice.out) + (1 if alpha is not None else 0)
    user_co = parse_creation_options(co)
    gtiff = {**gtiff_defaults(dtype), **({} if cog else user_co)}
    cog_options = {**cog_defaults(), **user_co}
    check_creation_options(user_co, cog_options if cog else gtiff, "COG" if cog else "GTiff", dtype, count)
    with reading(src.name, "the mask flags"):
        mode = mask_mode(src, alpha)
    if dst_path is not None:
        check_output_space(dst_path, SCALE * window.width, SCALE * window.height, count, dtype, mode == "mask")
    scaling = _scaling(src, spec, indexes, dtype, mode != "none", stored_scaling)
    transform = compose(src.window_transform(window), Affine.scale(1 / SCALE))
    profile = dict(driver="GTiff", width=SCALE * window.width, height=SCALE * window.height, count=count,
                   dtype=dtype, crs=src.crs, transform=transform, nodata=src.nodata, **gtiff)
    out_bands = list(choice.out) + ([alpha] if alpha is not None else [])
    tags = _tags(src, scaling, indexes, run)
    if choice.mode == "bicubic":
        tags["RSISR_OTHER_BANDS"] = "bicubic"
    return UpscalePlan(indexes=tuple(indexes), alpha=alpha, window=window, mask_mode=mode, scaling=scaling,
                       profile=profile, cog_options=cog_options if cog else None, tags=tags,
                       choice=choice, **_band_metadata(src, out_bands))


def write_metadata(out, plan: UpscalePlan) -> None:
    """Band metadata and tags of ``plan`` into the open output ``out``."""
    out.colorinterp = plan.colorinterp
    for k, (description, unit) in enumerate(zip(plan.descriptions, plan.units), start=1):
        if description:
            out.set_band_description(k, description)
        if unit:
            out.set_band_unit(k, unit)
    if plan.scales is not None:
        out.scales = plan.scales
        out.offsets = plan.offsets
    out.update_tags(**plan.tags)
