"""Atomic, checked writes of rsisr's files, and cleanup after writers that were killed.

Every file rsisr writes (GeoTIFFs, model files, training checkpoints and run files, reports) is
written under a temporary name beside its target, checked (an error at write, flush, fsync or
close is an :class:`~rsisr.errors.OutputError` that names the file and what to do), then renamed
over the target. On any error the temporary file is removed and the target is left as it was.

Temporary names are ``.{target name}.{host}.{pid}.{token}.rsisr-tmp``. The writer's host and
process id let a later run tell what a killed process (``kill -9``, an out-of-memory kill, a
power cut) left behind from a file that a live process is still writing: :func:`remove_stale`,
called by every atomic write, removes rsisr's temporary files in the target's folder whose
process no longer exists on this host, and nothing else.

C libraries print some errors straight to the process's stderr (libtiff's "_tiffWriteProc: No
space left on device." when a disk fills up), past Python's logging. :class:`StderrCapture`
holds that output back while a write runs, so that a failed write is reported as one line.
"""

from __future__ import annotations

import errno
import logging
import os
import re
import secrets
import socket
import sys
import tempfile
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Iterator

from rsisr.errors import OutputError, RsisrError

log = logging.getLogger(__name__)

SUFFIX = ".rsisr-tmp"
#: Files GDAL may add beside a raster (rsisr turns both off, but a user's GDAL config may not).
SIDECARS = (".aux.xml", ".msk")
_NAME = re.compile(r"^\.(?P<target>.+)\.(?P<host>[A-Za-z0-9-]+)\.(?P<pid>\d+)\.(?P<token>[0-9a-f]{8})"
                   + re.escape(SUFFIX) + r"(?:\.aux\.xml|\.msk)?$")

_HINTS = {
    errno.ENOSPC: "free some space or write to another disk",
    errno.EDQUOT: "free some space or ask for a larger quota",
    errno.EROFS: "the file system is read-only; write to another folder",
    errno.EACCES: "choose a folder you can write to",
    errno.EPERM: "choose a folder you can write to",
    errno.EFBIG: "the file is too large for this file system; write to another disk",
}


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname())[:63] or "host"


def temp_path(target: str | os.PathLike) -> Path:
    """A new temporary name beside ``target`` (same folder, so the final rename is atomic)."""
    target = Path(os.path.abspath(target))
    return target.parent / f".{target.name}.{_host()}.{os.getpid()}.{secrets.token_hex(4)}{SUFFIX}"


