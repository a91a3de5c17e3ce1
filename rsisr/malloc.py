"""glibc malloc settings for rsisr's processes: keep freed memory for the next tile.

PyTorch frees and reallocates the same large activations for every tile. glibc serves
allocations above its mmap threshold (dynamic, at most 32 MB) with fresh mappings and unmaps
them on free, so every tile's activations page-fault in again. With the default model, one
thread and a 1024 x 1024 scene that was 1.6 M minor page faults and a fifth of the CPU time
spent in the kernel. :func:`keep_freed_memory` makes glibc serve them from its heap and keep what
is freed (``mallopt``: ``M_MMAP_MAX`` 0, ``M_TRIM_THRESHOLD`` 2**31 - 1): 0.17 M faults, 1.3 s
of system time instead of 6, 1.2-1.3x less wall time, about 100 MB more peak memory
(``README.md``, Speed). The ``rsisr`` command calls it at start; Python scripts may call it
first thing. rsisr's Dask tasks (a scene of ``rsisr batch``, a part of a split scene) call
:func:`keep_freed_memory_in_dask_worker` first, so workers, rsisr's own or a cluster's, get it
too (``benchmarks/worker_malloc.py``). Linux with glibc only; elsewhere, or with
``RSISR_MALLOC=default`` (on the workers), nothing changes.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

#: ``RSISR_MALLOC=default`` leaves glibc's own settings.
ENV_VAR = "RSISR_MALLOC"
_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4


def keep_freed_memory() -> bool:
    """Set glibc's malloc to keep freed memory for reuse; True if it was set."""
    if os.environ.get(ENV_VAR, "").lower() == "default" or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (musl has no mallopt)
        return False
    return bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, 2**31 - 1))


def keep_freed_memory_in_dask_worker() -> bool:
    """:func:`keep_freed_memory` when this process is a Dask worker; True if it was set. Outside
    a worker (a Python script calling ``upscale_scene`` itself) the process is left alone."""
    try:
        from distributed import get_worker

        get_worker()
    except (ImportError, ValueError):  # no distributed, or not in a worker
        return False
    return keep_freed_memory()
