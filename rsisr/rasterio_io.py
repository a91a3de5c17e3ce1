"""Reading rasters that may be damaged: every GDAL/rasterio failure becomes one :class:`InputError`.

Every read of a user's raster goes through this module (``rsisr upscale``, ``rsisr batch``, the
training data loader): opening (:func:`open_raster`), metadata, masks, statistics samples,
overviews and pixel windows (:func:`reading`). A failure names the file, what was being read
(the band and window, the mask, the metadata) and GDAL's own message, e.g.::

    cannot read pixels (bands 1,2,3, rows 256-384, columns 0-512) of scene.tif: GDAL says
    "ZIPDecode:Decoding error at scanline 256"; the file is truncated or damaged: ...

Text that is not UTF-8 (a band description, a unit) is dropped with one warning
(:func:`band_texts`); tags that rasterio cannot decode are left out by rasterio itself with a
warning. Neither ever fails a run. Before the first pixel, :func:`check_raster` refuses
headers that no real raster has (zero or enormous blocks, absurd band counts, complex or
unknown data types) and :func:`check_output_space` an output that cannot fit at its destination.
"""

from __future__ import annotations

import logging
import re
import shutil
import sys
import warnings
from contextlib import contextmanager
from pathlib import Path

from rsisr.errors import InputError, OutputError, RsisrError, RsisrWarning

log = logging.getLogger(__name__)

#: More bands than any sensor delivers (AVIRIS-NG: 425, EnMAP: 224) by far: a damaged header.
MAX_BANDS = 10_000
#: GDAL reads and decodes a block (tile or strip) whole: one larger than this is a damaged header
#: (or a file that needs retiling first: ``gdal_translate -co TILED=YES``).
MAX_BLOCK_BYTES = 1 << 30
#: Data types the model's value scaling handles (:mod:`rsisr.radiometry`).
SUPPORTED_DTYPES = ("uint8", "int8", "uint16", "int16", "uint32", "int32", "int64", "uint64", "float32", "float64")
#: DEFLATE with a predictor rarely shrinks super-resolved imagery by more than this: an output
#: whose uncompressed size over it exceeds the free space cannot fit (so the check refuses only
#: hopeless runs, never one that compression would have saved).
BEST_COMPRESSION = 4.0
#: Hint appended to every damaged-file message.
DAMAGED = ("the file is truncated or damaged: check it with `gdalinfo -checksum`, then re-download or "
           "re-export it")


class TextDroppedWarning(RsisrWarning):
    """Band descriptions or units that are not UTF-8 text were not copied to the output."""


def gdal_message(exc: BaseException) -> str:
    """GDAL's own words for ``exc``: rasterio's "Read failed. See previous exception" wraps the
    CPLE error that holds them, so the whole chain is read; repeated messages are dropped."""
    seen: list[str] = []
    e: BaseException | None = exc
    while e is not None and len(seen) < 5:
        msg = " ".join(str(e).split())
        if msg and "See previous exception" not in msg and msg not in seen:
            seen.append(msg)
        e = e.__cause__ or e.__context__
    text = "; ".join(list(reversed(seen))[:2]) or type(exc).__name__
    return text if len(text) <= 300 else text[:297] + "..."


def _read_errors() -> tuple[type[BaseException], ...]:
    from rasterio._err import CPLE_BaseError
    from rasterio.errors import RasterioError

    # ValueError/TypeError: rasterio's checks of what GDAL reported for a damaged header (a band
    # count or shape that contradicts itself); MemoryError: a block size from such a header.
    return RasterioError, CPLE_BaseError, UnicodeDecodeError, ValueError, TypeError, MemoryError, OSError


@contextmanager
def reading(name, what: str):
    """Turn any failure of the reads inside into an :class:`InputError` naming ``name`` (the
    file), ``what`` (e.g. "pixels (bands 1,2,3, rows 0-128, columns 0-128)") and GDAL's message.
    rsisr's own errors pass through unchanged."""
    try:
        yield
    except RsisrError:
        raise
    except _read_errors() as exc:
        raise InputError(f"cannot read {what} of {name}: GDAL says \"{gdal_message(exc)}\"; {DAMAGED}") from None


def describe_window(window, indexes=None) -> str:
    """"bands 1,2,3, rows 0-128, columns 0-512" for a rasterio Window and 1-based band indexes."""
    r0, c0 = int(window.row_off), int(window.col_off)
    where = f"rows {r0}-{r0 + int(window.height)}, columns {c0}-{c0 + int(window.width)}"
    if indexes is None:
        return where
    return f"band{'s' if len(indexes) > 1 else ''} {','.join(map(str, indexes))}, {where}"


