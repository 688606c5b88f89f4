"""``hparse topdown --data LAYOUT ROOT --out FOLDER``: a single-person parser on each person box."""

from __future__ import annotations

from pathlib import Path

import typer

from ..errors import HParseError
from .common import check_out_dir, choice, device_option, fail, report, setup_logging


def topdown(data: tuple[str, Path] = typer.Option(..., help="LAYOUT ROOT of a multi-person dataset"),
            out: Path = typer.Option(..., "--out", "-o", help="prediction folder to write", callback=check_out_dir),
            split: str = typer.Option("val"), labels: str = typer.Option(None, help="label set"),
            model: str = typer.Option("default", help="single-person model: shipped name or checkpoint"),
            boxes: str = typer.Option("gt", help="'gt' (ground-truth people), a JSON box file "
                                                 "{id: [[x1, y1, x2, y2, score], ...]}, or an instance model "
                                                 "(shipped name or checkpoint) whose detections are the boxes "
                                                 "(saved to OUT/boxes.json)"),
            min_score: float = typer.Option(0.3, help="with a model as --boxes: the least detection score kept"),
            context: float = typer.Option(0.1, help="box enlargement on each side (fraction of its size)"),
            device: str = device_option(), tta: bool = typer.Option(False),
            png_mode: str = typer.Option("palette", help="PNGs of the challenge folders: palette (indexed) or gray "
                                                         "(8-bit grey, same ids, for OpenCV readers)",
                                         callback=choice("--png-mode", ("palette", "gray"))),
            mhp: bool = typer.Option(False, help="also write the LV-MHP-v2 submission layout (global_seg/, "
                                                 "global_tag/, results.txt)"),
            evaluate: bool = typer.Option(True, help="score the written folder against the split")):
    """Two-stage top-down instance parsing: a single-person parser on each person box."""
    from ..api import load
    from ..data.readers import build_reader
    from ..engine.evaluate_instances import evaluate_instance_folder
    from ..engine.topdown import run_topdown
    from ..io import instance_outputs as io

    setup_logging()
    try:
        reader = build_reader(data[0], data[1], split, label_set=labels)
        parser = load(model, device=device, tta=tta)
        if parser.meta.name != reader.meta.name:
            raise HParseError(f"the model predicts {parser.meta.name} labels but the data is read as "
                              f"{reader.meta.name}; pass --labels {parser.meta.name} if the data has them")
        run_topdown(parser.predictor, reader, out, _box_source(boxes, min_score, device), context, png_mode=png_mode)
        if mhp:
            io.mhp_submission_from_folders(out, reader.ids)
        typer.echo(f"wrote {len(reader)} images -> {out}" + (" (+ MHP submission layout)" if mhp else ""))
        if evaluate:
            report(evaluate_instance_folder(out, reader), out / "scores.json")
    except (HParseError, KeyError, ValueError) as e:
        fail(e)


def _box_source(boxes: str, min_score: float, device: str):
    """``--boxes``: "gt", a box file (``.json``) or an instance model's detector."""
    from ..api import load
    from ..engine.topdown import detected_boxes, read_box_file

    if boxes == "gt":
        return boxes
    if boxes.endswith(".json"):
        return read_box_file(boxes)
    detector = load(boxes, device=device)
    if getattr(detector.model, "task", "semantic") != "instance":
        raise HParseError(f"--boxes {boxes}: a semantic model finds no people; give an instance model, a box file "
                          "(.json) or 'gt'")
    return detected_boxes(detector, min_score)


def register(app: typer.Typer) -> None:
    app.command("topdown")(topdown)
