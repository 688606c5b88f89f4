"""``hparse eval CONFIG CHECKPOINT`` (run a model on a split) and ``hparse evaluate`` (score a folder)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import typer

from ..errors import DataError, HParseError
from .common import BACKENDS, EXTRA_ARGS, FAILURE, check_convert, choice, device_option, fail, report, setup_logging


def eval_(ctx: typer.Context, config: str = typer.Argument(..., help="config (gives data and eval settings)"),
          checkpoint: str = typer.Argument(..., help="checkpoint file or shipped model name"),
          split: str = typer.Option(None, help="split to score (default: the config's val split)"),
          tta: bool = typer.Option(False, help="multi-scale + flip (eval.tta_scales)"),
          json_out: Path = typer.Option(None, "--json", help="write the scores as JSON"),
          plot: Path = typer.Option(None, help="confusion-matrix PNG (default beside --json, else beside the "
                                                  "checkpoint file, else here)"),
          convert: str = typer.Option(None, help="map predictions through a label converter, e.g. lip:ppss",
                                      callback=check_convert),
          levels: bool = typer.Option(False, help="hierarchical models: also score hierarchy levels 2 and 3"),
          low_res: bool = typer.Option(False, help="also mIoU with prediction and ground truth at 1/16 "
                                                   "(the low-resolution mIoU of the adversarial parsing paper)"),
          low_res_mode: str = typer.Option("nearest", help="--low-res prediction: nearest (the full-resolution "
                                                           "labels downsampled), pooled (class probabilities "
                                                           "average-pooled per cell) or generator (the model's own "
                                                           "low-resolution output: MMAN)",
                                           callback=choice("--low-res-mode", ("nearest", "pooled", "generator"))),
          ipr: bool = typer.Option(False, help="also the isolated pixel rate (see README, Metrics)"),
          device: str = device_option(),
          backend: str = typer.Option(None, help="torch, onnxruntime or onnxruntime-int8 (default: the fastest "
                                                                 "installed)",
                                      callback=choice("--backend", BACKENDS))):
    """Score a checkpoint on a dataset split at the original resolution."""
    from .. import config as C

    setup_logging()
    try:
        cfg = C.load_config(config, ctx.args)
        run = _run_eval(cfg, checkpoint, split, tta, convert, levels, low_res and low_res_mode, ipr, device, backend)
    except DataError as e:      # the run failed on the data (e.g. no sample readable): not a usage mistake
        fail(e, FAILURE)
    except (HParseError, KeyError, ValueError) as e:
        fail(e)
    _show_eval(run, tta, json_out)
    _plot_confusion(run, checkpoint, plot, json_out)


SHORTCUTS = {"low_res": "lowres", "ipr": "ipr", "levels": None}  # evaluator -> JSON file suffix (levels: per level)


def _run_eval(cfg: dict, checkpoint, split, tta, convert, levels, low_res, ipr, device,
              backend=None) -> SimpleNamespace:
    from ..api import load
    from ..data.convert import get_converter
    from ..data.readers import build_reader
    from ..engine.evaluate import evaluate_model, evaluators_for, outputs_for

    d = cfg["data"]
    reader = build_reader(d["layout"], d["root"], split or d["val_split"] or "val", label_set=d["label_set"])
    parser = load(checkpoint, device=device, backend=backend)
    lut = get_converter(*convert.split(":")).lut() if convert else None
    if lut is None and parser.meta.name != reader.meta.name:
        raise HParseError(f"the model predicts {parser.meta.name!r} labels but the data is "
                          f"{reader.meta.name!r}; pass --convert SRC:TGT")
    shortcuts = [name for name, on in (("ipr", ipr), ("levels", levels)) if on]
    if low_res:   # False or the mode
        shortcuts.insert(0, {"type": "low_res", "mode": low_res})
    evaluators = evaluators_for(cfg["eval"], reader.meta, shortcuts, label_map=lut)
    pred = parser.predictor_for(cfg["eval"], tta=tta)
    results = evaluate_model(outputs_for(pred, evaluators), reader, evaluators)
    return SimpleNamespace(reader=reader, results=results)


def _show_eval(run: SimpleNamespace, tta: bool, json_out: Path | None) -> None:
    reader = run.reader
    typer.echo(f"{reader.meta.name} {reader.split}: {len(reader)} images, "
               f"{'multi-scale + flip' if tta else 'single scale'}")
    for name, res in run.results.items():
        if name != next(iter(run.results)):
            typer.echo(f"\n{name}")
        if name == "levels":
            for lvl, sc in res.levels.items():
                report(sc, json_out.with_name(f"{json_out.stem}_level{lvl}.json") if json_out else None)
            continue
        stem = "" if name == "semantic" else "_" + SHORTCUTS.get(name, name)
        report(res, json_out.with_name(f"{json_out.stem}{stem}.json") if json_out else None)


def _plot_confusion(run: SimpleNamespace, checkpoint: str, plot: Path | None, json_out: Path | None) -> None:
    from ..viz.plots import confusion_matrix_plot

    semantic = run.results.get("semantic")
    if semantic is None:
        return
    ck_path = Path(checkpoint)
    folder = json_out.parent if json_out else ck_path.parent if ck_path.is_file() else Path(".")
    plot = plot or folder / f"confusion_{run.reader.split}.png"
    confusion_matrix_plot(semantic.confusion.matrix, run.reader.meta.classes, plot)
    typer.echo(f"confusion matrix: {plot}")


def evaluate(pred: Path = typer.Option(..., help="folder of predicted label PNGs (<id>.png), or of the "
                                                "instance challenge folders (see --instance)"),
             data: tuple[str, Path] = typer.Option(..., help="LAYOUT ROOT of the ground truth"),
             split: str = typer.Option("val", help="split to score: train, val, test, or any split whose list "
                                                   "the layout has (e.g. test.txt / test_id.txt at the root)"),
             labels: str = typer.Option(None, help="label set"),
             convention: str = typer.Option("ce2p", help="mIoU convention: ce2p, nan or d2"),
             convert: str = typer.Option(None, help="map predictions through SRC:TGT first (semantic only)",
                                         callback=check_convert),
             instance: bool = typer.Option(None, "--instance/--semantic",
                                           help="score instance folders (global_parsing, instance_parsing, "
                                                "instance_segmentation, person_parsing): AP^r, AP^p, PCP, "
                                                "human mask AP, mIoU (default: auto-detect)"),
             one_to_one: bool = typer.Option(False, help="AP^r with one-to-one VOC matching (instance mode)"),
             official_image_list: bool = typer.Option(
                 True, "--official-image-list/--count-missing",
                 help="AP^r: leave out images without a prediction, as the CIHP script does (default), or "
                      "count their ground truth as missed"),
             json_out: Path = typer.Option(None, "--json")):
    """Score a folder of predictions against a dataset split (semantic label PNGs, or instance folders)."""
    from ..data.convert import get_converter
    from ..data.readers import build_reader
    from ..engine.evaluate import evaluate_folder
    from ..engine.evaluate_instances import evaluate_instance_folder, is_instance_folder

    setup_logging()
    if not pred.is_dir():
        fail(f"--pred {pred}: no such folder")
    try:
        if instance is None:
            instance = is_instance_folder(pred)
        if instance and convert:
            raise HParseError("--convert applies to semantic predictions only")
        reader = build_reader(data[0], data[1], split, label_set=labels)
        if instance:
            scores = evaluate_instance_folder(pred, reader, convention=convention, one_to_one=one_to_one,
                                              official_image_list=official_image_list)
        else:
            lut = get_converter(*convert.split(":")).lut() if convert else None
            out_of_range: dict[str, list[int]] = {}
            _, scores, missing = evaluate_folder(pred, reader, convention, label_map=lut, out_of_range=out_of_range)
    except (HParseError, KeyError, ValueError) as e:
        fail(e)
    if instance:
        typer.echo(f"{reader.meta.name} {split}: {len(reader)} images, instance-level predictions in {pred}")
    else:
        typer.echo(f"{reader.meta.name} {split}: {len(reader)} images, {len(missing)} without prediction")
        _report_out_of_range(out_of_range, reader.meta)
    report(scores, json_out)


def _report_out_of_range(found: dict[str, list[int]], meta, shown: int = 20) -> None:
    """One line per prediction holding class ids outside the label set (those pixels are not scored)."""
    for path, ids in list(found.items())[:shown]:
        typer.secho(f"  warning: {path}: class ids {ids} outside {meta.name} (0..{meta.num_classes - 1}); "
                    "those pixels are not scored", fg="yellow", err=True)
    if len(found) > shown:
        typer.secho(f"  warning: {len(found) - shown} more predictions hold class ids outside {meta.name} "
                    "(all are in the log)", fg="yellow", err=True)


def register(app: typer.Typer) -> None:
    app.command("eval", context_settings=EXTRA_ARGS)(eval_)
    app.command("evaluate")(evaluate)