def open_raster(path, check: bool = True):
    """Open the raster ``path`` for reading (rasterio dataset); one :class:`InputError` for a
    missing, unreadable or damaged file, and (``check``) for an absurd header. ``path`` may also
    be a URL (``https://``, ``s3://``, ``gs://``) or a GDAL ``/vsi...`` path, read through GDAL."""
    import rasterio
    from rasterio.errors import NotGeoreferencedWarning

    from rsisr.gdal_env import gdal_path

    remote = gdal_path(path)
    path = remote if remote is not None else Path(path)
    if remote is None and not path.exists():
        raise InputError(f"input {str(path)!r} does not exist")
    if remote is None and path.is_dir():
        raise InputError(f"input {str(path)!r} is a directory; give a raster file")
    with gdal_warnings() as messages:  # shown once the file is known to be usable
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", NotGeoreferencedWarning)
                src = rasterio.open(path)
        except RsisrError:
            raise
        except _read_errors() as exc:
            messages.clear()  # GDAL's error says it all
            if remote is not None:
                raise InputError(f"cannot open {path}: GDAL says \"{gdal_message(exc)}\"; check the address, that "
                                 "the server answers range requests, and the credentials GDAL needs for it "
                                 "(AWS_* for s3://, GS_* or GOOGLE_APPLICATION_CREDENTIALS for gs://)") from None
            raise InputError(f"{path} is not a readable raster, or is truncated or damaged: GDAL says "
                             f"\"{gdal_message(exc)}\"; give a GeoTIFF or another GDAL raster") from None
        if check:
            try:
                check_raster(src, messages)
            except BaseException:
                messages.clear()
                src.close()
                raise
    return src


class _Collect(logging.Handler):
    """Keeps the records (and their messages, in the list the caller sees)."""

    def __init__(self, messages: list[str]) -> None:
        super().__init__(logging.WARNING)
        self.messages = messages
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)
        self.messages.append(record.getMessage())


@contextmanager
def gdal_warnings():
    """Hold back the warnings GDAL reports through rasterio while inside; yields the list of
    their messages. Those still in the list at the end are then logged as usual, at the level
    the caller chose (a caller that turns them into an error clears the list, so they are not
    printed before it)."""
    loggers = [logging.getLogger(n) for n in ("rasterio._env", "rasterio._err")]
    saved = [(lg.level, lg.propagate) for lg in loggers]
    messages: list[str] = []
    handler = _Collect(messages)
    for lg in loggers:
        lg.addHandler(handler)
        lg.setLevel(logging.WARNING)
        lg.propagate = False
    try:
        yield messages
    finally:
        for lg, (level, propagate) in zip(loggers, saved):
            lg.removeHandler(handler)
            lg.setLevel(level)
            lg.propagate = propagate
        kept = set(messages)
        for record in handler.records:
            logger = logging.getLogger(record.name)
            if record.getMessage() in kept and logger.isEnabledFor(record.levelno):
                logger.handle(record)


#: libtiff's warning when a TIFF's block index (strip or tile offsets) has fewer entries than its
#: declared size needs; it then reads the missing blocks as empty, so a damaged width or height
#: makes a run over a huge, mostly empty raster (minutes to days) instead of an error.
_SHORT_INDEX = re.compile(r'Incorrect count for "(Strip|Tile)Offsets"')


def check_raster(src, messages: list[str] | None = None) -> None:
    """Refuse, in one line, a header that no real raster has: a zero size, an absurd band count,
    an unsupported data type, a zero or enormous block, or (GeoTIFF) a block index shorter than
    the declared size. ``messages``: GDAL's warnings from opening ``src``, if held back."""
    import numpy as np

    name = src.name
    with reading(name, "the header"):
        width, height, count = int(src.width), int(src.height), int(src.count)
        dtypes = tuple(src.dtypes)
        blocks = [tuple(src.block_shapes[0])] if count else []
        interleave = (src.profile.get("interleave") or "pixel").lower()
    if width < 1 or height < 1:
        raise InputError(f"{name} declares {width} x {height} pixels; {DAMAGED}")
    if not 1 <= count <= MAX_BANDS:
        raise InputError(f"{name} declares {count} bands (rsisr reads 1 to {MAX_BANDS}); {DAMAGED}")
    bad = sorted({d for d in dtypes if d not in SUPPORTED_DTYPES})
    if bad:
        raise InputError(f"{name} has bands of data type {', '.join(bad)}, which rsisr cannot scale (it reads "
                         f"{', '.join(SUPPORTED_DTYPES)}); convert it, e.g. `gdal_translate -ot Float32`")
    bh, bw = blocks[0]
    if bh < 1 or bw < 1:
        raise InputError(f"{name} declares blocks of {bw} x {bh} pixels; {DAMAGED}")
    samples = count if interleave == "pixel" else 1
    block_bytes = bh * bw * samples * max(np.dtype(d).itemsize for d in dtypes)
    if block_bytes > MAX_BLOCK_BYTES:
        raise InputError(
            f"{name} declares blocks of {bw} x {bh} pixels x {samples} band(s) ({format_bytes(block_bytes)} each; "
            f"GDAL decodes a block whole); {DAMAGED}, or retile it: `gdal_translate -co TILED=YES in.tif out.tif`")
    if getattr(src, "driver", None) == "GTiff":
        with gdal_warnings() as probe:
            try:  # loads the block index (GDAL reads it lazily)
                src.get_tag_item(f"BLOCK_OFFSET_{(width - 1) // bw}_{(height - 1) // bh}", "TIFF", bidx=1)
            except Exception:  # noqa: BLE001 - only the warnings matter here
                pass
            short = [m for m in [*(messages or []), *probe] if _SHORT_INDEX.search(m)]
            if short:
                probe.clear()
                raise InputError(f"{name} declares {width} x {height} pixels in blocks of {bw} x {bh}, but its block "
                                 f"index is shorter (GDAL says \"{_SHORT_INDEX.search(short[0]).group(0)}\"); {DAMAGED}")


