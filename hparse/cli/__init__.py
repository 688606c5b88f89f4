"""The ``hparse`` command. Each command lives in its own small module of this package; what they share
(one-line errors, option validators, the scores report) is in :mod:`hparse.cli.common`."""

from __future__ import annotations

import sys

import typer

from . import (
    data_cmds,
    eval_cmds,
    export_cmd,
    labels_cmd,
    models_cmd,
    parse_cmd,
    serve_cmd,
    topdown_cmd,
    train_cmd,
)
from .common import CONTEXT, HParseGroup

app = typer.Typer(cls=HParseGroup, add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  context_settings=CONTEXT, help="hparse: human parsing (part segmentation) toolkit.")
for _module in (labels_cmd, data_cmds, train_cmd, eval_cmds, parse_cmd, topdown_cmd, export_cmd, models_cmd, serve_cmd):
    _module.register(app)


def _print_version(value: bool) -> None:
    if value:
        from .. import __version__

        typer.echo(f"hparse {__version__}")
        raise typer.Exit()


@app.callback(cls=HParseGroup)
def _root(version: bool = typer.Option(False, "--version", is_eager=True, callback=_print_version,
                                       help="print the version and exit")) -> None:
    """hparse: human parsing (part segmentation) toolkit."""


def main() -> None:
    """The console script: ``app`` with the one-line error handling of :class:`HParseGroup`; a last
    guard for anything raised outside a command (e.g. while the command line is set up)."""
    from .common import one_line_errors

    try:
        with one_line_errors():
            app()
    except typer.Exit as e:
        sys.exit(e.exit_code)
