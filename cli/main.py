"""The ``rsisr`` command group.

Commands are registered by name and imported on first use, so ``rsisr --help`` answers without
loading torch. Every :class:`~rsisr.errors.RsisrError` (and every usage error) becomes one line
on stderr and exit status 1, never a traceback.
"""

from __future__ import annotations

import importlib
import sys

import click

from rsisr import __version__
from rsisr.errors import RsisrError

#: command name -> (module, attribute, one-line help shown by ``rsisr --help``)
COMMANDS = {
    "batch": ("rsisr_cli.batch", "batch", "Super-resolve folders of scenes with Dask, locally or on a cluster."),
    "info": ("rsisr_cli.info", "info", "Show a model's configuration and parameter counts."),
    "evaluate": ("rsisr_cli.evaluate", "evaluate", "Evaluate a model against bicubic: PSNR, SSIM, LPIPS, FID, runtime."),
    "train": ("rsisr_cli.train", "train", "Train LCMSR on your imagery: stage 1 (ae), then stage 2 (lcm)."),
    "upscale": ("rsisr_cli.upscale", "upscale", "Super-resolve a GeoTIFF by 4x, tiled, georeferenced, in bounded memory."),
}


class RsisrGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in COMMANDS:
            return None
        module, attr, _ = COMMANDS[name]
        return getattr(importlib.import_module(module), attr)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, COMMANDS[name][2]) for name in self.list_commands(ctx)]
        with formatter.section("Commands"):
            formatter.write_dl(rows)

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        try:
            rv = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except RsisrError as exc:
            _fail(str(exc))
        except click.exceptions.Abort:
            _fail("aborted")
        except click.ClickException as exc:
            hint = ""
            if isinstance(exc, click.UsageError) and exc.ctx is not None:
                hint = f" (see '{exc.ctx.command_path} --help')"
            _fail(exc.format_message() + hint)
        except KeyboardInterrupt:
            _fail("interrupted")
        if not standalone_mode:
            return rv
        sys.exit(rv if isinstance(rv, int) else 0)


def _fail(message: str) -> None:
    click.echo(f"Error: {' '.join(message.split())}", err=True)
    sys.exit(1)


@click.group(cls=RsisrGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="rsisr")
def cli() -> None:
    """4x super-resolution of remote-sensing rasters with LCMSR."""
