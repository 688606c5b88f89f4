"""The ``hparse`` command. Each command group lives in its own module of this package."""

from __future__ import annotations

import typer

from . import data_cmds, engine_cmds, labels_cmd

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="hparse: human parsing (part segmentation) toolkit.")
labels_cmd.register(app)
data_cmds.register(app)
engine_cmds.register(app)


def main() -> None:
    app()