def band_texts(src, indexes) -> tuple[list[str | None], list[str | None]]:
    """(descriptions, units) of the 1-based bands ``indexes``; text that is not UTF-8 is dropped
    with one warning (None in its place)."""
    out = []
    for what in ("descriptions", "units"):
        try:
            with reading(src.name, f"the band {what}"):
                try:
                    values = getattr(src, what)
                except UnicodeDecodeError:
                    warnings.warn(f"the band {what} of {src.name} are not UTF-8 text; they are not copied to the "
                                  "output", TextDroppedWarning, stacklevel=3)
                    values = (None,) * src.count
        except InputError as exc:
            log.warning("%s; not copied to the output", exc)
            values = (None,) * src.count
        out.append([values[b - 1] if b - 1 < len(values) else None for b in indexes])
    return out[0], out[1]


def dataset_tags(src) -> dict[str, str]:
    """The dataset's tags (default domain); items rasterio cannot decode are left out (rasterio
    warns about each), and a domain that cannot be read at all gives {} with a warning."""
    try:
        return dict(src.tags())
    except UnicodeDecodeError:
        warnings.warn(f"the tags of {src.name} are not UTF-8 text; they are not copied to the output",
                      TextDroppedWarning, stacklevel=2)
        return {}


def format_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB", "PB"):
        if abs(n) < 1000 or unit == "PB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000.0
    return f"{n:.1f} PB"  # pragma: no cover - the loop returns


def output_bytes(width: int, height: int, count: int, dtype, mask: bool = False) -> int:
    """Uncompressed size of an output raster (plus a one-byte mask band)."""
    import numpy as np

    return int(width) * int(height) * (int(count) * np.dtype(dtype).itemsize + (1 if mask else 0))


def check_output_space(dst, width: int, height: int, count: int, dtype, mask: bool = False,
                       free: int | None = None) -> None:
    """Refuse an output that cannot fit where ``dst`` goes, even at :data:`BEST_COMPRESSION`,
    before any pixel is written (the size of a damaged header, or of a scene too large for the
    disk). ``free`` overrides the free bytes measured at ``dst``'s folder (tests)."""
    import numpy as np

    size = output_bytes(width, height, count, dtype, mask)
    folder = Path(dst).resolve().parent
    if free is None:
        try:
            free = shutil.disk_usage(folder).free
        except OSError:
            return
    if size / BEST_COMPRESSION > free:
        raise OutputError(
            f"the output would be {width} x {height} pixels x {count} band(s) of {np.dtype(dtype).name}: "
            f"{format_bytes(size)} uncompressed, at least {format_bytes(size / BEST_COMPRESSION)} compressed, but "
            f"{folder} has {format_bytes(free)} free; upscale a part with --bounds or --aoi, or write elsewhere "
            "(if the input is not that large, its header is damaged: check it with `gdalinfo`)")



@contextmanager
def undecodable_gdal_messages():
    """While inside, a GDAL message that is not UTF-8 (it quotes a damaged tag) is one warning.

    rasterio's GDAL error callback decodes every message as UTF-8; when that fails inside the C
    callback, Python prints the UnicodeDecodeError twice (through ``sys.excepthook`` without a
    traceback, then as "Exception ignored in: 'rasterio._env.log_error'" with one) and the run goes
    on. These hooks catch exactly that case; everything else reaches the previous hooks. For a
    command line's whole run (they are process-wide)."""
    previous_unraisable, previous_except = sys.unraisablehook, sys.excepthook
    seen: set[bytes] = set()

    def unraisable(info) -> None:
        exc = info.exc_value
        if isinstance(exc, UnicodeDecodeError) and "rasterio._env" in str(info.object):
            if exc.object not in seen:
                seen.add(exc.object)
                text = " ".join(exc.object[:300].decode("utf-8", "backslashreplace").split())
                log.warning("GDAL reported a message that is not UTF-8 text (a damaged tag?): %s", text)
            return
        previous_unraisable(info)

    def excepthook(kind, value, tb) -> None:
        if tb is None and isinstance(value, UnicodeDecodeError):
            return  # printed from inside rasterio's error callback; reported by `unraisable`
        previous_except(kind, value, tb)

    sys.unraisablehook, sys.excepthook = unraisable, excepthook
    try:
        yield
    finally:
        sys.unraisablehook, sys.excepthook = previous_unraisable, previous_except
