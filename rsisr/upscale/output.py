"""Output of ``rsisr upscale``: checking the target, and writing the GeoTIFF atomically.

:func:`write_geotiff` writes to a temporary file beside the target (:mod:`rsisr.atomic`: named
with the writer's PID, and temporaries of killed rsisr processes are removed first), checks every
write, the close and the finished file (rasterio does not raise when GDAL fails to flush at
close), converts it to a COG when asked, and renames it onto the target: after any error or
interrupt there is neither a partial output nor a temporary file. What libtiff prints to stderr
is held back and shown only when the write succeeds; a failure is one :class:`OutputError`.
:func:`write_geotiffs` writes several files in one pass (an output and its uncertainty raster):
all of them or none.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from rsisr.atomic import StderrCapture, commit, remove, remove_stale, temp_path
from rsisr.errors import OutputError

#: Output names rsisr accepts: it writes GeoTIFF (plain or COG) only.
GEOTIFF_SUFFIXES = (".tif", ".tiff")


def check_output(dst, src_name: str, overwrite: bool, what: str = "output") -> Path:
    dst = Path(dst)
    if dst.is_dir():
        raise OutputError(f"{what} {str(dst)!r} is a directory; give a file name such as {dst / 'out.tif'}")
    if dst.suffix.lower() not in GEOTIFF_SUFFIXES:
        raise OutputError(f"{what} {str(dst)!r} does not end in .tif or .tiff, but rsisr writes GeoTIFF (with --cog a "
                          f"Cloud Optimized GeoTIFF); name it e.g. {dst.with_suffix('.tif').name}, and convert it "
                          "afterwards with gdal_translate if you need another format")
    same = dst.resolve() == Path(src_name).resolve()
    if not same and dst.exists() and Path(src_name).exists():
        same = os.path.samefile(dst, src_name)
    if same:
        raise OutputError(f"{what} {str(dst)!r} is the input; give another file")
    if dst.exists() and not overwrite:
        raise OutputError(f"{what} {str(dst)!r} exists; pass --overwrite to replace it")
    parent = dst.resolve().parent
    if not parent.is_dir():
        raise OutputError(f"output directory {str(parent)!r} does not exist; create it first")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputError(f"output directory {str(parent)!r} is not writable")
    return dst


def check_dataset_output(out, profile: dict, cog: bool) -> None:
    """An open output dataset must be writable and have the output's size, bands and dtype."""
    if cog:
        raise OutputError("--cog needs an output path, not an open dataset")
    if out.mode not in ("w", "w+", "r+"):
        raise OutputError(f"the output dataset {out.name} is open in mode {out.mode!r}; open it with 'w' or 'r+'")
    want = (profile["width"], profile["height"], profile["count"], np.dtype(profile["dtype"]).name)
    got = (out.width, out.height, out.count, out.dtypes[0])
    if got != want:
        raise OutputError(f"the output dataset {out.name} is {got[0]} x {got[1]} with {got[2]} {got[3]} bands; "
                          f"this output needs {want[0]} x {want[1]} with {want[2]} {want[3]} bands")


class CheckedWriter:
    """The output dataset as :class:`RasterSink` sees it: each write runs with what C code
    prints to stderr held back in ``capture``, and a GDAL failure becomes an OutputError."""

    def __init__(self, dataset, capture: StderrCapture, path) -> None:
        self._dataset = dataset
        self._capture = capture
        self._path = path

    def __getattr__(self, name):
        return getattr(self._dataset, name)

    def write(self, *args, **kwargs):
        return self._guard(self._dataset.write, *args, **kwargs)

    def write_mask(self, *args, **kwargs):
        return self._guard(self._dataset.write_mask, *args, **kwargs)

    def _guard(self, fn, *args, **kwargs):
        from rasterio._err import CPLE_BaseError
        from rasterio.errors import RasterioError

        try:
            with self._capture():
                return fn(*args, **kwargs)
        except (RasterioError, CPLE_BaseError) as exc:
            raise _write_failure(self._path, self._capture, exc) from None


def _write_failure(dst, capture: StderrCapture, exc: BaseException | None = None, what: str = "output",
                   temps: Sequence[Path] = ()) -> OutputError:
    """One line for a failed GDAL write of ``dst``: the OS's reason where libtiff printed one
    ("No space left on device"), else GDAL's message (naming ``dst`` rather than ``temps``)."""
    import shutil

    reason = capture.last_error()
    if not reason and exc is not None:
        cause = exc.__cause__ if "previous exception" in str(exc) and exc.__cause__ is not None else exc
        reason = " ".join(str(cause).split())
        for tmp in temps:
            reason = reason.replace(str(tmp), str(dst)).replace(tmp.name, Path(dst).name)
    reason = reason or "GDAL could not finish the file"
    try:
        full = shutil.disk_usage(Path(os.path.abspath(dst)).parent).free < 16 * 2**20
    except OSError:
        full = False
    if full or "no space" in reason.lower() or "quota" in reason.lower():
        hint = "free some space or write to another disk"
    else:
        hint = "check the output folder and the disk"
    return OutputError(f"writing {what} {dst} failed: {reason}; {hint} (nothing was written)")


def _end_capture(capture: StderrCapture, succeeded: bool) -> None:
    """Show what C code printed during a write that succeeded; drop it after a failure, which
    is reported in one line instead."""
    if succeeded:
        capture.release()
    else:
        capture.discard()


