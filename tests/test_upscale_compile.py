"""`rsisr upscale --compile`: torch.compile of the model call (off by default)."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
import torch

from conftest import one_line_error, rsisr_cli

pytestmark = pytest.mark.usefixtures("one_thread")


def _spy_compile(monkeypatch, behaviour=None):
    """Replace torch.compile by a wrapper that records its calls and runs the module eagerly (or
    as ``behaviour`` says)."""
    compiled = []

    def fake_compile(module, **kwargs):
        compiled.append(module)

        def run(*args):
            return behaviour(*args) if behaviour else module(*args)

        return run

    monkeypatch.setattr(torch, "compile", fake_compile)
    return compiled


def test_compile_is_off_by_default_and_on_with_the_flag(make_geotiff, tiny_model_file, tmp_path, monkeypatch):
    compiled = _spy_compile(monkeypatch)
    src = make_geotiff(width=40, height=36)
    plain, flagged = tmp_path / "plain.tif", tmp_path / "compiled.tif"
    common = ["--model", tiny_model_file, "--tile", "32", "--overlap", "8", "--precision", "fp32", "-q"]
    assert rsisr_cli(["upscale", src, "-o", plain, *common]).exit_code == 0
    assert compiled == []
    result = rsisr_cli(["upscale", src, "-o", flagged, *common, "--compile"])
    assert result.exit_code == 0, result.output
    assert len(compiled) == 1 and type(compiled[0]).__name__ == "LCMSR"
    with rasterio.open(plain) as a, rasterio.open(flagged) as b:
        assert np.array_equal(a.read(), b.read())  # the spy runs eagerly: the same pixels


def test_a_compiler_failure_is_one_line_and_leaves_nothing(make_geotiff, tiny_model_file, tmp_path, monkeypatch):
    class BackendCompilerFailed(RuntimeError):
        pass

    BackendCompilerFailed.__module__ = "torch._dynamo.exc"

    def fail(*args):
        raise BackendCompilerFailed("backend='inductor' raised:\nCppCompileError: C++ compile error\nmore lines")

    _spy_compile(monkeypatch, fail)
    src = make_geotiff(width=40, height=36)
    out = tmp_path / "out.tif"
    result = rsisr_cli(["upscale", src, "-o", out, "--model", tiny_model_file, "--compile", "-q"])
    one_line_error(result, "torch.compile failed", "backend='inductor' raised:", "without --compile")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([src.name, "tiny.safetensors"])


@pytest.mark.slow
def test_really_compiled_output_matches_eager(make_geotiff, tiny_model_file, tmp_path):
    """Inductor on this CPU (needs a C++ compiler): the same pixels as eager within 1/255. One
    tile, so one graph to compile."""
    from rsisr.upscale import upscale_file

    src = make_geotiff(width=32, height=32)
    outs = {}
    for compile_ in (False, True):
        outs[compile_] = tmp_path / f"out_{compile_}.tif"
        upscale_file(src, outs[compile_], model=tiny_model_file, tile=32, overlap=8, precision="fp32",
                     compile=compile_)
    with rasterio.open(outs[False]) as a, rasterio.open(outs[True]) as b:
        diff = np.abs(a.read().astype(int) - b.read().astype(int))
    assert diff.max() <= 1
