"""Whether a scene's output is already done, and made with the requested settings (its ``RSISR_*`` tags)."""

from __future__ import annotations

import json
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rsisr.errors import InputError


def is_complete(path: str | os.PathLike) -> bool:
    """True when ``path`` exists and opens as a raster written by rsisr (a finished atomic
    write), whatever settings it was made with (see :func:`scene_status`)."""
    return _read_tags(path) is not None


def _read_tags(path: str | os.PathLike) -> dict[str, str] | None:
    """The tags of a finished rsisr output at ``path``, or None (missing, unreadable, not rsisr's)."""
    path = Path(path)
    if not path.is_file():
        return None
    from rsisr.rasterio_io import dataset_tags, open_raster, reading

    try:
        with open_raster(path, check=False) as ds, reading(path, "the tags"):
            tags = dataset_tags(ds)
            return tags if ds.width > 0 and ds.height > 0 and "RSISR_VERSION" in tags else None
    except InputError:  # damaged: not complete, so the scene runs again
        return None


@dataclass(frozen=True)
class Request:
    """What a scene's output tags must say to count as complete (:func:`request_for`)."""

    model_sha256: str
    steps: int
    seed: int
    tile: int
    overlap: int
    bands: tuple[int, ...] | None  # None: the default choice, which depends on the input
    scale: Any  # "auto", "none", (min, max) or a per-band Scaling (rsisr.radiometry.parse_scale)
    model_bands: int = 3
    stored_scaling: Any = None  # the model's stored Scaling, which replaces --scale auto
    other_bands: str | None = None  # --other-bands
    ensemble: int = 1  # samples per tile (--ensemble)


_SHA256: dict[tuple[str, int, int], str] = {}


def request_for(model: str | os.PathLike | None = None, *, steps: int = 1, seed: int = 0, tile: int | None = None,
                overlap: int | None = None, bands=None, scale="auto", other_bands=None, ensemble: int = 1,
                **_ignored) -> Request:
    """The :class:`Request` of :func:`rsisr.upscale.upscale_file` options (unknown ones are not
    recorded in outputs and ignored). Invalid values raise the error upscale_file would."""
    from rsisr.api import require_default_model
    from rsisr.checkpoint import file_sha256, read_metadata
    from rsisr.config import ModelConfig
    from rsisr.radiometry import parse_scale
    from rsisr.tiling import effective_tiling
    from rsisr.upscale import DEFAULT_OVERLAP, DEFAULT_TILE, parse_bands
    from rsisr.upscale.bands import parse_other_bands
    from rsisr.upscale.ensemble import check_ensemble

    path = Path(model) if model is not None else require_default_model()
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _SHA256:
        _SHA256[key] = file_sha256(path)
    config = ModelConfig.from_json(read_metadata(path)["config"])
    multiple = config.lr_multiple
    tile, overlap = effective_tiling(DEFAULT_TILE if tile is None else tile,
                                     DEFAULT_OVERLAP if overlap is None else overlap, multiple)
    scale_spec = parse_scale(scale or "auto") if isinstance(scale, str) or scale is None else scale
    if isinstance(scale_spec, (list, tuple)):  # as upscale_file takes them
        scale_spec = parse_scale(",".join(map(str, scale_spec)))
    return Request(_SHA256[key], int(steps), int(seed), tile, overlap, parse_bands(bands, config.bands), scale_spec,
                   config.bands, config.band_scaling(), parse_other_bands(other_bands), check_ensemble(ensemble))


#: The value of a tag that outputs made before it existed lack.
_TAG_DEFAULTS = {"RSISR_ENSEMBLE": "1"}


