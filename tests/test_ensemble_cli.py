"""``--ensemble N`` and ``--uncertainty`` through ``rsisr upscale``, ``upscale_file``, ``rsisr
batch`` and ``rsisr evaluate`` (issue 15): the uncertainty raster's grid, mask, values and tags,
one atomic write for both files, refusals as one line with nothing written."""

from __future__ import annotations

import json

import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.windows import Window
from rasterio.windows import bounds as window_bounds

import rsisr
import rsisr.upscale.output
from conftest import one_line_error, rsisr_cli
from rsisr.array_io import upscale_image
from rsisr.errors import OutputError
from rsisr.noise import sample_seeds
from rsisr.standins import NoiseX4
from rsisr.upscale import upscale_file
from test_upscale_output import assert_valid_cog
from upscale_helpers import leftovers

pytestmark = pytest.mark.usefixtures("one_thread")


def upscale(*args):
    return rsisr_cli(["upscale", *args, "--device", "cpu", "-q"])


def test_ensemble_1_is_the_plain_run_byte_for_byte(make_geotiff, tiny_model_file, tmp_path):
    src = make_geotiff(width=40, height=36, nodata=0)
    for name, extra in (("plain.tif", []), ("one.tif", ["--ensemble", "1"])):
        result = upscale(src, "-o", tmp_path / name, "--model", tiny_model_file, "--tile", "32", "--overlap", "8",
                         "--seed", "4", *extra)
        assert result.exit_code == 0, result.output
    assert (tmp_path / "plain.tif").read_bytes() == (tmp_path / "one.tif").read_bytes()
    with rasterio.open(tmp_path / "one.tif") as o:
        assert "RSISR_ENSEMBLE" not in o.tags()


def test_ensemble_writes_the_mean_and_the_uncertainty_raster(make_geotiff, tiny_model_file, tmp_path):
    src = make_geotiff(width=40, height=36)
    out, std = tmp_path / "mean.tif", tmp_path / "std.tif"
    result = upscale(src, "-o", out, "--model", tiny_model_file, "--tile", "32", "--overlap", "8", "--seed", "4",
                     "--ensemble", "3", "--uncertainty", std)
    assert result.exit_code == 0, result.output
    seeds = ",".join(map(str, sample_seeds(4, 3)))
    with rasterio.open(src) as s, rasterio.open(out) as o, rasterio.open(std) as u:
        assert (o.tags()["RSISR_ENSEMBLE"], o.tags()["RSISR_ENSEMBLE_SEEDS"]) == ("3", seeds)
        assert (u.tags()["RSISR_ENSEMBLE"], u.tags()["RSISR_ENSEMBLE_SEEDS"]) == ("3", seeds)
        assert u.tags()["RSISR_OUTPUT"] == "mean.tif" and u.tags()["RSISR_UNCERTAINTY"].startswith("std")
        assert u.dtypes == ("float32",) * 3 and u.descriptions == ("std of band 1", "std of band 2", "std of band 3")
        values = u.read()
        assert np.isfinite(values).all() and values.min() >= 0 and (values > 0).mean() > 0.9
        # the same pixels through the in-memory API: the same mean and std
        image = s.read()
        mean_a, std_a = upscale_image(rsisr.load_model(tiny_model_file), image, seed=4, tile=32, overlap=8,
                                      device="cpu", ensemble=3, uncertainty=True)
        assert np.array_equal(o.read(), mean_a)
        np.testing.assert_allclose(values, std_a, rtol=1e-5, atol=1e-4)
    # the same seed again: the same files' pixels
    again = upscale(src, "-o", tmp_path / "m2.tif", "--model", tiny_model_file, "--tile", "32", "--overlap", "8",
                    "--seed", "4", "--ensemble", "3", "--uncertainty", tmp_path / "s2.tif")
    assert again.exit_code == 0, again.output
    with rasterio.open(out) as a, rasterio.open(tmp_path / "m2.tif") as b:
        assert np.array_equal(a.read(), b.read())
    with rasterio.open(std) as a, rasterio.open(tmp_path / "s2.tif") as b:
        assert np.array_equal(a.read(), b.read())

