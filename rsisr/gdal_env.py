"""GDAL settings and GeoTIFF creation defaults, in one place.

Everything rsisr reads or writes with rasterio runs inside :func:`gdal_env`. Creation options
given by the user (``--co KEY=VALUE``) replace the defaults key by key, after GDAL has checked
them (:func:`check_creation_options`).
"""

from __future__ import annotations

import logging
import warnings
from contextlib import contextmanager
from typing import Iterable, Mapping

import numpy as np

from rsisr.errors import InputError

#: GDAL configuration options for rsisr's raster I/O.
GDAL_CONFIG = {
    # The block cache bounds GDAL's own memory; rasterio takes the value in bytes.
    "GDAL_CACHEMAX": 64 * 2**20,
    # Masks live inside the GeoTIFF, not in a .msk sidecar.
    "GDAL_TIFF_INTERNAL_MASK": True,
    # No .aux.xml sidecars: everything rsisr records is in the GeoTIFF itself.
    "GDAL_PAM_ENABLED": False,
}

#: Output block side of a plain GeoTIFF (HR pixels, a multiple of 16).
BLOCK_SIZE = 512


def gtiff_defaults(dtype) -> dict[str, str]:
    """Tiled, DEFLATE with the predictor that suits ``dtype``, BIGTIFF only where needed."""
    return {
        "TILED": "YES",
        "BLOCKXSIZE": str(BLOCK_SIZE),
        "BLOCKYSIZE": str(BLOCK_SIZE),
        "COMPRESS": "DEFLATE",
        "PREDICTOR": "3" if np.dtype(dtype).kind == "f" else "2",
        "INTERLEAVE": "PIXEL",
        "BIGTIFF": "IF_SAFER",
        "NUM_THREADS": "ALL_CPUS",
    }


def cog_defaults() -> dict[str, str]:
    """Options of GDAL's COG driver (it builds the overviews and orders the file itself)."""
    return {
        "COMPRESS": "DEFLATE",
        "PREDICTOR": "YES",
        "BLOCKSIZE": str(BLOCK_SIZE),
        "BIGTIFF": "IF_SAFER",
        "OVERVIEWS": "IGNORE_EXISTING",
        "NUM_THREADS": "ALL_CPUS",
    }


def gdal_env(**overrides):
    """A ``rasterio.Env`` with :data:`GDAL_CONFIG` (plus ``overrides``)."""
    import rasterio

    return rasterio.Env(**{**GDAL_CONFIG, **overrides})


def parse_creation_options(co: Mapping[str, object] | Iterable[str] | None) -> dict[str, str]:
    """``["KEY=VALUE", ...]`` or a mapping -> {KEY: VALUE} with upper-case keys."""
    if not co:
        return {}
    if isinstance(co, Mapping):
        return {str(k).upper(): str(v) for k, v in co.items()}
    if isinstance(co, str):
        co = [co]
    out = {}
    for item in co:
        key, sep, value = str(item).partition("=")
        if not sep or not key.strip() or not value.strip():
            raise InputError(f"invalid --co {item!r}: expected KEY=VALUE, e.g. --co COMPRESS=ZSTD")
        out[key.strip().upper()] = value.strip()
    return out


class _GdalMessages(logging.Handler):
    """Collects the CPLE_* warnings that rasterio logs for GDAL (e.g. unsupported options)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        msg = record.getMessage()
        if "creation option" in msg or "value not recognised" in msg or "CPLE_IllegalArg" in msg:
            self.messages.append(msg.split(" in ", 1)[-1] if msg.startswith("CPLE_") else msg)


@contextmanager
def _capture_gdal_warnings():
    handler = _GdalMessages()
    logger = logging.getLogger("rasterio._env")
    logger.addHandler(handler)
    try:
        yield handler.messages
    finally:
        logger.removeHandler(handler)


def check_creation_options(user: Mapping[str, str], options: Mapping[str, str], driver: str, dtype,
                           count: int) -> None:
    """Let GDAL validate ``options`` on a tiny in-memory raster; a complaint about one of the
    ``user`` options (or a failure) becomes an :class:`InputError` that names it."""
    import rasterio
    import rasterio.shutil
    from rasterio.errors import NotGeoreferencedWarning, RasterioError

    if not user:
        return
    shown = " ".join(f"--co {k}={v}" for k, v in user.items())
    with gdal_env(), _capture_gdal_warnings() as messages, warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)  # the trial raster has no georeferencing
        try:
            profile = dict(driver="GTiff", width=16, height=16, count=count, dtype=dtype)
            if driver == "COG":
                with rasterio.open("/vsimem/rsisr_co_check_src.tif", "w", **profile) as tmp:
                    tmp.write(np.zeros((count, 16, 16), dtype))
                rasterio.shutil.copy("/vsimem/rsisr_co_check_src.tif", "/vsimem/rsisr_co_check.tif",
                                     driver="COG", **options)
            else:
                with rasterio.open("/vsimem/rsisr_co_check.tif", "w", **profile, **options) as tmp:
                    tmp.write(np.zeros((count, 16, 16), dtype))
        except (RasterioError, ValueError, TypeError) as exc:
            raise InputError(f"invalid creation options {shown}: GDAL says: {exc}") from None
        finally:
            for name in ("/vsimem/rsisr_co_check_src.tif", "/vsimem/rsisr_co_check.tif"):
                try:
                    rasterio.shutil.delete(name)
                except Exception:  # noqa: BLE001 - nothing to delete
                    pass
    relevant = [m for m in messages if any(k in m.upper() for k in user)]
    if relevant:
        raise InputError(f"invalid creation options {shown} for the {driver} driver: {'; '.join(relevant)}")