def remove(path: str | os.PathLike) -> None:
    """Remove a temporary file and the sidecars GDAL may have written beside it."""
    for p in (Path(path), *(Path(f"{path}{s}") for s in SIDECARS)):
        try:
            p.unlink()
        except FileNotFoundError:
            pass


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists on this machine (a zombie counts as dead). Where that
    cannot be told safely (Windows, where signal 0 would end the process), True."""
    if pid == os.getpid():
        return True
    if pid <= 0 or os.name == "nt":
        return pid > 0
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: another user's live process
        return True
    try:  # Linux: a killed child that its parent has not reaped yet is a zombie
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[-1].split()[0] != b"Z"
    except (OSError, IndexError):
        return True


def remove_stale(folder: str | os.PathLike) -> list[Path]:
    """Remove rsisr's temporary files in ``folder`` left by processes of this host that no
    longer exist. Other files, other hosts' temporaries and live processes' are never touched."""
    host = _host()
    removed = []
    try:
        entries = [e.name for e in os.scandir(folder) if e.name.endswith(SUFFIX) or e.name.endswith(SIDECARS)]
    except OSError:
        return removed
    for name in entries:
        m = _NAME.match(name)
        if m is None or m["host"] != host or pid_alive(int(m["pid"])):
            continue
        path = Path(folder) / name
        try:
            path.unlink()
            removed.append(path)
        except FileNotFoundError:
            pass
        except OSError as exc:
            log.warning("could not remove %s, left by a process that no longer runs: %s", path, exc)
    if removed:
        log.info("removed %d temporary file(s) left in %s by rsisr processes that no longer run", len(removed), folder)
    return removed


def write_error(path: str | os.PathLike, exc: BaseException, what: str = "file") -> OutputError:
    """One-line :class:`OutputError` for a failed write of ``path`` (an ``OSError``, or an error
    of a library that carries ``(os error N)`` in its message, as Rust's std does)."""
    code = getattr(exc, "errno", None)
    if code is None:
        m = re.search(r"os error (\d+)", str(exc))
        code = int(m.group(1)) if m else None
    reason = os.strerror(code) if code else (getattr(exc, "strerror", None) or str(exc) or type(exc).__name__)
    hint = _HINTS.get(code, "check the folder and the disk")
    return OutputError(f"cannot write {what} {path}: {reason}; {hint} (nothing was written)")


def fsync_file(path: str | os.PathLike) -> None:
    """Flush ``path``'s data to the disk, so that errors the OS defers (quota, network file
    systems) show up before the rename rather than after it."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def commit(tmp: str | os.PathLike, target: str | os.PathLike, what: str = "file") -> Path:
    """fsync the finished temporary file ``tmp`` and rename it over ``target``."""
    try:
        fsync_file(tmp)
        os.replace(tmp, target)
    except OSError as exc:
        raise write_error(target, exc, what) from None
    return Path(target)


@contextmanager
def atomic_path(target: str | os.PathLike, what: str = "file") -> Iterator[Path]:
    """Yield a temporary path beside ``target`` for the caller to write; when the block ends
    without error, fsync it and rename it over ``target``. On any error it is removed, and an
    ``OSError`` becomes a one-line :class:`OutputError`."""
    target = Path(target)
    remove_stale(target.parent)
    tmp = temp_path(target)
    try:
        yield tmp
        commit(tmp, target, what)
    except BaseException as exc:
        remove(tmp)
        if isinstance(exc, OSError) and not isinstance(exc, RsisrError):
            raise write_error(target, exc, what) from None
        raise


class _CheckedFile:
    """A file object that remembers the first OSError of a write, for writers (torch.save) that
    turn it into an error of their own with the cause lost."""

    def __init__(self, f: IO) -> None:
        self._f = f
        self.error: OSError | None = None

    def write(self, data):
        try:
            return self._f.write(data)
        except OSError as exc:
            self.error = self.error or exc
            raise

    def __getattr__(self, name):
        return getattr(self._f, name)


@contextmanager
def atomic_open(target: str | os.PathLike, mode: str = "w", what: str = "file", **kwargs) -> Iterator[IO]:
    """``open(target, mode)`` written atomically: the file object writes a temporary file that
    is flushed, fsynced, closed and renamed over ``target`` when the block ends without error."""
    if not mode.startswith("w"):
        raise ValueError(f"atomic_open writes a new file; mode {mode!r} is not supported")
    with atomic_path(target, what) as tmp:
        f = open(tmp, mode, **kwargs)
        checked = _CheckedFile(f)
        try:
            try:
                yield checked
                f.flush()
                os.fsync(f.fileno())
            finally:
                f.close()
        except OSError:
            raise
        except Exception:
            if checked.error is not None:  # e.g. torch.save's RuntimeError about a short write
                raise checked.error from None
            raise


def write_text(target: str | os.PathLike, text: str, what: str = "file") -> Path:
    """Write ``text`` to ``target`` atomically (UTF-8)."""
    with atomic_open(target, "w", what, encoding="utf-8") as f:
        f.write(text)
    return Path(target)


class StderrCapture:
    """Holds back what C code writes to file descriptor 2 while ``with capture():`` blocks run.

    The held text is written to stderr by :meth:`release` (the write succeeded: nothing is
    hidden) or dropped by :meth:`discard` (it failed, and the caller reports it in one line);
    :attr:`text` lets the caller name the cause. Redirecting a descriptor is process-wide, so
    blocks of different threads run one at a time; nested blocks share the outer redirection.
    """

    _lock = threading.RLock()
    _depth = 0

    def __init__(self) -> None:
        self.chunks: list[str] = []

    @property
    def text(self) -> str:
        return "".join(self.chunks)

    @contextmanager
    def __call__(self) -> Iterator["StderrCapture"]:
        with StderrCapture._lock:
            if StderrCapture._depth > 0:
                StderrCapture._depth += 1
                try:
                    yield self
                finally:
                    StderrCapture._depth -= 1
                return
            buffer = _buffer_fd()
            saved = None
            if buffer is not None:
                try:
                    _flush_python_stderr()
                    saved = os.dup(2)
                    os.dup2(buffer, 2)
                except OSError:
                    if saved is not None:
                        os.close(saved)
                    os.close(buffer)
                    buffer = saved = None
            StderrCapture._depth = 1
            try:
                yield self
            finally:
                StderrCapture._depth = 0
                if buffer is not None:
                    _flush_python_stderr()
                    os.dup2(saved, 2)
                    os.close(saved)
                    self.chunks.append(_read_all(buffer))
                    os.close(buffer)

    def release(self) -> None:
        text, self.chunks = self.text, []
        if text:
            _flush_python_stderr()
            os.write(2, text.encode(errors="replace"))

    def discard(self) -> None:
        text, self.chunks = self.text, []
        if text:
            log.debug("suppressed C library output of a failed write: %s", text.strip())

    def last_error(self) -> str | None:
        """The reason in the last line libtiff printed (``_tiffWriteProc: No space left on
        device.`` -> ``No space left on device``), if it printed one."""
        lines = [line.strip() for line in self.text.splitlines() if line.strip()]
        return lines[-1].split(": ", 1)[-1].rstrip(".") if lines else None

    def write_failed(self) -> bool:
        """Whether the captured output says that writing the file failed. libtiff reports
        failed writes and seeks this way, even where GDAL's own close does not raise."""
        return bool(re.search(r"_tiff\w*(Write|Seek)Proc|[Ww]rite error|No space left|quota", self.text))


def _buffer_fd() -> int | None:
    """A descriptor for captured output that needs no disk space (memfd where there is one)."""
    try:
        if hasattr(os, "memfd_create"):
            return os.memfd_create("rsisr-stderr")
        fd, name = tempfile.mkstemp(prefix="rsisr-stderr-")
        os.unlink(name)
        return fd
    except OSError:
        return None


def _read_all(fd: int) -> str:
    os.lseek(fd, 0, os.SEEK_SET)
    parts = []
    while chunk := os.read(fd, 1 << 16):
        parts.append(chunk)
    return b"".join(parts).decode(errors="replace")


def _flush_python_stderr() -> None:
    try:
        sys.stderr.flush()
    except (AttributeError, ValueError, OSError):
        pass


__all__ = ["SUFFIX", "StderrCapture", "atomic_open", "atomic_path", "commit", "fsync_file", "pid_alive", "remove",
           "remove_stale", "temp_path", "write_error", "write_text"]
