"""GDAL settings and GeoTIFF creation defaults, in one place.

Everything rsisr reads or writes with rasterio runs inside :func:`gdal_env`. Creation options
given by the user (``--co KEY=VALUE``) replace the defaults key by key, after GDAL has checked
them (:func:`check_creation_options`). Inputs read over the network (``https://``, ``s3://``,
``gs://``, ``/vsicurl/...``) get :data:`REMOTE_GDAL_CONFIG` on top (:func:`remote_config`).
"""

from __future__ import annotations

import logging
import os
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

#: GDAL settings for inputs read over the network (:func:`remote_config`); an environment variable
#: of the same name wins. GDAL's "configuration options" and "virtual file systems" pages
#: document each one.
REMOTE_GDAL_CONFIG = {
    # Opening a file lists its directory to find side-car files (.ovr, .msk, .aux.xml): on object
    # storage that is a LIST request over a whole prefix. EMPTY_DIR skips it and the per-file probes
    # (so side-car files of remote inputs are not used; COGs keep overviews and masks inside).
    "GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR",
    # A window spans several blocks: fetch neighbouring blocks in one range request, and the
    # ranges of one read in parallel requests (S3 and GCS answer one range per request).
    "GDAL_HTTP_MERGE_CONSECUTIVE_RANGES": "YES",
    "GDAL_HTTP_MULTIRANGE": "YES",
    # Headers, block indexes and blocks read twice (tile rows overlap by their halo) come from a
    # per-file cache of the bytes already fetched instead of a new request.
    "VSI_CACHE": "TRUE",
    "VSI_CACHE_SIZE": str(64 * 2**20),
    # Object stores answer 429/503 under load; retry a few times rather than fail the scene.
    "GDAL_HTTP_MAX_RETRY": "3",
    "GDAL_HTTP_RETRY_DELAY": "1",
}
#: Input names that GDAL reads over the network (rasterio turns the URLs into /vsi paths).
REMOTE_SCHEMES = ("http://", "https://", "s3://", "gs://", "az://")
#: GDAL's network file systems (``/vsicurl/``, ``/vsis3/``, ...), also chained (``/vsizip//vsicurl/``).
REMOTE_VSI = ("/vsicurl", "/vsis3", "/vsigs", "/vsiaz", "/vsiadls", "/vsioss", "/vsiswift", "/vsiwebhdfs",
              "/vsihdfs")


def gdal_path(path) -> str | None:
    """``path`` as GDAL takes it when it names no local file (a URL or a ``/vsi...`` path, which
    :class:`pathlib.Path` would mangle and which cannot be checked on the local disk), else None."""
    if not isinstance(path, str):
        return None
    text = path.strip()
    if text.lower().startswith(REMOTE_SCHEMES) or text.startswith("/vsi"):
        return text
    return None


def is_remote(path) -> bool:
    """Whether GDAL reads ``path`` over the network."""
    text = gdal_path(path)
    if text is None:
        return False
    return text.lower().startswith(REMOTE_SCHEMES) or any(f"{prefix}/" in text or f"{prefix}_streaming/" in text
                                                          for prefix in REMOTE_VSI)


def remote_config(path) -> dict[str, str]:
    """The GDAL settings for reading ``path``: :data:`REMOTE_GDAL_CONFIG` for a network input,
    less what the environment sets itself, and nothing for a local file."""
    if not is_remote(path):
        return {}
    return {key: value for key, value in REMOTE_GDAL_CONFIG.items() if key not in os.environ}


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