def _verify_written(path: Path, dst, shape: tuple[int, int, int], capture: StderrCapture, what: str = "output") -> None:
    """After GDAL closed ``path``: no failed write was reported, and the file opens with the
    expected (width, height, count) and its last block reads. rasterio does not raise when
    GDAL fails to flush at close; a full disk leaves a file whose directory cannot be read."""
    import rasterio
    from rasterio._err import CPLE_BaseError
    from rasterio.errors import RasterioError
    from rasterio.windows import Window

    if capture.write_failed():
        raise _write_failure(dst, capture, what=what)
    try:
        with capture(), rasterio.open(path) as check:
            got = (check.width, check.height, check.count)
            if got == shape:
                check.read(1, window=Window(shape[0] - 1, shape[1] - 1, 1, 1))
    except (RasterioError, CPLE_BaseError) as exc:
        raise _write_failure(dst, capture, exc, what, [path]) from None
    if got != shape:
        raise _write_failure(dst, capture, RuntimeError(f"the file has {got}, not {shape} pixels and bands"), what)


def write_into(dataset, fill: Callable) -> None:
    """Run ``fill(out, writer)`` on an open output ``dataset`` (written in place, checked)."""
    capture = StderrCapture()
    committed = False
    try:
        fill(dataset, CheckedWriter(dataset, capture, dataset.name))
        committed = True
    finally:
        _end_capture(capture, committed)


@dataclass(frozen=True)
class Target:
    """One GeoTIFF of :func:`write_geotiffs`: its path, rasterio profile, COG options (None: a
    plain GeoTIFF) and what messages call it."""

    path: Path
    profile: dict
    cog_options: dict | None = None
    what: str = "output"


def write_geotiff(dst: Path, profile: dict, cog_options: dict | None, overwrite: bool, fill: Callable) -> None:
    """Create the GeoTIFF ``profile`` at a temporary path beside ``dst``, run ``fill(out,
    writer)`` on it, check it, convert it to a COG with ``cog_options`` (None: plain GTiff) and
    rename it onto ``dst``. Nothing is left behind on any error."""
    write_geotiffs([Target(dst, profile, cog_options)], overwrite, lambda opened: fill(*opened[0]))


def _create(tmp: Path, profile: dict, capture: StderrCapture):
    import rasterio
    from rasterio._err import CPLE_BaseError
    from rasterio.errors import NotGeoreferencedWarning, RasterioError

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        try:
            with capture():
                return rasterio.open(tmp, "w", **profile)
        except (RasterioError, CPLE_BaseError) as exc:
            raise OutputError(f"cannot write {tmp.parent}: {exc}") from None


def _finish(tmp: Path, target: Target, capture: StderrCapture, temps: list[Path]) -> Path:
    """Check the closed ``tmp`` and convert it to a COG where asked; returns the file to commit."""
    import rasterio.shutil
    from rasterio._err import CPLE_BaseError
    from rasterio.errors import RasterioError

    shape = (target.profile["width"], target.profile["height"], target.profile["count"])
    _verify_written(tmp, target.path, shape, capture, target.what)
    if target.cog_options is None:
        return tmp
    final = temp_path(target.path)
    temps.append(final)
    what = "the Cloud Optimized GeoTIFF" if target.what == "output" else f"the {target.what} (Cloud Optimized GeoTIFF)"
    try:
        with capture():
            rasterio.shutil.copy(tmp, final, driver="COG", **target.cog_options)
    except (RasterioError, CPLE_BaseError) as exc:
        raise _write_failure(target.path, capture, exc, what, temps) from None
    remove(tmp)
    _verify_written(final, target.path, shape, capture, what)
    return final


def write_geotiffs(targets: Sequence[Target], overwrite: bool, fill: Callable) -> None:
    """Write several GeoTIFFs in one pass, all or none: create each at a temporary path beside
    its target, run ``fill([(out, writer), ...])`` (in ``targets``' order), check every file,
    convert those with COG options, then rename them onto their targets in ``targets``' order
    (put the main output last: where it exists, the others do). Nothing is left behind on any
    error: temporaries are removed, and so are targets already renamed when a later rename fails."""
    capture = StderrCapture()  # what libtiff prints to stderr while rsisr writes
    temps: list[Path] = []
    committed: list[Path] = []
    done = False
    try:
        for folder in {t.path.parent for t in targets}:
            remove_stale(folder)  # left by rsisr processes that were killed while writing here
        opened = []
        try:
            for t in targets:
                temps.append(temp_path(t.path))
                opened.append(_create(temps[-1], t.profile, capture))
            fill([(out, CheckedWriter(out, capture, t.path)) for out, t in zip(opened, targets)])
        finally:
            for out in opened:
                with capture():
                    out.close()  # GDAL flushes its cache here; rasterio raises nothing if that fails
        finals = [_finish(tmp, t, capture, temps) for tmp, t in zip(list(temps), targets)]
        for t in targets:
            if t.path.exists() and not overwrite:
                raise OutputError(f"{t.what} {str(t.path)!r} appeared while rsisr was writing; pass --overwrite")
        for final, t in zip(finals, targets):
            committed.append(commit(final, t.path, t.what))
        done = True
    finally:
        for t in temps:
            remove(t)
        if not done:
            for path in committed:
                path.unlink(missing_ok=True)
        _end_capture(capture, done)
