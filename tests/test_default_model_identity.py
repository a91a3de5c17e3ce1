"""The shipped default model's outputs stay bit-identical.

``tests/data/default_model_outputs.json`` holds the sha256 of the default model's outputs on
small crops of real rasters (uint8 RGB, 4-band uint8 with nodata and bands dropped, uint16 with
``--scale auto``, one band replicated) through ``rsisr upscale`` and ``model.upscale``, at fp32
and one torch thread. They were first written by the code before multispectral models (issue 14)
existed (which left them unchanged), and rewritten with the default model of issue 19, with
``python tests/test_default_model_identity.py --write``; any change that moves one bit of those
outputs fails here (a new default model rewrites them). (The hashes are of this project's CPU build of torch; a
different CPU or torch build may round differently: regenerate them from the older commit there.)
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import numpy as np
import pytest

HERE = Path(__file__).resolve().parent
REFERENCE = HERE / "data" / "default_model_outputs.json"
GEOTIFF = HERE.parent.parent / "shared" / "data" / "geotiff"
OPTIONS = ["--precision", "fp32", "--tile", "48", "--overlap", "16", "--seed", "0", "-q"]

#: name: (raster, (col, row, width, height) LR window, extra CLI options, zeroed block or None)
CASES = {
    "usgs_rgb_u8": ("usgs_hro_colorado_rgb_u8_26913_0.15m.tif", (100, 40, 40, 32), [], None),
    "naip_rgbn_u8_nodata": ("naip_m_4709963_se_14_2020_rgbn_u8_26914_5m.tif", (300, 200, 40, 32), [], (4, 14, 6, 9)),
    "landsat_u16_auto": ("landsat8_LC08_224078_crop1024_3band_u16_32621_30m.tif", (500, 600, 40, 32), [], None),
    "sentinel2_1band_u16": ("sentinel2_T33UUU_20160608_crop1024_1band_u16_32633_10m.tif", (400, 300, 40, 32),
                            ["--scale", "auto"], None),
}


def _digest(*arrays: np.ndarray) -> str:
    h = hashlib.sha256()
    for a in arrays:
        h.update(str((a.dtype.str, a.shape)).encode())
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


def write_crop(name: str, folder: Path) -> Path:
    """The LR input of case ``name``: a window of a real raster, written as a plain GeoTIFF."""
    import rasterio
    from rasterio.windows import Window

    raster, (col, row, width, height), _, zero = CASES[name]
    window = Window(col, row, width, height)
    with rasterio.open(GEOTIFF / raster) as src:
        data = src.read(window=window)
        profile = {k: v for k, v in src.profile.items() if k not in ("blockxsize", "blockysize", "tiled")}
        transform = src.window_transform(window)
    if zero is not None:
        r, c, h, w = zero
        data[:, r:r + h, c:c + w] = 0
    profile.update(width=width, height=height, transform=transform, compress="deflate")
    path = folder / f"{name}.tif"
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
    return path


def outputs(folder: Path) -> dict[str, str]:
    """sha256 of every case's output (pixels and masks), with the default model."""
    import rasterio
    import torch
    from click.testing import CliRunner

    import rsisr
    from rsisr_cli.main import cli

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        digests = {}
        for name, (_, _, extra, _) in CASES.items():
            src, out = write_crop(name, folder), folder / f"{name}_x4.tif"
            result = CliRunner().invoke(cli, ["upscale", str(src), "-o", str(out), *OPTIONS, *extra])
            assert result.exit_code == 0, result.output
            with rasterio.open(out) as o:
                digests[name] = _digest(o.read(), o.dataset_mask(), *(o.read_masks(k) for k in o.indexes))
        with rasterio.open(folder / "usgs_rgb_u8.tif") as s:
            image = s.read().transpose(1, 2, 0).copy()
        sr = rsisr.load_model().upscale(image, seed=0, precision="fp32", tile=48, overlap=16)
        digests["array_hwc_u8"] = _digest(sr)
    finally:
        torch.set_num_threads(before)
    return digests


def cpu_kernels() -> str:
    """The CPU instruction set torch's kernels were chosen for (e.g. AVX512): fp32 rounding
    differs between them, so hashes only compare on the kind of CPU that wrote them."""
    import torch

    return torch.backends.cpu.get_cpu_capability()


@pytest.mark.skipif(not GEOTIFF.is_dir(), reason=f"real data folder {GEOTIFF} is absent")
def test_default_model_outputs_are_bit_identical(tmp_path):
    reference = json.loads(REFERENCE.read_text())
    if reference["cpu_kernels"] != cpu_kernels():
        pytest.skip(f"the hashes were written on a {reference['cpu_kernels']} CPU, this one runs "
                    f"{cpu_kernels()} kernels (regenerate them with --write from the commit they name)")
    got = outputs(tmp_path)
    assert got == reference["sha256"]


if __name__ == "__main__":  # python tests/test_default_model_identity.py --write
    import tempfile

    if sys.argv[1:] != ["--write"]:
        sys.exit("usage: python tests/test_default_model_identity.py --write")
    with tempfile.TemporaryDirectory() as tmp:
        digests = outputs(Path(tmp))
    REFERENCE.parent.mkdir(exist_ok=True)
    REFERENCE.write_text(json.dumps({"cpu_kernels": cpu_kernels(), "sha256": digests}, indent=1) + "\n")
    print(json.dumps(digests, indent=1))
