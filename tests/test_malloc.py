"""rsisr.malloc: glibc keeps freed memory, so a tile's activations do not page-fault in again."""

import subprocess
import sys

import pytest

PROBE = """
import ctypes, ctypes.util, resource, sys
libc = ctypes.CDLL(ctypes.util.find_library("c"))
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
if sys.argv[1] == "tuned":
    from rsisr.malloc import keep_freed_memory
    assert keep_freed_memory()
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
def touch(size=64 * 2**20):  # 64 MB, above any mmap threshold, written like an activation
    p = libc.malloc(size)
    ctypes.memset(p, 1, size)
    libc.free(p)
touch()
before = faults()
for _ in range(4):
    touch()
print(faults() - before)
"""


def _faults(mode: str, env=None) -> int:
    done = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, env=env, timeout=120)
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
