"""The acmtool command line: thin commands that build a config and call the Python API.

Exit codes: 0 ok, 1 a check failed, 2 bad input (one line on stderr, no traceback).
"""
from __future__ import annotations

import click

from acmtool._version import __version__
from acmtool.errors import AcmCheckFailed, AcmInputError, StopRequested


class AcmGroup(click.Group):
    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except (AcmInputError, AcmCheckFailed) as e:
            click.echo(f"acmtool: error: {e}", err=True)
            ctx.exit(e.exit_code)
        except StopRequested:
            ctx.exit(130)  # interrupted on purpose; the run state says how to resume


@click.group(cls=AcmGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="acmtool")
def cli():
    """Turn a pre-trained transformer's dense blocks into Adaptive Computation Modules."""


# The commands register themselves on `cli` when imported.
from acmtool.cli import (bench_cmd, convert_cmd, demo_cmd, eval_cmd, export_cmd, inspect_cmd,  # noqa: E402,F401
                         transcribe_cmd, visualize_cmd)


def main(argv=None):
    return cli.main(args=argv, prog_name="acmtool")