def scene_status(src: str | os.PathLike, dst: str | os.PathLike, request: Request,
                 uncertainty: str | os.PathLike | None = None) -> tuple[bool, str | None]:
    """(complete, reason): complete when ``dst`` is a finished rsisr output of ``src`` whose tags
    match ``request`` (and so does the ``uncertainty`` raster, where one is asked for);
    otherwise ``reason`` says why it must be (re)done (None: no output yet)."""
    if not Path(dst).exists():
        return False, None
    tags = _read_tags(dst)
    if tags is None:
        return False, "the existing output is unreadable or was not written by rsisr"
    wanted = _wanted_tags(src, request)
    if wanted is None:  # the input cannot be read: let the scene run and report that
        return False, "the input could not be checked against the existing output"
    differences = _differences(tags, wanted)
    if differences:
        return False, "the existing output was made with " + ", ".join(differences)
    if uncertainty is not None:
        spread_tags = _read_tags(uncertainty)
        if spread_tags is None or "RSISR_UNCERTAINTY" not in spread_tags:
            return False, f"the uncertainty raster {uncertainty} is missing or unreadable"
        differences = _differences(spread_tags, wanted)
        if differences:
            return False, "the existing uncertainty raster was made with " + ", ".join(differences)
    return True, None


def _differences(tags: dict[str, str], wanted) -> list[str]:
    got = {key: tags.get(key, _TAG_DEFAULTS.get(key)) for _, key, _ in wanted}
    return [f"{name} {_show(name, got[key])} (now {_show(name, want)})"
            for name, key, want in wanted if not _same(name, got[key], want)]


def _wanted_tags(src, request: Request) -> list[tuple[str, str, Any]] | None:
    """(name, tag, wanted value) for every compared tag; None when ``src`` cannot be opened."""
    import numpy as np
    import rasterio
    from rasterio._err import CPLE_BaseError
    from rasterio.errors import RasterioError

    from rsisr.radiometry import resolve_scaling
    from rsisr.upscale import select_bands

    try:
        with rasterio.open(src) as ds, warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the band choice's warning belongs to the run, not this check
            bands = request.bands or select_bands(ds, None, request.model_bands, "drop")[0]
            dtype = np.dtype(ds.dtypes[0])
        if request.scale == "auto" and request.stored_scaling is not None:
            s = request.stored_scaling
            scaling = {"mode": s.mode, "lo": list(s.lo), "hi": list(s.hi)}
        elif request.scale == "auto" and dtype != np.uint8:
            scaling = {"mode": "auto"}  # its percentiles come from the data: the mode is what can be compared
        else:
            s = resolve_scaling(request.scale, dtype, len(bands))
            scaling = {"mode": s.mode, "lo": list(s.lo), "hi": list(s.hi)}
    except (RasterioError, CPLE_BaseError, OSError, ValueError):  # InputError is a ValueError
        return None
    return [
        ("model", "RSISR_MODEL_SHA256", request.model_sha256),
        ("steps", "RSISR_STEPS", str(request.steps)),
        ("seed", "RSISR_SEED", str(request.seed)),
        ("tile", "RSISR_TILE", str(request.tile)),
        ("overlap", "RSISR_OVERLAP", str(request.overlap)),
        ("bands", "RSISR_BANDS", ",".join(map(str, bands))),
        ("scaling", "RSISR_SCALING", scaling),
        ("other bands", "RSISR_OTHER_BANDS", "bicubic" if request.other_bands == "bicubic" else None),
        ("ensemble", "RSISR_ENSEMBLE", str(request.ensemble)),
    ]


def _same(name: str, got: str | None, want) -> bool:
    """Tags match; a scaling by its mode for ``auto``, else by its values (``none`` and the
    dtype's range, or an auto run's values given back as a range, make the same output)."""
    if name != "scaling":
        return got == want
    try:
        recorded = json.loads(got or "")
    except ValueError:
        return False
    if not isinstance(recorded, dict):
        return False
    keys = ("mode",) if want["mode"] == "auto" else ("lo", "hi")
    return all(recorded.get(k) == want[k] for k in keys)


def _show(name: str, value) -> str:
    if value is None:
        return "(none)"
    if name == "model":
        return f"sha256 {value[:12]}"
    if name == "scaling":
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except ValueError:
                return repr(value)
        lo, hi = value.get("lo") or [], value.get("hi") or []
        if value.get("mode") == "range" and lo and len(lo) == len(hi):
            pairs = list(zip(lo, hi))
            return ",".join(f"{a:g},{b:g}" for a, b in (pairs[:1] if len(set(pairs)) == 1 else pairs))
        return str(value.get("mode"))
    return str(value)
