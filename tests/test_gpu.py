"""On a CUDA device: the GPU agrees with the CPU, a real out-of-memory error halves the batch,
and the bf16 / fp16 autocast paths run. Marked ``gpu``: ``pytest -m gpu`` runs them where CUDA
exists (``benchmarks/gpu_check.sh`` does), and they skip elsewhere."""

from __future__ import annotations

import copy
import logging

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import rsisr
from rsisr.standins import NearestX4
from rsisr.upscale import ArraySink, ArraySource, TiledUpscaler, upscale_array

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


@pytest.fixture(scope="module")
def real_crop(geotiff_dir) -> np.ndarray:
    """(3, 96, 96) float32 in [0, 1]: the top-left of a real 0.15 m orthophoto."""
    import rasterio
    from rasterio.windows import Window

    with rasterio.open(geotiff_dir / "usgs_hro_colorado_rgb_u8_26913_0.15m.tif") as src:
        return src.read([1, 2, 3], window=Window(0, 0, 96, 96)).astype(np.float32) / 255.0


@pytest.fixture(scope="module")
def default_model():
    return rsisr.load_model().eval()


def to_8bit(x: np.ndarray) -> np.ndarray:
    return np.round(np.clip(x, 0.0, 1.0) * 255.0)


def test_cpu_and_gpu_agree_within_2_of_255(real_crop, default_model):
    options = dict(tile=64, overlap=16, batch_size=2, seed=0)
    cpu = upscale_array(real_crop, copy.deepcopy(default_model), device="cpu", **options)
    # fp32 on both sides: cuDNN's TF32 convolutions (on by default on Ampere and later) are a
    # precision choice of their own, not what this test compares
    with torch.backends.cudnn.flags(enabled=True, benchmark=False, deterministic=False, allow_tf32=False):
        gpu = upscale_array(real_crop, copy.deepcopy(default_model), device="cuda", **options)
    assert cpu.shape == gpu.shape == (3, 384, 384)
    diff = np.abs(to_8bit(cpu) - to_8bit(gpu))
    assert diff.max() <= 2, f"max |CPU - GPU| = {diff.max():.0f}/255"
    assert diff.mean() < 0.1
    # and the output is the model's, not a trivial image
    assert to_8bit(gpu).std() > 10


class Greedy(torch.nn.Module):
    """Nearest x4 that allocates ``per_tile`` float32 activations per tile on the device, so that
    the card's real allocator runs out of memory above a given batch."""

    lr_multiple = 1

    def __init__(self, per_tile: int):
        super().__init__()
        self.per_tile = per_tile
        self.batches: list[int] = []

    def forward(self, lr, noises=(), steps=1):
        self.batches.append(lr.shape[0])
        activations = torch.ones(lr.shape[0], self.per_tile, device=lr.device)
        out = F.interpolate(lr, scale_factor=4, mode="nearest")
        return out + 0.0 * activations[:, :1, None, None]


def test_a_real_out_of_memory_error_halves_the_batch(caplog):
    torch.cuda.empty_cache()
    free, _ = torch.cuda.mem_get_info()
    # 0.3 of the free memory per tile: a batch of 4 (1.2x) cannot fit, a batch of 2 (0.6x) can
    model = Greedy(per_tile=int(0.3 * free) // 4)
    image = np.random.default_rng(3).random((3, 32, 152), dtype=np.float32)  # one row of 5 tiles
    engine = TiledUpscaler(model, tile=32, overlap=8, batch_size=4, device="cuda")
    sink = ArraySink(4 * 32, 4 * 152)
    with caplog.at_level(logging.WARNING, logger="rsisr.upscale"):
        engine.run(ArraySource(image), sink)
    assert "out of memory with a batch of 4 tiles; retrying with batches of 2" in caplog.text
    assert engine.batch_size == 2 and engine._child is None  # the batch shrank, the tile did not
    assert model.batches[0] == 4 and set(model.batches[1:]) <= {1, 2}
    expected = upscale_array(image, NearestX4(), tile=32, overlap=8, device="cpu")
    np.testing.assert_allclose(sink.out, expected, atol=1e-6, rtol=0)
    assert (sink.written == 1).all()
    del model
    torch.cuda.empty_cache()


@pytest.mark.parametrize("precision, dtype", [("bf16", torch.bfloat16), ("fp16", torch.float16)])
def test_autocast_paths_run_in_reduced_precision(real_crop, default_model, precision, dtype):
    if precision == "bf16" and not torch.cuda.is_bf16_supported():
        pytest.skip("this CUDA device has no bf16")
    model = copy.deepcopy(default_model)
    seen = []
    conv = next(m for m in model.decoder.modules() if isinstance(m, torch.nn.Conv2d))
    conv.register_forward_hook(lambda mod, inp, out: seen.append(out.dtype))
    options = dict(tile=64, overlap=16, seed=0, device="cuda")
    reduced = upscale_array(real_crop, model, precision=precision, **options)
    assert seen and set(seen) == {dtype}  # the convolutions really ran in bf16 / fp16
    full = upscale_array(real_crop, copy.deepcopy(default_model), precision="fp32", **options)
    assert np.isfinite(reduced).all() and reduced.min() >= 0.0 and reduced.max() <= 1.0
    diff = np.abs(to_8bit(reduced) - to_8bit(full))
    assert diff.mean() < 1.0, f"mean |{precision} - fp32| = {diff.mean():.2f}/255"


def test_cli_upscale_on_cuda_with_bf16(make_geotiff, tiny_model_file, tmp_path):
    import rasterio
    from click.testing import CliRunner

    from rsisr_cli.main import cli

    src = make_geotiff(width=40, height=24)
    out = tmp_path / "out.tif"
    result = CliRunner().invoke(cli, ["upscale", str(src), "-o", str(out), "--model", str(tiny_model_file),
                                      "--device", "cuda", "--precision", "bf16", "-q"])
    assert result.exit_code == 0, result.output
    with rasterio.open(src) as s, rasterio.open(out) as o:
        assert (o.width, o.height, o.count) == (160, 96, 3)
        assert o.crs == s.crs and o.transform.a == s.transform.a / 4
        assert o.read().std() > 0
