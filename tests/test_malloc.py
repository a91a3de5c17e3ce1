"""rsisr.malloc: glibc keeps freed memory, so a tile's activations do not page-fault in again."""

import subprocess
import sys
from pathlib import Path

import pytest

PROBE = """
import sys
sys.path.insert(0, sys.argv[2])
from test_malloc import _probe_faults
if sys.argv[1] == "tuned":
    from rsisr.malloc import keep_freed_memory
    assert keep_freed_memory()
print(_probe_faults())
"""


def _probe_faults() -> int:
    """Minor page faults of writing and freeing 64 MB four times (4 x 16,384 pages, above any
    mmap threshold, like an activation), in the process that calls it: PROBE's subprocess, or a
    Dask worker by ``client.run``."""
    import ctypes
    import ctypes.util
    import resource

    libc = ctypes.CDLL(ctypes.util.find_library("c"))
    libc.malloc.restype = ctypes.c_void_p
    libc.free.argtypes = [ctypes.c_void_p]

    def touch(size=64 * 2**20):
        p = libc.malloc(size)
        ctypes.memset(p, 1, size)
        libc.free(p)

    touch()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(4):
        touch()
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before


def _faults(mode: str, env=None) -> int:
    here = str(Path(__file__).resolve().parent)
    done = subprocess.run([sys.executable, "-c", PROBE, mode, here], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    return int(done.stdout)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt: Linux only")
def test_freed_memory_is_reused_without_page_faults():
    # 4 x 64 MB = 65,536 pages of 4 KB: glibc's default maps and faults them in every time
    assert _faults("plain") > 30_000
    assert _faults("tuned") < 3_000


def test_rsisr_malloc_default_leaves_glibc_alone(monkeypatch):
    from rsisr.malloc import keep_freed_memory

    monkeypatch.setenv("RSISR_MALLOC", "default")
    assert keep_freed_memory() is False


def test_the_rsisr_command_sets_it_at_start(monkeypatch):
    import rsisr.malloc
    from conftest import rsisr_cli

    calls = []
    monkeypatch.setattr(rsisr.malloc, "keep_freed_memory", lambda: calls.append(1) or True)
    result = rsisr_cli(["info", "--preset", "tiny"])
    assert result.exit_code == 0, result.output
    assert calls == [1]


def test_not_set_outside_a_dask_worker(monkeypatch):
    """A script calling rsisr's task functions itself keeps its own malloc settings."""
    import rsisr.malloc

    calls = []
    monkeypatch.setattr(rsisr.malloc, "keep_freed_memory", lambda: calls.append(1) or True)
    assert rsisr.malloc.keep_freed_memory_in_dask_worker() is False
    assert calls == []


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt: Linux only")
@pytest.mark.parametrize("task", ["scene", "part"])
def test_rsisr_tasks_set_it_in_their_dask_worker(task, make_geotiff, tiny_model_file, tmp_path):
    """A scene of `rsisr batch` and a part of a split scene set it in the worker that runs them:
    1.44 M page faults a 1024 x 1024 scene became 15 k (benchmarks/worker_malloc.py)."""
    import cloudpickle

    from rsisr.batch.run import _client, upscale_scene
    from rsisr.distributed import upscale_distributed

    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # _probe_faults, defined here
    src = make_geotiff(width=80, height=72)
    with _client(None, 1, 1, True) as (client, _, _):
        assert list(client.run(_probe_faults).values())[0] > 30_000
        if task == "scene":
            result = client.submit(upscale_scene, str(src), str(tmp_path / "out.tif"), model=str(tiny_model_file),
                                   threads=1, quiet=True, tile=64, overlap=8, pure=False).result()
            assert result.status == "done", result
        else:
            upscale_distributed(src, tmp_path / "out.tif", tiny_model_file, client=client, threads_per_worker=1,
                                part_size=48, tile=64, overlap=8)
        assert list(client.run(_probe_faults).values())[0] < 3_000
    assert (tmp_path / "out.tif").is_file()
