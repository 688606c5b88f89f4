"""``hparse train | eval | parse | evaluate | models``."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import typer

from ..errors import HParseError


def _setup_logging(verbose: bool = False) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")


def _fail(e: Exception) -> None:
    typer.secho(f"error: {e}", fg="red", err=True)
    raise typer.Exit(2)


def _report(scores, json_path: Path | None) -> None:
    typer.echo(scores.format_table())
    if json_path:
        from ..io.atomic import write_text_atomic

        write_text_atomic(json_path, json.dumps(scores.to_dict(), indent=1))


def register(app: typer.Typer) -> None:
    @app.command("train", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
    def train(ctx: typer.Context, config: str = typer.Argument(..., help="config file or packaged config name"),
              out: Path = typer.Option(None, help="run folder (default runs/<config name>)"),
              resume: Path = typer.Option(None, help="checkpoint to resume from (e.g. runs/x/last.pt)"),
              auto_resume: bool = typer.Option(True, help="resume from OUT/last.pt when it exists"),
              device: str = typer.Option(None, help="cpu, cuda, cuda:1 (default: cuda if available)")):
        """Train a model: hparse train CONFIG [key.sub=value ...]."""
        from .. import config as C
        from ..engine.trainer import Trainer

        _setup_logging()
        try:
            cfg = C.load_config(config, ctx.args)
            trainer = Trainer(cfg, out_dir=out, device=device)
            ck = resume or (trainer.out / "last.pt" if auto_resume and (trainer.out / "last.pt").is_file() else None)
            if ck:
                trainer.resume(ck)
            result = trainer.train()
        except HParseError as e:
            _fail(e)
        typer.echo(f"done: {trainer.out} (best mIoU {100 * max(trainer.best, 0):.2f})")
        typer.echo(json.dumps(result))

    @app.command("eval", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
    def eval_(ctx: typer.Context, config: str = typer.Argument(..., help="config (gives data and eval settings)"),
              checkpoint: str = typer.Argument(..., help="checkpoint file or shipped model name"),
              split: str = typer.Option(None, help="split to score (default: the config's val split)"),
              tta: bool = typer.Option(False, help="multi-scale + flip (eval.tta_scales)"),
              json_out: Path = typer.Option(None, "--json", help="write the scores as JSON"),
              plot: Path = typer.Option(None, help="confusion-matrix PNG (default beside the checkpoint)"),
              convert: str = typer.Option(None, help="map predictions through a label converter, e.g. lip:ppss"),
              levels: bool = typer.Option(False, help="hierarchical models (CNIF): also score levels 2 and 3"),
              low_res: bool = typer.Option(False, help="also mIoU with prediction and ground truth at 1/16 "
                                                       "(MMAN's low-resolution mIoU)"),
              ipr: bool = typer.Option(False, help="also the isolated pixel rate (MMAN Table 4; see README)"),
              device: str = typer.Option(None)):
        """Score a checkpoint on a dataset split at the original resolution."""
        from .. import config as C
        from ..api import load
        from ..data.convert import get_converter
        from ..data.readers import build_reader
        from ..engine.evaluate import LowResMeter, PairIPRMeter, evaluate_predictor, level_evaluation
        from ..engine.trainer import make_predictor
        from ..io.atomic import write_text_atomic
        from ..metrics.semantic import semantic_scores
        from ..viz.plots import confusion_matrix_plot

        _setup_logging()
        try:
            cfg = C.load_config(config, ctx.args)
            d = cfg["data"]
            reader = build_reader(d["layout"], d["root"], split or d.get("val_split", "val"),
                                  label_set=d.get("label_set"))
            parser = load(checkpoint, device=device)
            lut = None
            if convert:
                src, tgt = convert.split(":")
                lut = get_converter(src, tgt).lut()
            elif parser.meta.name != reader.meta.name:
                raise HParseError(f"the model predicts {parser.meta.name!r} labels but the data is "
                                  f"{reader.meta.name!r}; pass --convert SRC:TGT")
            pred = make_predictor(parser.model, parser.meta, {**parser.config, "eval": cfg.get("eval", {})},
                                  parser.device, tta=tta, channels_last=parser.predictor.channels_last)
            convention = cfg.get("eval", {}).get("convention", "ce2p")
            meta = reader.meta
            low = LowResMeter(meta.num_classes, meta.ignore_index) if low_res else None
            iprm = PairIPRMeter(meta.ignore_index) if ipr else None
            cm, scores = evaluate_predictor(pred, reader, convention, label_map=lut,
                                            meters=[m for m in (low, iprm) if m])
            level_scores = level_evaluation(pred, reader, convention) if levels else {}
        except (HParseError, KeyError, ValueError) as e:
            _fail(e)
        typer.echo(f"{reader.meta.name} {reader.split}: {len(reader)} images, "
                   f"{'multi-scale + flip' if tta else 'single scale'}")
        _report(scores, json_out)
        if low:
            low_scores = semantic_scores(low.cm.matrix, convention=convention, class_names=reader.meta.classes)
            typer.echo(f"\nlow-resolution (1/{low.factor}) mIoU: {100 * low_scores.miou:.2f}")
            if json_out:
                write_text_atomic(json_out.with_name(f"{json_out.stem}_lowres.json"),
                                  json.dumps(low_scores.to_dict(), indent=1))
        if iprm:
            typer.echo(f"isolated pixel rate (IPR, 8-neighbour, k=1): {100 * iprm.pred.value:.3f} % "
                       f"(ground truth: {100 * iprm.gt.value:.3f} %)")
            if json_out:
                write_text_atomic(json_out.with_name(f"{json_out.stem}_ipr.json"),
                                  json.dumps({"pred": iprm.pred.to_dict(), "gt": iprm.gt.to_dict()}, indent=1))
        for lvl, sc in level_scores.items():
            typer.echo(f"\nlevel {lvl}")
            _report(sc, json_out.with_name(f"{json_out.stem}_level{lvl}.json") if json_out else None)
        ck_path = Path(checkpoint)
        plot = plot or (ck_path.parent if ck_path.is_file() else Path(".")) / f"confusion_{reader.split}.png"
        confusion_matrix_plot(cm.matrix, reader.meta.classes, plot)
        typer.echo(f"confusion matrix: {plot}")

    @app.command("evaluate")
    def evaluate(pred: Path = typer.Option(..., help="folder of predicted label PNGs (<id>.png), or of the "
                                                    "instance challenge folders (see --instance)"),
                 data: tuple[str, Path] = typer.Option(..., help="LAYOUT ROOT of the ground truth"),
                 split: str = typer.Option("val"), labels: str = typer.Option(None, help="label set"),
                 convention: str = typer.Option("ce2p", help="mIoU convention: ce2p, nan or d2"),
                 convert: str = typer.Option(None, help="map predictions through SRC:TGT first (semantic only)"),
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

        _setup_logging()
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
                _, scores, missing = evaluate_folder(pred, reader, convention, label_map=lut)
        except (HParseError, KeyError, ValueError) as e:
            _fail(e)
        if instance:
            typer.echo(f"{reader.meta.name} {split}: {len(reader)} images, instance-level predictions in {pred}")
        else:
            typer.echo(f"{reader.meta.name} {split}: {len(reader)} images, {len(missing)} without prediction")
        _report(scores, json_out)

    @app.command("parse")
    def parse(inputs: list[str] = typer.Argument(..., help="image files, folders or globs"),
              out: Path = typer.Option(Path("outputs"), "--out", "-o", help="output folder"),
              model: str = typer.Option("default", help="shipped model name or checkpoint path"),
              device: str = typer.Option(None, help="cpu, cuda (default: cuda if available)"),
              batch_size: int = typer.Option(1, help="images per forward pass"),
              tta: bool = typer.Option(False, help="multi-scale + flip test-time augmentation"),
              overwrite: bool = typer.Option(False, help="redo images whose outputs exist"),
              masks: bool = typer.Option(False, help="also write one binary PNG per class present"),
              probs: bool = typer.Option(False, help="also write class probabilities (.npy, float16)"),
              sidecar: bool = typer.Option(False, "--json", help="also write a JSON sidecar with label names"),
              palette: str = typer.Option(None, help="colour palette: lip or voc (default: the label set's)"),
              extras: bool = typer.Option(False, "--extras", "--levels",
                                          help="also write what the model outputs beyond the label map: "
                                               "boundary / structure-point heatmaps (ACENet), hierarchy levels "
                                               "2-3 and gate charts (CNIF)")):
        """Parse images: a label PNG (pixel = class id) and a colour overlay per image."""
        from ..api import load
        from ..engine.parse import extra_overlays, parse_files

        _setup_logging()
        try:
            parser = load(model, device=device, tta=tta)
            rep = parse_files(parser, inputs, out, batch_size, overwrite, masks, probs, sidecar, palette,
                              extras=extra_overlays if extras else None)
        except HParseError as e:
            _fail(e)
        typer.echo(f"{len(rep.written)} parsed, {len(rep.skipped)} skipped (outputs exist), "
                   f"{len(rep.failed)} failed -> {out}")
        for path, why in rep.failed.items():
            typer.secho(f"  failed: {why}" if path in why else f"  failed: {path}: {why}", fg="yellow", err=True)
        if not rep.written and not rep.skipped:
            raise typer.Exit(1)

    @app.command("topdown")
    def topdown(data: tuple[str, Path] = typer.Option(..., help="LAYOUT ROOT of a multi-person dataset"),
                out: Path = typer.Option(..., "--out", "-o", help="prediction folder to write"),
                split: str = typer.Option("val"), labels: str = typer.Option(None, help="label set"),
                model: str = typer.Option("default", help="single-person model: shipped name or checkpoint"),
                boxes: str = typer.Option("gt", help="'gt' (ground-truth people) or a JSON box file "
                                                     "{id: [[x1, y1, x2, y2, score], ...]}"),
                context: float = typer.Option(0.1, help="box enlargement on each side (fraction of its size)"),
                device: str = typer.Option(None), tta: bool = typer.Option(False),
                evaluate: bool = typer.Option(True, help="score the written folder against the split")):
        """Two-stage top-down instance parsing: a single-person parser on each person box."""
        from ..api import load
        from ..data.readers import build_reader
        from ..engine.evaluate_instances import evaluate_instance_folder
        from ..engine.topdown import read_box_file, run_topdown

        _setup_logging()
        try:
            reader = build_reader(data[0], data[1], split, label_set=labels)
            parser = load(model, device=device, tta=tta)
            if parser.meta.name != reader.meta.name:
                raise HParseError(f"the model predicts {parser.meta.name} labels but the data is read as "
                                  f"{reader.meta.name}; pass --labels {parser.meta.name} if the data has them")
            run_topdown(parser.predictor, reader, out, boxes if boxes == "gt" else read_box_file(boxes), context)
            typer.echo(f"wrote {len(reader)} images -> {out}")
            if evaluate:
                _report(evaluate_instance_folder(out, reader), out / "scores.json")
        except (HParseError, KeyError, ValueError) as e:
            _fail(e)

    @app.command("export")
    def export(checkpoint: Path = typer.Argument(..., help="training checkpoint (last.pt / best.pt)"),
               out: Path = typer.Argument(..., help="slim weights file to write"),
               half: bool = typer.Option(False, help="store float weights as float16 (half the size)")):
        """Write a slim inference checkpoint (weights, config, label set, validation history)."""
        from ..engine.checkpoint import export_weights

        try:
            path = export_weights(checkpoint, out, half=half)
        except HParseError as e:
            _fail(e)
        typer.echo(f"wrote {path} ({path.stat().st_size / 2**20:.1f} MiB)")

    @app.command("models")
    def models(name: str = typer.Argument(None, help="only configs whose name contains this")):
        """List packaged model configs with parameters and multiply-adds at their input size."""
        from rich.console import Console
        from rich.table import Table

        from .. import config as C
        from ..labels import get_meta
        from ..models import build_model
        from ..models.complexity import count_macs, count_params, format_count

        t = Table("config", "model", "backbone", "classes", "input (HxW)", "params", "MACs")
        for cname in C.list_configs():
            if name and name not in cname:
                continue
            cfg = C.load_config(cname)
            meta = get_meta(cfg["data"].get("label_set") or cfg["data"]["layout"])
            m = build_model(cfg["model"], meta.num_classes).eval()
            h, w = cfg["data"].get("input_size", [512, 512])
            t.add_row(cname, cfg["model"]["type"], cfg["model"].get("backbone", {}).get("name", "-"),
                      str(meta.num_classes), f"{h}x{w}", format_count(count_params(m)),
                      format_count(count_macs(m, (1, 3, h, w))))
        Console(width=max(Console().width, 140)).print(t)   # full config names, also when piped
