"""The tiling engine on in-memory arrays: stand-in models with known receptive fields give the
untiled result exactly, whatever the tile size, overlap, window and raster shape."""

import logging

import numpy as np
import pytest
import torch

from rsisr.noise import scene_noise
from rsisr.standins import ConvX4, NearestX4, NoiseX4
from rsisr.upscale import ArraySink, ArraySource, TiledUpscaler, fill_invalid, upscale_array


pytestmark = pytest.mark.usefixtures("one_thread")


def untiled(model, image, noises=()):
    with torch.no_grad():
        y = model(torch.from_numpy(image)[None] * 2 - 1, list(noises)).clamp(-1, 1)
    return ((y + 1) / 2)[0].numpy()


SHAPES = [(37, 53), (64, 64), (5, 9), (130, 77)]
TILINGS = [(16, 4), (24, 8), (40, 12), (20, 0), (256, 16)]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("tile, overlap", TILINGS)
def test_nearest_tiled_equals_untiled(shape, tile, overlap):
    image = np.random.default_rng(sum(shape)).random((3, *shape), dtype=np.float32)
    out = upscale_array(image, NearestX4(), tile=tile, overlap=overlap, batch_size=3, device="cpu")
    np.testing.assert_allclose(out, untiled(NearestX4(), image), atol=1e-6, rtol=0)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("tile, overlap", [(24, 8), (40, 12), (256, 16), (32, 8)])
def test_conv_with_known_receptive_field_tiled_equals_untiled(shape, tile, overlap):
    # radius 2 LR px <= overlap / 4 (the zero-weight margin): exact
    model = ConvX4(radius=2)
    image = np.random.default_rng(1).random((3, *shape), dtype=np.float32)
    out = upscale_array(image, model, tile=tile, overlap=overlap, batch_size=2, device="cpu")
    np.testing.assert_allclose(out, untiled(model, image), atol=1e-6, rtol=0)


def test_conv_reaching_past_the_margin_is_not_exact():
    """The exactness above is not vacuous: a receptive field wider than the margin shows."""
    model = ConvX4(radius=3)
    image = np.random.default_rng(2).random((3, 64, 64), dtype=np.float32)
    out = upscale_array(image, model, tile=24, overlap=8, device="cpu")
    assert np.abs(out - untiled(model, image)).max() > 1e-3


def test_scene_coordinate_noise_makes_tiling_invisible():
    model = NoiseX4()
    h, w = 45, 70
    image = np.random.default_rng(3).random((3, h, w), dtype=np.float32)
    _, z, lh, lw = model.latent_shape(h, w)
    noise = torch.from_numpy(scene_noise(7, z, 0, 0, lh, lw, 0))[None]
    ref = untiled(model, image, [noise])
    for tile, overlap in [(16, 4), (32, 8), (22, 2)]:
        out = upscale_array(image, model, tile=tile, overlap=overlap, seed=7, device="cpu")
        np.testing.assert_allclose(out, ref, atol=1e-6, rtol=0)
    other = upscale_array(image, model, tile=16, overlap=4, seed=8, device="cpu")
    assert np.abs(other - ref).max() > 0.05  # the noise does matter


@pytest.mark.parametrize("window", [(0, 0, 64, 80), (13, 7, 30, 41), (40, 60, 24, 20), (1, 1, 1, 1)])
def test_window_equals_crop_of_whole_scene(window):
    model = ConvX4(radius=2)
    image = np.random.default_rng(4).random((3, 64, 80), dtype=np.float32)
    whole = upscale_array(image, model, tile=32, overlap=8, device="cpu")
    r, c, h, w = window
    part = upscale_array(image, model, tile=32, overlap=8, device="cpu", window=window)
    np.testing.assert_allclose(part, whole[:, 4 * r: 4 * (r + h), 4 * c: 4 * (c + w)], atol=1e-6, rtol=0)


def test_every_output_block_written_once_with_panels_and_strips():
    image = np.random.default_rng(5).random((3, 100, 90), dtype=np.float32)
    engine = TiledUpscaler(NearestX4(), tile=16, overlap=4, device="cpu", panel_width=96)
    sink = ArraySink(400, 360, block=(32, 48))
    writes = []
    original = sink.write
    sink.write = lambda r, c, d: (writes.append((r, c, d.shape)), original(r, c, d))
    engine.run(ArraySource(image), sink)
    assert np.all(sink.written == 1)
    for r, c, shape in writes:
        assert r % 32 == 0 and c % 48 == 0
        assert shape[1] % 32 == 0 or r + shape[1] == 400
        assert shape[2] % 48 == 0 or c + shape[2] == 360
    np.testing.assert_allclose(sink.out, untiled(NearestX4(), image), atol=1e-6)


def test_fill_is_local_so_masked_scenes_tile_exactly():
    rng = np.random.default_rng(6)
    image = rng.random((3, 70, 90), dtype=np.float32)
    valid = np.ones((70, 90), bool)
    valid[:, :25] = False  # a collar
    valid[40:50, 50:70] = False  # a hole
    image[:, ~valid] = 0.0
    model = ConvX4(radius=2)
    filled = fill_invalid(torch.from_numpy(image), torch.from_numpy(valid), 16).numpy()
    assert np.array_equal(filled[:, valid], image[:, valid])  # valid pixels untouched
    assert abs(filled[0, 45, 60] - image[0, 39:51, 49:71][:, [0, -1]].mean()) < 0.3  # grown from the edges
    assert np.all(filled[:, :, :5] == 0.5)  # beyond the growth: mid-grey, never the nodata 0
    ref = untiled(model, filled)
    for tile, overlap in [(24, 8), (40, 8)]:
        out = upscale_array(image, model, valid=valid, tile=tile, overlap=overlap, device="cpu")
        np.testing.assert_allclose(out, ref, atol=1e-6, rtol=0)


