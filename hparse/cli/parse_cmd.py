"""``hparse parse INPUTS... --out FOLDER``."""

from __future__ import annotations

from pathlib import Path

import typer

from ..errors import HParseError
from .common import FAILURE, check_batch_size, check_out_dir, device_option, fail, palette_option, setup_logging


def parse(inputs: list[str] = typer.Argument(..., help="image files, folders or globs"),
          out: Path = typer.Option(Path("outputs"), "--out", "-o", help="output folder", callback=check_out_dir),
          model: str = typer.Option("default", help="shipped model name or checkpoint path"),
          device: str = device_option(),
          batch_size: int = typer.Option(1, help="images per forward pass", callback=check_batch_size),
          tta: bool = typer.Option(False, help="multi-scale + flip test-time augmentation"),
          overwrite: bool = typer.Option(False, help="redo images whose outputs exist"),
          masks: bool = typer.Option(False, help="also write one binary PNG per class present"),
          probs: bool = typer.Option(False, help="also write class probabilities (.npy, float16)"),
          sidecar: bool = typer.Option(False, "--json", help="also write a JSON sidecar with label names"),
          palette: str = palette_option(),
          extras: bool = typer.Option(False, "--extras", "--levels",
                                      help="also write what the model outputs beyond the label map: "
                                           "boundary / structure-point heatmaps, hierarchy levels and gate "
                                           "charts, as the model provides")):
    """Parse images: a label PNG (pixel = class id) and a colour overlay per image."""
    from ..api import load
    from ..engine.parse import extra_overlays, parse_files

    setup_logging()
    try:
        parser = load(model, device=device, tta=tta)
        rep = parse_files(parser, inputs, out, batch_size, overwrite, masks, probs, sidecar, palette,
                          extras=extra_overlays if extras else None)
    except HParseError as e:
        fail(e)
    _summary(rep, out)


def _summary(rep, out: Path) -> None:
    typer.echo(f"{len(rep.written)} parsed, {len(rep.skipped)} skipped (outputs exist), "
               f"{len(rep.failed)} failed -> {out}")
    for path, why in rep.failed.items():
        typer.secho(f"  failed: {why}" if path in why else f"  failed: {path}: {why}", fg="yellow", err=True)
    if not rep.written and not rep.skipped:
        raise typer.Exit(FAILURE)


def register(app: typer.Typer) -> None:
    app.command("parse")(parse)
