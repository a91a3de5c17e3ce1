"""Multispectral inference (issue 14): N-band models read N bands (``--bands``), ``--other-bands
bicubic`` keeps every input band, a model's stored scaling replaces ``--scale auto``, arrays
take ``bands=``; refusals are one line with nothing written. Untrained tiny models of 3, 4 and
10 bands; the trained ones are in test_multiband_train.py."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import rasterio
import torch
import torch.nn.functional as F
from rasterio.windows import Window

import rsisr
from conftest import one_line_error, rsisr_cli
from rsisr.config import ModelConfig, get_preset
from rsisr.errors import BandSelectionWarning, ConfigError, InputError
from rsisr.upscale import upscale_file
from upscale_helpers import check_against_input, up4

NAIP = "naip_m_4709963_se_14_2020_rgbn_u8_26914_5m.tif"
STARS = "stars_L7_ETMs_6band_u8_31985_28.5m.tif"
FAST = dict(seed=3, tile=48, overlap=16, device="cpu", precision="fp32")


def tiny_file(path, **overrides):
    """An untrained tiny model of ``overrides`` (e.g. bands=4), saved to ``path``."""
    torch.manual_seed(0)
    rsisr.save_model(rsisr.build_model(get_preset("tiny").replace(overrides)), path)
    return path


def crop_of(geotiff_dir, name, out, window, hole=None, descriptions=None):
    """A window of a real raster as a plain multiband GeoTIFF (no alpha: PHOTOMETRIC=MINISBLACK),
    with a nodata ``hole`` (row, col, h, w) set to 0 and band ``descriptions``."""
    with rasterio.open(geotiff_dir / name) as src:
        data = src.read(window=window)
        profile = {k: v for k, v in src.profile.items() if k not in ("blockxsize", "blockysize", "tiled")}
        transform = src.window_transform(window)
    if hole is not None:
        r, c, h, w = hole
        data[:, r:r + h, c:c + w] = 0
        profile["nodata"] = 0
    profile.update(width=window.width, height=window.height, transform=transform, photometric="MINISBLACK")
    with rasterio.open(out, "w", **profile) as dst:
        dst.write(data)
        if descriptions:
            dst.descriptions = tuple(descriptions)
    return out


@pytest.fixture
def naip_crop(geotiff_dir, tmp_path):
    return crop_of(geotiff_dir, NAIP, tmp_path / "naip.tif", Window(300, 200, 48, 40), hole=(5, 20, 9, 14),
                   descriptions=("red", "green", "blue", "nir"))


def bicubic_x4(raw: np.ndarray, dtype) -> np.ndarray:
    """Bicubic x4 of whole (C, h, w) raster values, rounded and clipped to ``dtype``."""
    x = torch.from_numpy(raw.astype(np.float64))[None]
    up = F.interpolate(x, scale_factor=4, mode="bicubic", align_corners=False)[0].numpy()
    info = np.iinfo(dtype)
    return np.clip(np.rint(up), info.min, info.max).astype(dtype)


def test_four_band_model_writes_four_bands_with_georeferencing_and_masks(naip_crop, tmp_path):
    model = tiny_file(tmp_path / "m4.safetensors", bands=4, rgb_bands=(1, 2, 3))
    out = tmp_path / "o.tif"
    with warnings.catch_warnings():
        warnings.simplefilter("error", BandSelectionWarning)  # every band is the model's: nothing is dropped
        upscale_file(naip_crop, out, model, **FAST)
    with rasterio.open(naip_crop) as s:
        window = Window(0, 0, s.width, s.height)
    check_against_input(naip_crop, out, window, (1, 2, 3, 4), with_values=False)
    with rasterio.open(out) as o:
        assert o.count == 4 and o.descriptions == ("red", "green", "blue", "nir")
        assert "RSISR_OTHER_BANDS" not in o.tags()


def test_bands_choose_and_order_the_model_bands_for_files_and_arrays(naip_crop, tmp_path):
    """--bands 4,3,2,1 feeds the model that order and writes it; model.upscale(bands=...) of the
    same pixels, as (4, H, W) and (H, W, 4), gives the same values."""
    path = tiny_file(tmp_path / "m4.safetensors", bands=4)
    out = tmp_path / "o.tif"
    upscale_file(naip_crop, out, path, bands="4,3,2,1", **FAST)
    with rasterio.open(out) as o, rasterio.open(naip_crop) as s:
        assert o.tags()["RSISR_BANDS"] == "4,3,2,1" and o.descriptions == ("nir", "blue", "green", "red")
        written, raw = o.read(), s.read()
    model = rsisr.load_model(path)
    opts = dict(seed=3, tile=48, overlap=16, precision="fp32")
    chw = model.upscale(np.ma.MaskedArray(raw, mask=raw == 0), bands=[4, 3, 2, 1], **opts)
    valid = ~np.ma.getmaskarray(chw)
    assert chw.shape == (4, 160, 192) and chw.dtype == np.uint8
    # the same values, but for valid pixels the model made 0 (the raster's nodata), which the file moves to 1
    diff = chw.data[valid].astype(int) - written[valid]
    assert set(np.unique(diff)) <= {0, -1} and (written[valid][diff == -1] == 1).all()
    plain = model.upscale(raw, bands=[4, 3, 2, 1], **opts)
    hwc = model.upscale(raw.transpose(1, 2, 0), bands="4,3,2,1", **opts)
    assert hwc.shape == (160, 192, 4) and np.array_equal(hwc.transpose(2, 0, 1), plain)


@pytest.mark.parametrize("name, window, hole", [
    (STARS, Window(40, 60, 48, 40), None),
    (NAIP, Window(300, 200, 48, 40), (5, 20, 9, 14)),
])
def test_other_bands_bicubic_keeps_every_band_and_its_description(name, window, hole, geotiff_dir, tiny_model_file,
                                                                  tmp_path):
    """An RGB model on the 6-band Landsat 7 and the 4-band NAIP raster: every input band comes back
    in the input's order with its description; bands 1-3 are the model's (as with drop), the others
    the bicubic x4 of the raster values; masks as the input's x4; the bicubic bands do not depend on
    the tiling."""
    with rasterio.open(geotiff_dir / name) as s:
        count = s.count
    names = tuple(f"band {b} of {count}" for b in range(1, count + 1))
    src = crop_of(geotiff_dir, name, tmp_path / "in.tif", window, hole, names)
    both, drop, other = tmp_path / "both.tif", tmp_path / "drop.tif", tmp_path / "tiled.tif"
    upscale_file(src, both, tiny_model_file, other_bands="bicubic", **FAST)
    upscale_file(src, drop, tiny_model_file, other_bands="drop", **FAST)
    upscale_file(src, other, tiny_model_file, other_bands="bicubic", **{**FAST, "tile": 32, "overlap": 8})
    with rasterio.open(src) as s, rasterio.open(both) as o, rasterio.open(drop) as d, rasterio.open(other) as t:
        assert o.count == count and o.descriptions == names and d.count == 3
        assert o.colorinterp == s.colorinterp and o.tags()["RSISR_OTHER_BANDS"] == "bicubic"
        assert np.array_equal(o.read([1, 2, 3]), d.read())
        assert np.array_equal(o.read(list(range(4, count + 1))), t.read(list(range(4, count + 1))))
        assert np.array_equal(o.dataset_mask(), up4(s.dataset_mask()))
        others = o.read(list(range(4, count + 1)))
        expected = bicubic_x4(s.read(list(range(4, count + 1))), o.dtypes[0])
        if hole is None:
            assert np.array_equal(others, expected)
        else:  # away from the hole (whose nodata the fill keeps out) exactly bicubic; nodata in it
            for k in range(4, count + 1):
                assert np.array_equal(o.read_masks(k), up4(s.read_masks(k)))
            r, c, h, w = hole
            near = np.zeros(s.shape, bool)
            near[max(0, r - 3): r + h + 3, max(0, c - 3): c + w + 3] = True
            assert np.array_equal(others[:, ~up4(near)], expected[:, ~up4(near)])
            assert (others[:, up4(s.dataset_mask() == 0)] == 0).all()


def test_dropped_bands_are_named_unless_drop_is_asked_for(naip_crop, tiny_model_file, tmp_path):
    with pytest.warns(BandSelectionWarning, match=r"has 4 bands; using bands 1,2,3 .*band 4 is not written"):
        upscale_file(naip_crop, tmp_path / "a.tif", tiny_model_file, **FAST)
    with pytest.warns(BandSelectionWarning, match=r"naip.tif: bands 1,4 are not written"):
        upscale_file(naip_crop, tmp_path / "b.tif", tiny_model_file, bands="3,2,2", **FAST)
    with warnings.catch_warnings():
        warnings.simplefilter("error", BandSelectionWarning)
        upscale_file(naip_crop, tmp_path / "c.tif", tiny_model_file, other_bands="drop", **FAST)
    with rasterio.open(tmp_path / "a.tif") as a, rasterio.open(tmp_path / "c.tif") as c:
        assert a.count == c.count == 3 and np.array_equal(a.read(), c.read())


def test_refusals_are_one_line_and_write_nothing(naip_crop, geotiff_dir, tiny_model_file, tmp_path):
    m4 = tiny_file(tmp_path / "m4.safetensors", bands=4)
    rgb = geotiff_dir / "usgs_hro_colorado_rgb_u8_26913_0.15m.tif"
    out = tmp_path / "out"
    out.mkdir()
    cases = [
        (["upscale", rgb, "-o", out / "a.tif", "--model", m4], ["has 3 bands; this model takes 4"]),
        (["upscale", naip_crop, "-o", out / "b.tif", "--model", m4, "--bands", "3,2,1"],
         ["--bands gives 3 bands (3,2,1) for a model of 4 bands"]),
        (["upscale", naip_crop, "-o", out / "c.tif", "--model", m4, "--bands", "1,2,3,9"], ["band 9 does not exist"]),
        (["upscale", naip_crop, "-o", out / "d.tif", "--model", tiny_model_file, "--bands", "1,1,2",
          "--other-bands", "bicubic"], ["repeats one"]),
        (["upscale", naip_crop, "-o", out / "e.tif", "--model", tiny_model_file, "--other-bands", "all"],
         ["Invalid value for '--other-bands'"]),
    ]
    for args, fragments in cases:
        one_line_error(rsisr_cli(args), *fragments)
    assert list(out.iterdir()) == []
    model = rsisr.load_model(m4)
    with pytest.raises(InputError, match="the image has 3 bands; this model takes 4"):
        model.upscale(np.zeros((3, 16, 16), np.uint8))
    with pytest.raises(InputError, match="--bands gives 2 bands"):
        model.upscale(np.zeros((16, 16, 5), np.uint8), bands=[1, 2])
    with pytest.raises(InputError, match="invalid --other-bands"):
        model.upscale(np.zeros((16, 16, 5), np.uint8), other_bands="keep")


def test_stored_scaling_replaces_scale_auto(make_geotiff, tmp_path):
    """A 10-band uint16 model with reflectance scaling 0,10000: the output is in raster units with
    that scaling (not a per-scene stretch), like an explicit --scale 0,10000; arrays alike."""
    rng = np.random.default_rng(0)
    data = rng.integers(200, 4000, (10, 32, 40)).astype(np.uint16)
    data[2, 10, 10] = 15000  # above the stored range: carried over in raster units
    src = make_geotiff(width=40, height=32, count=10, dtype="uint16", data=data)
    path = tiny_file(tmp_path / "m10.safetensors", bands=10, scaling="0,10000", rgb_bands=(3, 2, 1))
    upscale_file(src, tmp_path / "a.tif", path, **FAST)
    upscale_file(src, tmp_path / "b.tif", path, scale="0,10000", **FAST)
    upscale_file(src, tmp_path / "c.tif", path, scale="none", **FAST)
    with rasterio.open(tmp_path / "a.tif") as a, rasterio.open(tmp_path / "b.tif") as b, \
            rasterio.open(tmp_path / "c.tif") as c:
        tag = json.loads(a.tags()["RSISR_SCALING"])
        assert tag == {"mode": "model", "lo": [0.0] * 10, "hi": [10000.0] * 10}
        assert a.count == 10 and a.dtypes[0] == "uint16"
        out = a.read()
        assert np.array_equal(out, b.read()) and not np.array_equal(out, c.read())
    assert out[2, 38:44, 38:44].max() > 10000  # the bright pixel keeps its magnitude
    assert np.array_equal(rsisr.load_model(path).upscale(data, seed=3, tile=48, overlap=16, precision="fp32"), out)


def test_model_config_bands_scaling_and_rgb_bands():
    cfg = get_preset("tiny").replace({"bands": 4, "scaling": "0,255,0,255,0,255,0,3000"})
    assert cfg.band_scaling().hi == (255.0, 255.0, 255.0, 3000.0) and cfg.rgb is None
    assert ModelConfig.from_json(cfg.to_json()) == cfg
    old = json.loads(get_preset("small").to_json())
    for key in ("bands", "scaling", "rgb_bands"):  # a file written before these fields existed
        del old[key]
    assert ModelConfig.from_dict(old) == get_preset("small") and get_preset("small").rgb == (1, 2, 3)
    for overrides, match in [({"bands": 0}, "bands must be a positive"), ({"scaling": "auto"}, "fixed ranges"),
                             ({"bands": 4, "scaling": "0,1,0,1"}, "2 band ranges for a model of 4"),
                             ({"scaling": "0,x"}, "invalid model scaling"),
                             ({"bands": 4, "rgb_bands": (3, 2, 5)}, "rgb_bands must be three")]:
        with pytest.raises(ConfigError, match=match):
            get_preset("tiny").replace(overrides)


def test_info_shows_bands_and_scaling(tmp_path):
    path = tiny_file(tmp_path / "m10.safetensors", bands=10, scaling="0,10000", rgb_bands=(3, 2, 1))
    result = rsisr_cli(["info", "--model", path])
    assert result.exit_code == 0, result.output
    assert "bands:  10 (red, green, blue: 3,2,1)" in result.output and "scaling: 0,10000" in result.output
    info = json.loads(rsisr_cli(["info", "--model", path, "--json"]).output)
    assert info["config"]["bands"] == 10 and info["config"]["scaling"] == "0,10000"
    model = rsisr.load_model(path)
    assert model.decoder.head.in_channels == 10 and model.decoder.tail[-1].out_channels == 10
    assert model.condnet.conv_in.in_channels == 10
