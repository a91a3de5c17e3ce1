"""Shared fixtures and helpers: the real data in ../shared, a tiny model, synthetic GeoTIFFs and
training images, a trained tiny autoencoder, one torch thread, one-line CLI errors.

Helpers that are not fixtures are imported by the test modules: ``from conftest import ...``.
"""

from __future__ import annotations

import contextlib
import csv
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
SHARED_DATA = SHARED / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data, or a skip where the folder is absent (CI always has it)."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data folder {SHARED_DATA} is absent")
    return SHARED_DATA


@pytest.fixture(scope="session")
def geotiff_dir(shared_data: Path) -> Path:
    return shared_data / "geotiff"


@pytest.fixture
def tiny_model():
    import torch

    import rsisr

    torch.manual_seed(0)
    return rsisr.build_model("tiny").eval()


@pytest.fixture
def tiny_model_file(tmp_path, tiny_model):
    import rsisr

    path = tmp_path / "tiny.safetensors"
    rsisr.save_model(tiny_model, path)
    return path


@pytest.fixture
def make_geotiff(tmp_path):
    """Factory: write a synthetic GeoTIFF and return its path."""
    import rasterio
    from rasterio.transform import from_origin

    counter = {"n": 0}

    def make(
        width: int = 64, height: int = 48, count: int = 3, dtype: str = "uint8", crs: str | None = "EPSG:32633",
        transform=None, nodata=None, data: np.ndarray | None = None, name: str | None = None, **profile,
    ) -> Path:
        counter["n"] += 1
        path = tmp_path / (name or f"synthetic_{counter['n']}.tif")
        if data is None:
            rng = np.random.default_rng(counter["n"])
            info = np.iinfo(dtype) if np.dtype(dtype).kind in "ui" else None
            hi = min(info.max, 255) if info is not None else 1.0
            yy, xx = np.mgrid[0:height, 0:width]
            base = (np.sin(xx / 5.0) + np.cos(yy / 7.0) + 2) / 4 * hi
            data = np.stack([base * (0.5 + 0.5 * b / max(count, 1)) for b in range(count)])
            data = (data + rng.normal(0, hi * 0.02, data.shape)).clip(0, hi).astype(dtype)
        meta = dict(driver="GTiff", width=width, height=height, count=count, dtype=dtype, crs=crs,
                    transform=transform or from_origin(500000.0, 5000000.0, 10.0, 10.0), nodata=nodata)
        meta.update(profile)
        with rasterio.open(path, "w", **meta) as dst:
            dst.write(data)
        return path

    return make


SHARED_TOOL = SHARED / "tools" / "metric-weights"


@pytest.fixture(scope="session")
def metric_weights(tmp_path_factory) -> Path:
    """The folder written by ../shared/tools/metric-weights (once per test session)."""
    if not SHARED_TOOL.is_file():
        pytest.skip(f"{SHARED_TOOL} is absent (the ../shared folder is needed for the metric weights)")
    folder = tmp_path_factory.getbasetemp() / "metric-weights"
    if not (folder / "weights.json").is_file():
        subprocess.run([str(SHARED_TOOL), str(folder)], check=True, capture_output=True,
                       env={**os.environ, "PYTHON": sys.executable}, timeout=600)
    return folder


@contextlib.contextmanager
def torch_threads(n: int):
    """``n`` torch threads while the block runs (float reductions, so the last bits, depend on it)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@pytest.fixture
def one_thread():
    """One torch thread: faster for small tensors, and far faster on a shared, busy CPU."""
    with torch_threads(1):
        yield


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def dask_processes(workers: int):
    """A ``dask scheduler`` and ``dask worker --nworkers WORKERS --nthreads 1``, each in its own
    process as on a real cluster; yields the scheduler's address once the workers are up."""
    import shutil

    dask = shutil.which("dask", path=str(Path(sys.executable).parent))
    assert dask, "the dask CLI comes with dask[distributed]"
    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    quiet = dict(stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    procs = [subprocess.Popen([dask, "scheduler", "--host", "127.0.0.1", "--port", str(port),
                               "--dashboard-address", ":0"], **quiet)]
    try:
        procs.append(subprocess.Popen([dask, "worker", address, "--nworkers", str(workers), "--nthreads", "1",
                                       "--dashboard-address", ":0"], **quiet))
        from distributed import Client

        with Client(address, timeout="30s") as client:
            client.wait_for_workers(workers, timeout=90)
        yield address
    finally:
        for p in reversed(procs):
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()


def one_line_error(result, *fragments: str) -> str:
    """The CLI failed the way every user error must: exit status 1 (``result``: click's Result) and
    one line ``Error: ...`` holding every fragment (``result``: the Result or the text printed).
    Returns the line."""
    output = result if isinstance(result, str) else result.output
    if not isinstance(result, str):
        assert result.exit_code == 1, output
    lines = [line for line in output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), output
    assert "Traceback" not in output
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def rsisr_cli(args: list):
    """``rsisr ARGS`` through click's CliRunner; returns its Result."""
    from click.testing import CliRunner

    from rsisr_cli.main import cli

    return CliRunner().invoke(cli, [str(a) for a in args])


@pytest.fixture
def no_default_model(tmp_path, monkeypatch):
    """A stripped install: no bundled default model."""
    import rsisr.api

    monkeypatch.setattr(rsisr.api, "DEFAULT_MODEL_PATH", tmp_path / "none.safetensors")


# ----------------------------------------------------------------------------------------------
# Training

#: Fast settings for every training run: tiny model, small crops, a small discriminator.
TRAIN_FAST = ["--preset", "tiny", "--batch-size", "2", "--set", "data.crop=32", "--set", "train.log_every=1",
              "--set", "ae.disc_channels=8", "--set", "ae.disc_start=1", "-q"]


def metrics_rows(run: Path) -> list[dict[str, str]]:
    """A training run's metrics.csv as rows of strings."""
    with open(run / "metrics.csv", newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="session")
def image_dir(tmp_path_factory) -> Path:
    """Six synthetic 96x96 RGB training images: four PNG, two JPEG."""
    from PIL import Image

    folder = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:96, 0:96]
    for i in range(6):
        base = np.stack([np.sin(xx / (3 + i + c)) + np.cos(yy / (4 + c)) for c in range(3)], axis=-1)
        img = ((base + 2) / 4 * 200 + rng.normal(0, 8, base.shape)).clip(0, 255).astype(np.uint8)
        Image.fromarray(img).save(folder / (f"img{i}.png" if i < 4 else f"img{i}.jpg"))
    return folder


@pytest.fixture(scope="session")
def ae_run(image_dir, tmp_path_factory) -> Path:
    """A three-step stage-1 run (``rsisr train ae``) on ``image_dir``, validated at its end."""
    out = tmp_path_factory.mktemp("runs") / "ae"
    with torch_threads(1):
        result = rsisr_cli(["train", "ae", "--data", image_dir, "--out", out, "--max-steps", "3", *TRAIN_FAST,
                            "--set", "data.val_fraction=0.3", "--set", "train.val_every=3"])
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture
def offline(tmp_path, monkeypatch):
    """No local metric weights and no network: an empty hub cache and a download that fails."""
    import urllib.error

    import torch

    from rsisr.evaluation import perceptual

    def no_network(url, *args, **kwargs):
        raise urllib.error.URLError("no network in this test")

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty-torch-home"))
    monkeypatch.delenv(perceptual.ENV_VAR, raising=False)
    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
