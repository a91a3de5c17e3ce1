"""model.upscale on in-memory images: layouts, dtypes, determinism."""

import numpy as np
import pytest
import torch

from rsisr.errors import InputError


@pytest.mark.parametrize(
    "shape, dtype",
    [((20, 24, 3), np.uint8), ((3, 20, 24), np.uint16), ((20, 24, 1), np.float32), ((20, 24), np.uint8)],
)
def test_numpy_layouts_and_dtypes(tiny_model, shape, dtype):
    rng = np.random.default_rng(0)
    if np.dtype(dtype).kind == "f":
        img = rng.random(shape).astype(dtype)
    else:
        img = rng.integers(0, np.iinfo(dtype).max, shape).astype(dtype)
    out = tiny_model.upscale(img, seed=3)
    expected = tuple(s * 4 if s not in (1, 3) else s for s in shape)
    assert out.shape == expected and out.dtype == img.dtype
    assert np.array_equal(out, tiny_model.upscale(img, seed=3))


def test_torch_tensor_batch(tiny_model):
    x = torch.rand(2, 3, 10, 12)
    out = tiny_model.upscale(x, steps=2, seed=0)
    assert out.shape == (2, 3, 40, 48) and out.dtype == torch.float32
    assert 0 <= out.min() and out.max() <= 1


def test_bad_inputs(tiny_model):
    with pytest.raises(InputError, match="shape"):  # which axis holds the bands? (a (5, 6, 7) image is 5 bands)
        tiny_model.upscale(np.zeros((6, 7, 6), np.uint8))
    with pytest.raises(InputError, match="shape"):
        tiny_model.upscale(np.zeros((2, 3, 8, 8), np.uint8))
    with pytest.raises(InputError, match="numpy array"):
        tiny_model.upscale([[1, 2]])
    with pytest.raises(InputError, match="steps"):
        tiny_model.upscale(np.zeros((8, 8, 3), np.uint8), steps=0)


def test_device_resolution():
    from rsisr.device import resolve_device
    from rsisr.errors import DeviceError

    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type in ("cpu", "cuda")
    with pytest.raises(DeviceError):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(DeviceError, match="CUDA is not available"):
            resolve_device("cuda:0")


def test_precision_auto_follows_native_bf16(monkeypatch):
    """auto = bf16 only where the CPU runs it natively (checked at run time), else fp32."""
    from rsisr.device import native_bf16, resolve_precision
    from rsisr.errors import DeviceError

    cpu = torch.device("cpu")
    for bf16, amx, expected in ((True, False, "bf16"), (False, True, "bf16"), (False, False, "fp32")):
        monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda v=bf16: v)
        monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda v=amx: v)
        assert native_bf16(cpu) is (expected == "bf16")
        assert resolve_precision("auto", cpu) == expected
    assert resolve_precision("fp16", cpu) == "fp16"
    with pytest.raises(DeviceError, match="invalid precision"):
        resolve_precision("fp8", cpu)
