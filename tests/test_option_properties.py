"""Property-based tests (hypothesis) of ``rsisr upscale``'s option space: tile, overlap, bounds,
scale specs and band lists. Whatever a user types, the answer is a result or an rsisr error
(one line at the CLI), never another exception; accepted values keep their invariants.

Derandomised, so CI runs the same examples every time; ``max_examples`` keeps the whole file to
a few seconds.
"""

from __future__ import annotations

import math
import tempfile
from pathlib import Path

import numpy as np
import pytest
import rasterio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rasterio.transform import from_origin

from rsisr.errors import InputError, RsisrError
from rsisr.geo import bounds_window
from rsisr.radiometry import Scaling, parse_scale
from rsisr.standins import NearestX4
from rsisr.tiling import alignment, effective_tiling
from rsisr.upscale import parse_bands, upscale_array, upscale_file

pytestmark = pytest.mark.usefixtures("one_thread")

FAST = settings(max_examples=60, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture])

numbers = st.one_of(st.integers(-70000, 70000).map(str), st.floats(allow_nan=True, allow_infinity=True).map(repr),
                    st.sampled_from(["", " ", "nan", "inf", "-inf", "1e999", "0x10", "١٢"]))
band_text = st.one_of(st.text(max_size=12), st.lists(numbers, max_size=5).map(",".join))
scale_text = st.one_of(
    st.text(max_size=16),
    st.sampled_from(["auto", "none", " AUTO ", "{}", "{\"lo\": [0], \"hi\": [1]}", "{\"lo\": 1}", "[1, 2]"]),
    st.lists(numbers, max_size=6).map(",".join),
    st.builds(lambda lo, hi: f'{{"lo": {lo}, "hi": {hi}}}', st.lists(st.integers(-5, 5), max_size=4),
              st.lists(st.integers(-5, 5), max_size=4)),
)


@FAST
@given(band_text)
def test_band_lists_parse_or_are_one_input_error(text):
    try:
        bands = parse_bands(text)
    except InputError as exc:
        assert "\n" not in str(exc)
        return
    assert bands is None or (len(bands) in (1, 3) and all(isinstance(b, int) for b in bands))


@FAST
@given(scale_text)
def test_scale_specs_parse_or_are_one_input_error(text):
    try:
        spec = parse_scale(text)
    except InputError as exc:
        assert "\n" not in str(exc)
        return
    if isinstance(spec, str):
        assert spec in ("auto", "none")
        return
    los, his = (spec.lo, spec.hi) if isinstance(spec, Scaling) else ((spec[0],), (spec[1],))
    assert all(math.isfinite(v) for v in (*los, *his)) and all(h > lo for lo, h in zip(los, his))


@FAST
@given(st.integers(-5, 600), st.integers(-5, 300), st.sampled_from([1, 2, 4, 8, 16, 32]))
def test_tile_and_overlap_align_or_are_one_config_error(tile, overlap, multiple):
    try:
        t, o = effective_tiling(tile, overlap, multiple)
    except RsisrError as exc:
        assert "\n" not in str(exc)
        return
    a = alignment(multiple)
    assert t % a == 0 and o % a == 0 and t > 2 * o and o >= overlap and t <= max(tile, a)


@settings(max_examples=25, deadline=None, derandomize=True)
@given(st.integers(1, 70), st.integers(1, 70), st.sampled_from([8, 16, 24, 32, 48]), st.integers(0, 20))
def test_tiled_equals_untiled_for_a_pointwise_model(h, w, tile, overlap):
    """With a model of receptive field 1 (nearest x4), any accepted tiling gives the exact nearest
    x4 of the image: blending weights sum to one everywhere, whatever the tile, overlap and size."""
    try:
        effective_tiling(tile, overlap, 1)
    except RsisrError:
        return
    image = np.random.default_rng(h * 100 + w).random((3, h, w), dtype=np.float32)
    out = upscale_array(image, NearestX4(), tile=tile, overlap=overlap, device="cpu")
    np.testing.assert_allclose(out, image.repeat(4, 1).repeat(4, 2), rtol=0, atol=1e-6)


TRANSFORM = from_origin(500000.0, 5000000.0, 10.0, 10.0)
coords = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.floats(499000.0, 501000.0),
                   st.floats(4999000.0, 5001000.0))


@FAST
@given(st.tuples(coords, coords, coords, coords))
def test_bounds_give_a_window_inside_the_raster_or_one_input_error(bounds):
    try:
        window = bounds_window(bounds, None, "EPSG:32633", TRANSFORM, 64, 48)
    except InputError as exc:
        assert "\n" not in str(exc)
        return
    assert 0 <= window.col_off and window.col_off + window.width <= 64 and window.width >= 1
    assert 0 <= window.row_off and window.row_off + window.height <= 48 and window.height >= 1


OUTCOMES = []


@pytest.fixture(scope="module")
def scene(tmp_path_factory) -> Path:
    """A 4-band uint16 GeoTIFF with nodata: every option applies to it."""
    path = tmp_path_factory.mktemp("prop") / "scene.tif"
    rng = np.random.default_rng(0)
    data = rng.integers(1, 4000, (4, 40, 56), dtype=np.uint16)
    data[:, :4, :] = 0
    with rasterio.open(path, "w", driver="GTiff", width=56, height=40, count=4, dtype="uint16", crs="EPSG:32633",
                       transform=TRANSFORM, nodata=0, tiled=True, blockxsize=16, blockysize=16) as dst:
        dst.write(data)
    return path


@settings(max_examples=40, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(tile=st.one_of(st.integers(1, 200), st.sampled_from([16, 32, 64])), overlap=st.integers(0, 24),
       bands=st.one_of(st.none(), st.sampled_from(["1,2,3", "4,3,2", "2", "1,1,1", (3, 2, 1)]), band_text),
       scale=st.one_of(st.sampled_from(["auto", "none", "0,3000", "0,1000,0,2000,0,3000"]), scale_text),
       bounds=st.one_of(st.none(), st.none(), st.tuples(coords, coords, coords, coords)))
def test_upscale_option_space(scene, tile, overlap, bands, scale, bounds):
    """Every combination: an output of the window's size x4 with the chosen bands, or one rsisr
    error; nothing left in the output folder on an error."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "out.tif"
        try:
            result = upscale_file(scene, out, NearestX4(), tile=tile, overlap=overlap, bands=bands, scale=scale,
                                  bounds=bounds, device="cpu")
        except RsisrError as exc:
            assert "\n" not in str(exc)
            assert list(Path(tmp).iterdir()) == []
            OUTCOMES.append(type(exc).__name__)
            return
        OUTCOMES.append("ok")
        with rasterio.open(out) as o:
            assert (o.width, o.height) == (result.width, result.height)
            assert o.width % 4 == 0 and o.height % 4 == 0 and o.width <= 4 * 56 and o.height <= 4 * 40
            assert o.count == len(parse_bands(bands) or (1, 2, 3)) and o.dtypes[0] == "uint16"


def test_upscale_option_space_reaches_outputs_and_errors():
    """The examples above are not all rejected at parse time (run after them, in file order)."""
    if not OUTCOMES:
        pytest.skip("run together with test_upscale_option_space")
    # (hypothesis may run fewer examples on a busy machine: 4 and 5 outcomes of 40 were seen)
    assert OUTCOMES.count("ok") >= 3 and len(OUTCOMES) - OUTCOMES.count("ok") >= 3, OUTCOMES
