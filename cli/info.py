"""``rsisr info``."""

from __future__ import annotations

import json

import click


@click.command()
@click.option("--preset", default=None, help="Preset name: paper, small or tiny.")
@click.option("--model", "model_path", type=click.Path(dir_okay=False), default=None, help="A model file to describe.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def info(preset: str | None, model_path: str | None, as_json: bool) -> None:
    """Show a model's configuration and the parameter count of every component.

    Without options: the bundled default model if one ships, else the small preset.
    """
    from rsisr.api import default_model_path, describe
    from rsisr.errors import ConfigError

    if preset and model_path:
        raise ConfigError("give --preset or --model, not both")
    if not preset and not model_path:
        default = default_model_path()
        model_path = str(default) if default is not None else None
        preset = None if default is not None else "small"
    data = describe(preset, model_path)
    if as_json:
        click.echo(json.dumps(data, indent=2))
        return
    if "model" in data:
        click.echo(f"model:  {data['model']['path']}  (sha256 {data['model']['sha256'][:16]}...)")
    click.echo(f"preset: {data['preset']}")
    cfg = data["config"]
    rgb = ",".join(map(str, cfg["rgb_bands"])) or ("1,2,3" if cfg["bands"] == 3 else "none named")
    click.echo(f"bands:  {cfg['bands']} (red, green, blue: {rgb})")
    click.echo("scaling: " + (f"{cfg['scaling']} (raster values MIN,MAX -> the model's 0..1, every scene)"
                              if cfg["scaling"] else "none stored (uint8 as is; other dtypes per scene: --scale)"))
    for section, values in data["config"].items():
        if isinstance(values, dict):
            click.echo(f"{section}: " + ", ".join(f"{k}={v}" for k, v in values.items()))
    click.echo("parameters:")
    for name, count in data["params"].items():
        click.echo(f"  {name:<24}{count:>14,}")
    click.echo(f"  {'inference (decoder + condnet + unet)':<24}{data['inference_params']:>14,}")
    default = data["default_model"]
    click.echo(f"default model: {default['path']} (sha256 {default['sha256']})" if default else
               "default model: none bundled (pass --model PATH)")
