import json

from click.testing import CliRunner

from conftest import one_line_error
from rsisr import __version__
from rsisr_cli.main import cli


def test_help_and_version():
    runner = CliRunner()
    result = runner.invoke(cli, ["--help"])
    assert result.exit_code == 0 and "info" in result.output
    result = runner.invoke(cli, ["--version"])
    assert result.exit_code == 0 and __version__ in result.output


def test_info_json_paper():
    result = CliRunner().invoke(cli, ["info", "--preset", "paper", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    params = data["params"]
    assert data["inference_params"] == params["decoder"] + params["condnet"] + params["unet"]
    assert set(params) >= {"encoder", "decoder", "condnet", "unet"}
    assert data["config"]["unet"]["ch"] == 64


def test_info_text_and_model_file(tiny_model_file):
    result = CliRunner().invoke(cli, ["info", "--model", str(tiny_model_file)])
    assert result.exit_code == 0, result.output
    assert "preset: tiny" in result.output and "sha256" in result.output


def test_errors_are_one_line_exit_1(tmp_path):
    runner = CliRunner()
    for args in (["info", "--preset", "huge"], ["info", "--model", str(tmp_path / "x.safetensors")],
                 ["info", "--nope"], ["bogus"]):
        one_line_error(runner.invoke(cli, args))
