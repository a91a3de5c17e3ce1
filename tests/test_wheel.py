"""Build the wheel, install it into a fresh virtual environment and run ``rsisr --help``."""

import subprocess
import sys
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_wheel_installs_and_runs_help(tmp_path):
    subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(tmp_path / "dist"), str(ROOT)],
        check=True, capture_output=True,
    )
    wheel = next((tmp_path / "dist").glob("rsisr-*.whl"))
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    py = env_dir / "bin" / "python"
    # The wheel itself without its heavy dependencies; `rsisr --help` only needs click.
    subprocess.run([str(py), "-m", "pip", "install", "-q", "--no-deps", str(wheel), "click"], check=True)
    out = subprocess.run([str(env_dir / "bin" / "rsisr"), "--help"], check=True, capture_output=True, text=True)
    assert "info" in out.stdout
    listing = subprocess.run([str(py), "-c", "import rsisr_cli, rsisr; print(rsisr_cli.__file__)"],
                             check=True, capture_output=True, text=True)
    assert "site-packages" in listing.stdout
    # no bare top-level `cli` package in the wheel
    import zipfile

    names = zipfile.ZipFile(wheel).namelist()
    assert not any(n.startswith("cli/") for n in names)
    assert any(n.startswith("rsisr_cli/") for n in names)
    # every module of the source tree is in the wheel (a subpackage missing from pyproject's list is not)
    sources = {p.relative_to(ROOT).as_posix() for p in (ROOT / "rsisr").rglob("*.py")}
    assert not sources - set(names), sorted(sources - set(names))
