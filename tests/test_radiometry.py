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
