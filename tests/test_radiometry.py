import json

import numpy as np
import pytest

from rsisr.errors import InputError
from rsisr.radiometry import parse_scale, resolve_scaling


def test_uint8_is_taken_as_is_and_round_trips():
    s = resolve_scaling("auto", "uint8", 3)
    v = np.arange(256, dtype=np.uint8).reshape(1, 16, 16).repeat(3, 0)
    assert np.array_equal(s.inverse(s.forward(v), np.uint8), v)


def test_uint16_none_and_range_inverse_is_exact_and_clipped():
    v = np.array([[[0, 1000, 65535]]], dtype=np.uint16)
    s = resolve_scaling("none", "uint16", 1)
    assert np.array_equal(s.inverse(s.forward(v), np.uint16), v)
    r = resolve_scaling("0,2000", "uint16", 1)
    out = r.inverse(r.forward(v), np.uint16)
    assert out.tolist() == [[[0, 1000, 2000]]]  # beyond MAX is clipped by the forward map
    assert r.inverse(np.array([[[np.nan, 2.0]]]), np.uint16).tolist() == [[[0, 4000]]]


def test_auto_uses_percentiles_of_valid_pixels():
    rng = np.random.default_rng(0)
    sample = rng.integers(100, 5000, (2, 50, 50)).astype(np.uint16)
    valid = np.ones((50, 50), bool)
    sample[:, :10] = 0
    valid[:10] = False
    s = resolve_scaling("auto", "uint16", 2, sample, valid)
    assert s.mode == "auto" and 100 <= s.lo[0] < 150 and 4950 < s.hi[0] <= 5000
    assert json.loads(s.to_tag())["lo"] == list(s.lo)


def test_int16_and_float():
    s = resolve_scaling("none", "int16", 1)
    v = np.array([[[-32768, 0, 32767]]], dtype=np.int16)
    assert np.array_equal(s.inverse(s.forward(v), np.int16), v)
    f = resolve_scaling("none", "float32", 1)
    assert f.inverse(np.array([[[0.25]]]), np.float32).dtype == np.float32


@pytest.mark.parametrize("bad", ["fast", "1", "5,2", "a,b"])
def test_bad_scale_spec(bad):
    with pytest.raises(InputError, match="--scale"):
        parse_scale(bad)


def test_per_band_and_tag_specs_round_trip():
    s = parse_scale("0,3000,10,2800,5,2500")
    assert (s.mode, s.lo, s.hi) == ("range", (0.0, 10.0, 5.0), (3000.0, 2800.0, 2500.0))
    auto = resolve_scaling("auto", "uint16", 3, np.arange(300, dtype=np.uint16).reshape(3, 10, 10))
    again = resolve_scaling(parse_scale(auto.to_tag()), "uint16", 3)
    assert (again.lo, again.hi) == (auto.lo, auto.hi)  # an output's RSISR_SCALING tag reproduces its scaling
    assert parse_scale("0,2000") == (0.0, 2000.0)
    with pytest.raises(InputError, match="2 band ranges for 3 bands"):
        resolve_scaling(parse_scale("0,1,0,1"), "uint16", 3)


@pytest.mark.parametrize("bad", ["0,1,2", '{"lo": [0]}', '{"lo": [0, 1], "hi": [5]}', "0,1,5,2", "{nope"])
def test_bad_per_band_specs(bad):
    with pytest.raises(InputError, match="--scale"):
        parse_scale(bad)


def test_outside_is_what_the_forward_map_clips():
    s = resolve_scaling("100,200", "uint16", 1)
    raw = np.array([[[50, 150, 260, 300]]], np.uint16)
    assert s.outside(raw).tolist() == [[[-50.0, 0.0, 60.0, 100.0]]]
    assert s.outside(raw, np.array([[True, True, True, False]])).tolist() == [[[-50.0, 0.0, 60.0, 0.0]]]
    assert s.outside(np.array([[[100, 200]]], np.uint16)) is None
    assert resolve_scaling("auto", "uint8", 1).outside(np.array([[[0, 255]]], np.uint8)) is None