class FakeOOM(torch.nn.Module):
    """Nearest x4 that raises CUDA's out-of-memory error above ``limit`` input pixels per call."""

    lr_multiple = 1

    def __init__(self, limit):
        super().__init__()
        self.limit = limit
        self.calls = []

    def forward(self, lr, noises=(), steps=1):
        self.calls.append(tuple(lr.shape))
        if lr.shape[0] * lr.shape[-2] * lr.shape[-1] > self.limit:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (fake)")
        return torch.nn.functional.interpolate(lr, scale_factor=4, mode="nearest")


def test_out_of_memory_halves_the_batch_then_the_tile(caplog):
    image = np.random.default_rng(7).random((3, 80, 150), dtype=np.float32)  # rows of 5 full tiles
    model = FakeOOM(limit=2 * 32 * 32)
    with caplog.at_level(logging.WARNING, logger="rsisr.upscale"):
        out = upscale_array(image, model, tile=32, overlap=4, batch_size=4, device="cpu")
    np.testing.assert_allclose(out, untiled(NearestX4(), image), atol=1e-6)
    text = caplog.text
    assert "batch of 4 tiles; retrying with batches of 2" in text
    assert "batches of 1" not in text
    # then a tile too large for one call: sub-tiles of half the size
    model = FakeOOM(limit=20 * 20)
    with caplog.at_level(logging.WARNING, logger="rsisr.upscale"):
        out = upscale_array(image, model, tile=32, overlap=4, batch_size=2, device="cpu")
    np.testing.assert_allclose(out, untiled(NearestX4(), image), atol=1e-6)
    assert "retrying with tiles of 16 (overlap 4)" in caplog.text
    assert max(h * w for _, _, h, w in model.calls[-5:]) <= 20 * 20


def test_out_of_memory_at_the_smallest_tile_is_a_clear_error():
    from rsisr.errors import DeviceError

    with pytest.raises(DeviceError, match="out of memory even for one tile"):
        upscale_array(np.zeros((3, 8, 8), np.float32), FakeOOM(limit=0), tile=4, overlap=0, device="cpu")


@pytest.fixture(scope="module")
def tiny_tilings(geotiff_dir):
    """|difference| between two tilings (64 and 96, same seed) and between two seeds (same
    tiling) of the untrained tiny model on a 96 x 96 crop of a real raster."""
    import rasterio

    import rsisr

    torch.manual_seed(0)
    model = rsisr.build_model("tiny").eval()
    with rasterio.open(geotiff_dir / "usgs_hro_colorado_rgb_u8_26913_0.15m.tif") as src:
        image = src.read(window=((0, 96), (0, 96))).astype(np.float32) / 255
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        a = upscale_array(image, model, tile=64, overlap=16, device="cpu", seed=1)
        b = upscale_array(image, model, tile=96, overlap=16, device="cpu", seed=1)
        c = upscale_array(image, model, tile=96, overlap=16, device="cpu", seed=2)
    finally:
        torch.set_num_threads(n)
    return np.abs(a - b), np.abs(b - c)


def test_tiny_model_two_tile_sizes_agree_far_better_than_two_seeds(tiny_tilings):
    """Scene-coordinate noise: two tilings of the tiny model differ far less than two seeds do
    (independent noise per tile would make them differ like two seeds)."""
    tiling, seeds = tiny_tilings
    assert tiling.mean() < 0.15 * seeds.mean(), (tiling.mean() * 255, seeds.mean() * 255)


@pytest.mark.parametrize("dtype, scale", [("uint8", "auto"), ("uint16", "0,3000"), ("uint16", "none"),
                                          ("int16", "-500,700"), ("float32", "0,1"), ("int32", "none")])
def test_inverse_on_the_device_matches_numpy(dtype, scale):
    """The engine converts back on the model's device (rsisr.radiometry.Scaling.inverse_torch)."""
    from rsisr.radiometry import resolve_scaling

    s = resolve_scaling(scale, dtype, 3)
    x = np.random.default_rng(0).random((3, 64, 64)).astype(np.float32)
    x[0, 0, 0], x[1, 0, 0], x[2, 0, 0] = 0.0, 1.0, np.nan
    got, ref = s.inverse_torch(torch.from_numpy(x), dtype), s.inverse(x, dtype)
    assert got.dtype == np.dtype(dtype)
    assert np.array_equal(got, ref)


def test_a_prepared_model_is_left_untouched_by_later_engines(monkeypatch):
    """Engines built while another thread runs the same model (a dask array's chunks) must not
    re-set its weights: doing so changed a running bf16 model's output by up to 4 levels."""
    import rsisr

    torch.manual_seed(0)
    model = rsisr.build_model("tiny")  # in training mode, contiguous weights
    first = TiledUpscaler(model, tile=64, overlap=16, device="cpu", precision="bf16")
    assert first.model is model and not model.training
    assert all(p.is_contiguous(memory_format=torch.channels_last) for p in model.parameters() if p.dim() == 4)
    calls = []
    original = torch.nn.Module._apply
    monkeypatch.setattr(torch.nn.Module, "_apply", lambda self, *a, **k: calls.append(self) or original(self, *a, **k))
    monkeypatch.setattr(torch.nn.Module, "train", lambda self, mode=True: calls.append(self))
    pointers = [p.data_ptr() for p in model.parameters()]
    for precision in ("bf16", "fp32"):
        assert TiledUpscaler(model, tile=64, overlap=16, device="cpu", precision=precision).model is model
    assert calls == [] and [p.data_ptr() for p in model.parameters()] == pointers