CASES = {  # name: (file, LR window (col, row, width, height), bands)
    "nodata": ("rasterio_RGB.byte_u8_32618_300m.tif", (0, 300, 200, 120), None),  # 64 % valid
    "internal mask": ("rasterio_cogeo_rgb_u8_3857_0.6m.tif", (0, 0, 80, 64), None),  # all valid
    "nodata 255": ("neon_SJER_image_477_rgb_u8_32611_0.1m.tif", (0, 0, 64, 48), None),
    "uint16": ("landsat8_LC08_224078_crop1024_3band_u16_32621_30m.tif", (100, 100, 64, 48), None),
    "one band": ("sentinel2_T33UUU_20160608_crop1024_1band_u16_32633_10m.tif", (200, 200, 48, 40), None),
    "four bands": ("naip_m_4709963_se_14_2020_rgbn_u8_26914_5m.tif", (0, 0, 64, 48), "4,3,2"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_uncertainty_raster_has_the_outputs_grid_and_mask(case, geotiff_dir, tmp_path):
    name, (col, row, w, h), bands = CASES[case]
    path = geotiff_dir / name
    with rasterio.open(path) as s:
        b = window_bounds(Window(col, row, w, h), s.transform)
    out, std = tmp_path / "out.tif", tmp_path / "std.tif"
    upscale_file(path, out, NoiseX4(), bounds=b, bands=bands, device="cpu", tile=32, overlap=8, ensemble=3,
                 uncertainty=std)
    check_uncertainty_raster(out, std)


class NoiseX4Bands4(NoiseX4):
    """The noise stand-in as a four-band model (RGB + NIR)."""

    bands = 4


def test_uncertainty_raster_of_multispectral_outputs(geotiff_dir, tmp_path):
    """One band per output band: a four-band model's four, and with --other-bands bicubic the
    bands written bicubic, whose spread is 0 (they do not depend on the model)."""
    path = geotiff_dir / "naip_m_4709963_se_14_2020_rgbn_u8_26914_5m.tif"
    with rasterio.open(path) as s:
        b = window_bounds(Window(0, 0, 48, 40), s.transform)
    upscale_file(path, tmp_path / "rgbn.tif", NoiseX4Bands4(), bounds=b, device="cpu", tile=32, overlap=8,
                 ensemble=3, uncertainty=tmp_path / "rgbn_std.tif")
    check_uncertainty_raster(tmp_path / "rgbn.tif", tmp_path / "rgbn_std.tif")
    with rasterio.open(tmp_path / "rgbn_std.tif") as u:
        assert u.count == 4 and all(np.nanmean(band) > 0 for band in u.read())  # the NIR band too
    upscale_file(path, tmp_path / "bic.tif", NoiseX4(), bounds=b, bands="4,3,2", other_bands="bicubic", device="cpu",
                 tile=32, overlap=8, ensemble=3, uncertainty=tmp_path / "bic_std.tif")
    with rasterio.open(tmp_path / "bic.tif") as o, rasterio.open(tmp_path / "bic_std.tif") as u:
        assert o.count == u.count == 4
        assert u.descriptions[0].startswith("std of") and np.array_equal(u.dataset_mask(), o.dataset_mask())
        values = u.read()
        assert np.all(values[0] == 0)  # band 1 is written bicubic
        assert all(values[k].mean() > 0 for k in (1, 2, 3))  # bands 2-4 are the model's


def test_uncertainty_raster_beside_alpha_internal_mask_and_float_nan(make_geotiff, tmp_path):
    from rsisr.gdal_env import gdal_env

    rng = np.random.default_rng(0)
    src = make_geotiff(width=30, height=24)
    with gdal_env(), rasterio.open(src, "r+") as ds:
        mask = np.full((24, 30), 255, np.uint8)
        mask[4:10, 6:18] = 0
        ds.write_mask(mask)
    upscale_file(src, tmp_path / "m.tif", NoiseX4(), device="cpu", tile=16, overlap=4, ensemble=2,
                 uncertainty=tmp_path / "m_std.tif")
    with rasterio.open(tmp_path / "m_std.tif") as u:
        assert u.nodata is None and (u.dataset_mask() == 0).sum() == 4 * 4 * 6 * 12
    check_uncertainty_raster(tmp_path / "m.tif", tmp_path / "m_std.tif")
    data = rng.integers(0, 255, (4, 24, 30)).astype(np.uint8)
    data[3] = 255
    data[3, 5:12, 8:20] = 0
    src = make_geotiff(width=30, height=24, count=4, data=data, photometric="RGB", alpha="YES")
    upscale_file(src, tmp_path / "a.tif", NoiseX4(), device="cpu", tile=16, overlap=4, ensemble=2,
                 uncertainty=tmp_path / "a_std.tif")
    with rasterio.open(tmp_path / "a.tif") as o:
        assert o.count == 4
    check_uncertainty_raster(tmp_path / "a.tif", tmp_path / "a_std.tif")
    values = rng.random((3, 20, 24)).astype(np.float32)
    values[:, 3:9, 4:10] = np.nan
    src = make_geotiff(width=24, height=20, dtype="float32", data=values)
    upscale_file(src, tmp_path / "f.tif", NoiseX4(), device="cpu", tile=16, overlap=4, ensemble=2,
                 uncertainty=tmp_path / "f_std.tif")
    with rasterio.open(tmp_path / "f.tif") as o, rasterio.open(tmp_path / "f_std.tif") as u:
        assert np.array_equal(np.isnan(o.read()), np.isnan(u.read()))
        assert np.isnan(u.read()).any()


def check_uncertainty_raster(out, std):
    """What a GIS user compares: grid, CRS, bands, masks, tags; std NaN exactly where the output is invalid."""
    with rasterio.open(out) as o, rasterio.open(std) as u:
        assert (u.crs, u.transform, u.width, u.height, u.bounds) == (o.crs, o.transform, o.width, o.height, o.bounds)
        bands = len(o.tags()["RSISR_BANDS"].split(","))
        assert u.count == bands and set(u.dtypes) == {"float32"}
        assert np.array_equal(u.dataset_mask(), o.dataset_mask())
        assert o.tags()["RSISR_ENSEMBLE_SEEDS"] == u.tags()["RSISR_ENSEMBLE_SEEDS"]
        values = u.read()
        if o.nodata is not None:
            assert np.isnan(u.nodata)
            for k in range(1, bands + 1):
                assert np.array_equal(u.read_masks(k), o.read_masks(k)), k
        for k in range(bands):  # NaN exactly where the output band is masked (nodata: band by band)
            band_valid = o.read_masks(k + 1) > 0
            assert np.array_equal(np.isnan(values[k]), ~band_valid), k
            assert values[k][band_valid].min() >= 0 and values[k][band_valid].mean() > 0  # NoiseX4's samples differ
        assert o.block_shapes[0] == u.block_shapes[0]  # each output block written once to both


def test_cog_applies_to_both(make_geotiff, tmp_path):
    src = make_geotiff(width=300, height=260, nodata=0)
    upscale_file(src, tmp_path / "out.tif", NoiseX4(), device="cpu", ensemble=2, uncertainty=tmp_path / "std.tif",
                 cog=True, co=["COMPRESS=LZW"])
    assert_valid_cog(tmp_path / "out.tif")
    assert_valid_cog(tmp_path / "std.tif")
    check_uncertainty_raster(tmp_path / "out.tif", tmp_path / "std.tif")
    assert leftovers(tmp_path) == []


def test_refusals_are_one_line_and_write_nothing(make_geotiff, tiny_model_file, tmp_path):
    src = make_geotiff(width=24, height=20)
    taken = tmp_path / "taken.tif"
    taken.write_bytes(b"keep")
    out = tmp_path / "out.tif"
    before = sorted(p.name for p in tmp_path.iterdir())
    base = [src, "-o", out, "--model", tiny_model_file]
    cases = [
        (["--ensemble", "0"], "'--ensemble': 0 is not in the range x>=1"),
        (["--ensemble", "-2"], "'--ensemble'"),
        (["--ensemble", "3", "--uncertainty", out], "is the output file; give it another name, e.g. out_std.tif"),
        (["--ensemble", "3", "--uncertainty", tmp_path / "." / "out.tif"], "is the output file"),
        (["--ensemble", "3", "--uncertainty", taken], "uncertainty raster"),
        (["--ensemble", "3", "--uncertainty", src], "is the input"),
        (["--ensemble", "3", "--uncertainty", tmp_path / "std.png"], "does not end in .tif"),
        (["--uncertainty", tmp_path / "std.tif"], "needs an ensemble"),
        (["--ensemble", "1", "--uncertainty", tmp_path / "std.tif"], "add --ensemble N with N of 2 or more"),
    ]
    for extra, match in cases:
        line = one_line_error(upscale(*base, *extra), match)
        assert "Traceback" not in line
        assert sorted(p.name for p in tmp_path.iterdir()) == before, extra
    assert "exists; pass --overwrite" in one_line_error(upscale(*base, "--ensemble", "2", "--uncertainty", taken))
    assert taken.read_bytes() == b"keep"
    with pytest.raises(Exception, match="--ensemble must be a whole number"):
        upscale_file(src, out, NoiseX4(), ensemble=0)
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    result = upscale(*base, "--ensemble", "2", "--uncertainty", taken, "--overwrite")
    assert result.exit_code == 0, result.output
    with rasterio.open(taken) as u:
        assert u.tags()["RSISR_ENSEMBLE"] == "2"


def test_a_failure_leaves_neither_file(make_geotiff, tmp_path, monkeypatch):
    """Both files are written in one pass and renamed at the end, the uncertainty raster first:
    a write error, or a failing rename of the output after the uncertainty raster's, leaves
    nothing behind."""
    from rsisr.upscale.uncertainty import SpreadWriter

    src = make_geotiff(width=40, height=30)
    out, std = tmp_path / "out.tif", tmp_path / "std.tif"

    def fail(*args, **kwargs):
        raise OutputError("writing uncertainty raster failed: No space left on device")

    with monkeypatch.context() as m:
        m.setattr(SpreadWriter, "write", fail)
        with pytest.raises(OutputError, match="No space left"):
            upscale_file(src, out, NoiseX4(), device="cpu", ensemble=2, uncertainty=std)
    assert not out.exists() and not std.exists() and leftovers(tmp_path) == []
    real_commit = rsisr.upscale.output.commit

    def commit(tmp, target, what="file"):
        if what == "output":
            raise OutputError(f"cannot write {what} {target}: No space left on device")
        return real_commit(tmp, target, what)

    monkeypatch.setattr(rsisr.upscale.output, "commit", commit)
    with pytest.raises(OutputError, match="cannot write output"):
        upscale_file(src, out, NoiseX4(), device="cpu", ensemble=2, uncertainty=std)
    assert not out.exists() and not std.exists() and leftovers(tmp_path) == []


def test_uncertainty_into_an_open_dataset_output(make_geotiff, tmp_path):
    src = make_geotiff(width=24, height=20)
    with rasterio.open(src) as s:
        profile = {**s.profile, "width": 96, "height": 80, "transform": s.transform @ Affine.scale(0.25)}
    with rasterio.open(tmp_path / "out.tif", "w", **profile) as dst:
        upscale_file(src, dst, NoiseX4(), device="cpu", ensemble=2, uncertainty=tmp_path / "std.tif")
    with rasterio.open(tmp_path / "std.tif") as u:
        assert (u.width, u.height) == (96, 80) and u.tags()["RSISR_OUTPUT"] == "out.tif"


# -- rsisr batch ----------------------------------------------------------------------------------

def test_batch_scene_with_an_ensemble_skips_and_redoes(make_geotiff, tiny_model_file, tmp_path):
    from rsisr.batch import upscale_scene

    src = make_geotiff(width=24, height=20)
    out, std = tmp_path / "out" / "a.tif", tmp_path / "std" / "a.tif"
    base = dict(tile=32, overlap=8, device="cpu")
    first = upscale_scene(src, out, tiny_model_file, ensemble=2, uncertainty=str(std), **base)
    assert first.status == "done", first.error
    assert std.is_file()
    assert upscale_scene(src, out, tiny_model_file, ensemble=2, uncertainty=str(std), **base).status == "skipped"
    redo = upscale_scene(src, out, tiny_model_file, ensemble=3, uncertainty=str(std), **base)
    assert redo.status == "done" and redo.reason == "the existing output was made with ensemble 2 (now 3)"
    std.unlink()
    redo = upscale_scene(src, out, tiny_model_file, ensemble=3, uncertainty=str(std), **base)
    assert redo.status == "done" and "uncertainty raster" in redo.reason and std.is_file()
    # an output made before ensembles existed (no tag) counts as one sample
    plain = upscale_scene(src, tmp_path / "p.tif", tiny_model_file, **base)
    assert plain.status == "done"
    assert upscale_scene(src, tmp_path / "p.tif", tiny_model_file, ensemble=1, **base).status == "skipped"


@pytest.mark.slow  # a dask LocalCluster: 20 s here; the scene function is tested above, the paths below
def test_batch_folder_writes_uncertainty_rasters_mirroring_the_outputs(tmp_path, make_geotiff, tiny_model_file):
    from rsisr.batch import upscale_folder

    src = tmp_path / "in"
    (src / "sub").mkdir(parents=True)
    make_geotiff(width=20, height=16, name="in/a.tif")
    make_geotiff(width=20, height=16, name="in/sub/b.tif")
    report = upscale_folder(src, tmp_path / "out", tiny_model_file, recursive=True, workers=1, threads_per_worker=1,
                            uncertainty=tmp_path / "std", ensemble=2, tile=32, overlap=8, device="cpu")
    assert report.counts["done"] == 2, report.to_dict()
    for rel in ("a.tif", "sub/b.tif"):
        check_uncertainty_raster(tmp_path / "out" / rel, tmp_path / "std" / rel)


def test_batch_uncertainty_paths_mirror_the_outputs(tmp_path):
    from rsisr.batch.jobs import uncertainty_paths

    jobs = [(tmp_path / "in" / "a.tif", tmp_path / "out" / "a.tif"),
            (tmp_path / "in" / "sub" / "b.tiff", tmp_path / "out" / "sub" / "b.tif")]
    assert uncertainty_paths(jobs, tmp_path / "in", tmp_path / "out", None, 4) is None
    assert uncertainty_paths(jobs, tmp_path / "in", tmp_path / "out", tmp_path / "std", 4) == [
        tmp_path / "std" / "a.tif", tmp_path / "std" / "sub" / "b.tif"]


def test_batch_refusals(tmp_path, make_geotiff, tiny_model_file):
    src = tmp_path / "in"
    src.mkdir()
    make_geotiff(width=20, height=16, name="in/a.tif")
    base = ["batch", src, "-o", tmp_path / "out", "--model", tiny_model_file]
    one_line_error(rsisr_cli([*base, "--uncertainty", tmp_path / "std"]), "needs an ensemble")
    one_line_error(rsisr_cli([*base, "--ensemble", "2", "--uncertainty", tmp_path / "out"]), "is the output folder")
    one_line_error(rsisr_cli([*base, "--ensemble", "2", "--uncertainty", src / "std"]), "inside the input folder")
    one_line_error(rsisr_cli([*base, "--ensemble", "0"]), "'--ensemble'")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in", "tiny.safetensors"]


# -- rsisr evaluate -------------------------------------------------------------------------------

@pytest.fixture
def hr_dir(shared_data, tmp_path):
    from PIL import Image

    folder = tmp_path / "hr"
    folder.mkdir()
    for name, box in (("HARV_001.png", (0, 0, 64, 64)), ("OSBS_001.png", (100, 60, 164, 124))):
        with Image.open(shared_data / "eval" / name) as img:
            img.crop(box).save(folder / name)
    return folder


def test_evaluate_scores_the_mean_and_the_calibration(hr_dir, tiny_model_file, tmp_path):
    import torch

    from rsisr.evaluation.evaluate import evaluate, model_runner, read_hr
    from rsisr.evaluation.metrics import psnr
    from rsisr.imageops import degrade, to_8bit, to_model_range

    figures = tmp_path / "fig"
    report = evaluate(hr_dir, tiny_model_file, metrics="psnr,ssim", device="cpu", seed=3, ensemble=3,
                      figures=figures, out=tmp_path / "r.json")
    assert json.loads((tmp_path / "r.json").read_text()) == report
    ens = report["ensemble"]
    assert ens["n"] == 3 and ens["seeds"] == sample_seeds(3, 3)
    cal = ens["calibration"]
    assert cal["n_values"] == 2 * 3 * 64 * 64  # every pixel value of both images (under 65,536 each)
    assert sum(r["count"] for r in cal["reliability"]) == cal["n_values"] and len(cal["reliability"]) == 10
    assert -1 <= cal["spearman"] <= 1
    stds = [r["std_mean"] for r in cal["reliability"]]
    assert stds == sorted(stds)
    assert (figures / "reliability.png").is_file()
    summary = (figures / "summary.md").read_text()
    assert "mean of 3 samples" in summary and "reliability.png" in summary
    # the scored mean is the mean of the three single-seed runs
    model = rsisr.load_model(tiny_model_file).eval()
    scores = []
    for path in sorted(hr_dir.iterdir()):
        hr = read_hr(path)
        lr = degrade(to_model_range(hr / 255.0))
        with torch.no_grad():
            runs = torch.stack([model_runner(model, 1, s, torch.device("cpu"))(lr) for s in sample_seeds(3, 3)])
        scores.append(psnr(to_8bit(runs.mean(0)), hr).item())
    assert abs(report["metrics"]["model"]["psnr"] - float(np.mean(scores))) < 0.05
    one_line_error(rsisr_cli(["evaluate", "--data", hr_dir, "--out", tmp_path / "x.json", "--ensemble", "0"]),
                   "'--ensemble'")


def test_spearman_matches_scipy():
    from scipy.stats import spearmanr

    from rsisr.evaluation.calibration import spearman

    rng = np.random.default_rng(0)
    a = rng.integers(0, 20, 5000).astype(float)  # many ties
    b = a + rng.normal(0, 5, 5000)
    assert abs(spearman(a, b) - spearmanr(a, b).statistic) < 1e-12
    assert spearman(np.ones(10), np.arange(10.0)) is None
