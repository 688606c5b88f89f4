"""``hparse export CHECKPOINT OUT``."""

from __future__ import annotations

from pathlib import Path

import typer

from ..errors import HParseError
from .common import fail


def export(checkpoint: Path = typer.Argument(..., help="training checkpoint (last.pt / best.pt)"),
           out: Path = typer.Argument(..., help="slim weights file to write"),
           half: bool = typer.Option(False, help="store float weights as float16 (half the size)")):
    """Write a slim inference checkpoint (weights, config, label set, validation history)."""
    from ..engine.checkpoint import export_weights

    if out.is_dir():
        fail(f"OUT {out} is a folder; give the weights file to write")
    try:
        path = export_weights(checkpoint, out, half=half)
    except HParseError as e:
        fail(e)
    typer.echo(f"wrote {path} ({path.stat().st_size / 2**20:.1f} MiB)")


def register(app: typer.Typer) -> None:
    app.command("export")(export)
