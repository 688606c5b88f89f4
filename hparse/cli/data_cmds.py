"""``hparse data ...`` commands: list the readable layouts, check a dataset."""

from __future__ import annotations

import json
from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    data_app = typer.Typer(no_args_is_help=True, help="Inspect and prepare datasets.")
    app.add_typer(data_app, name="data")

    @data_app.command("layouts")
    def layouts():
        """List the dataset layouts hparse can read."""
        from ..data.readers import READERS
        for name, cls in READERS.items():
            labels = cls.default_label_set or "(given with --labels)"
            typer.echo(f"{name:20s} splits: {', '.join(cls.splits):24s} labels: {labels}")

    @data_app.command("check")
    def check(
        layout: str = typer.Argument(..., help="Dataset layout (see `hparse data layouts`)."),
        root: Path = typer.Argument(..., help="Dataset root folder."),
        split: list[str] = typer.Option(None, "--split", "-s", help="Split(s) to check (default: all)."),
        labels: str = typer.Option(None, "--labels", help="Label set to report in (required for 'folder')."),
        json_path: Path = typer.Option(None, "--json", help="Also write the report as JSON here."),
        progress: bool = typer.Option(True, help="Show a progress bar."),
    ):
        """Load every sample, report counts, class pixel frequencies, image sizes and problems.

        Exits with code 1 when problems were found.
        """
        from ..data.check import check_dataset
        from ..errors import HParseError

        try:
            report = check_dataset(layout, root, split or None, labels, progress=progress)
        except (HParseError, KeyError) as e:
            typer.echo(f"error: {e.args[0] if isinstance(e, KeyError) else e}", err=True)
            raise typer.Exit(2) from None
        report.print()
        if json_path:
            json_path.write_text(json.dumps(report.to_dict(), indent=1))
        raise typer.Exit(0 if report.ok else 1)
