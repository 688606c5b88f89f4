"""``hparse data ...`` commands: list the readable layouts, check a dataset, compose multi-person data."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from .common import fail


def layouts():
    """List the dataset layouts hparse can read."""
    from ..data.readers import READERS

    for name, cls in READERS.items():
        labels = cls.default_label_set or "(given with --labels)"
        typer.echo(f"{name:20s} splits: {', '.join(cls.splits):24s} labels: {labels}")


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
        fail(e)
    report.print()
    if json_path:
        json_path.write_text(json.dumps(report.to_dict(), indent=1))
    raise typer.Exit(0 if report.ok else 1)


def compose(
    src_layout: str = typer.Argument(..., help="Source layout (single-person data, e.g. ccp)."),
    src_root: Path = typer.Argument(..., help="Source dataset root."),
    out_root: Path = typer.Argument(..., help="Output folder (CIHP layout)."),
    splits: str = typer.Option("train,val", "--splits", help="Comma-separated splits to compose."),
    labels: str = typer.Option(None, "--labels", help="Label set (default: the source layout's)."),
    per_image: str = typer.Option("2-5", "--per-image", help="People per image, MIN-MAX."),
    count: int = typer.Option(None, "--count", help="Images per split (default: the source split's size)."),
    seed: int = typer.Option(0, "--seed", help="Random seed (same seed -> identical files)."),
    size: str = typer.Option("512x512", "--size", help="Canvas size HxW."),
    background: str = typer.Option("blur", "--background", help="blur, colour, source or mosaic (sharp tiles)."),
    min_visible: float = typer.Option(0.2, "--min-visible",
                                      help="Drop a person with less than this share of its area visible."),
    occluder: float = typer.Option(0.0, "--occluder", help="Probability of a band of background over the bottom "
                                   "of the canvas (a table hiding lower bodies)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Recompose existing samples / other settings."),
    progress: bool = typer.Option(True, help="Show a progress bar."),
):
    """Paste people of a single-person dataset into multi-person images, written in the CIHP layout.

    Read the result with `hparse data check cihp OUT_ROOT` (its meta.json names the label set).
    An interrupted run resumes where it stopped.
    """
    from ..data.compose import ComposeParams, compose_dataset, parse_range, parse_size
    from ..errors import HParseError

    try:
        params = ComposeParams(per_image=parse_range(per_image), size=parse_size(size),
                               background=background, min_visible=min_visible, occluder=occluder)
        names = [s.strip() for s in splits.split(",") if s.strip()]
        report = compose_dataset(src_layout, src_root, out_root, names, labels, params, count, seed,
                                 overwrite, progress)
    except (HParseError, KeyError) as e:
        fail(e)
    typer.echo(report.summary())


def mark_bystanders(
    src_layout: str = typer.Argument(..., help="Source layout (e.g. ccp, or cihp for composed canvases)."),
    src_root: Path = typer.Argument(..., help="Source dataset root."),
    out_root: Path = typer.Argument(..., help="Output folder (CIHP layout)."),
    model: str = typer.Option("default", "--model", help="Parser that finds the people (name or checkpoint)."),
    backend: str = typer.Option(None, "--backend", help="torch, onnxruntime, onnxruntime-int8 (default: fastest)."),
    splits: str = typer.Option("train", "--splits", help="Comma-separated splits to mark."),
    labels: str = typer.Option(None, "--labels", help="Label set (default: the source layout's)."),
    threshold: float = typer.Option(0.3, "--threshold", help="Person probability from which a background "
                                    "pixel counts as an unlabelled person."),
    margin: int = typer.Option(6, "--margin", help="Pixels around the labelled people left as they are, and by "
                               "which the marked people grow."),
    progress: bool = typer.Option(True, help="Show a progress bar."),
):
    """Copy a dataset with the people it leaves unlabelled (passers-by labelled background) set to ignore (255).

    Train on OUT_ROOT (layout cihp; its meta.json names the label set) instead of the source. An interrupted run
    resumes where it stopped.
    """
    from ..api import load
    from ..data.bystanders import mark_dataset
    from ..errors import HParseError

    try:
        parser = load(model, backend=backend, person_prior="none")   # the network's own view, as measured
        names = [s.strip() for s in splits.split(",") if s.strip()]
        report = mark_dataset(src_layout, src_root, out_root, parser.person_probability, str(model), names, labels,
                              threshold, margin, progress)
    except (HParseError, KeyError) as e:
        fail(e)
    typer.echo(report.summary())


def register(app: typer.Typer) -> None:
    data_app = typer.Typer(no_args_is_help=True, help="Inspect and prepare datasets.")
    app.add_typer(data_app, name="data")
    data_app.command("layouts")(layouts)
    data_app.command("check")(check)
    data_app.command("compose")(compose)
    data_app.command("mark-bystanders")(mark_bystanders)
