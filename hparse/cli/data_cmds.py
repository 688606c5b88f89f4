"""``hparse data ...`` commands (filled in by hparse.data.check)."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    data_app = typer.Typer(no_args_is_help=True, help="Inspect and prepare datasets.")
    app.add_typer(data_app, name="data")

    @data_app.command("layouts")
    def layouts():
        """List the dataset layouts hparse can read."""
        from ..data.readers import READERS
        for name, cls in READERS.items():
            typer.echo(f"{name:20s} splits: {', '.join(cls.splits):24s} labels: {cls.default_label_set}")
