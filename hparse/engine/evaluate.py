"""Scoring through evaluators (:mod:`hparse.evaluation`): a model over a dataset split
(:func:`evaluate_model`), or a folder of predicted label PNGs (:func:`evaluate_folder`).

Both iterate over the ground-truth list: an image with no prediction counts as all background (and is
reported), never silently skipped (reference-notes B.1). A sample that cannot be read is skipped with a
warning. A prediction PNG holding class ids outside the label set is reported by name with those ids
(its pixels of those ids are not scored, as the confusion matrix drops them).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ..errors import ConfigError, DataError
from ..evaluation import Evaluator, SemanticEvaluator, build_evaluators
from ..io.image import read_label
from . import distributed

log = logging.getLogger("hparse.eval")


def run_evaluators(reader, outputs_for: Callable[[list[dict]], list[dict]], evaluators: Sequence[Evaluator],
                   batch_size: int = 1, progress: bool = True, desc: str = "eval") -> dict:
    """Feed ``evaluators`` with every readable sample of ``reader`` and ``outputs_for(samples)``, in
    batches of ``batch_size``; returns ``{evaluator name: result}``."""
    names = [e.name for e in evaluators]
    if not names or len(set(names)) != len(names):
        raise ConfigError(f"evaluators must be a non-empty list of distinct names, got {names}")
    for e in evaluators:
        e.reset()
    n, scored = len(reader), 0
    with tqdm(total=n, desc=desc, disable=not progress, leave=False) as bar:
        for start in range(0, n, batch_size):
            samples = []
            for i in range(start, min(n, start + batch_size)):
                try:
                    samples.append(reader[i])
                except DataError as err:
                    log.warning("skipping unreadable sample: %s", err)
            if samples:
                outputs = outputs_for(samples)
                for e in evaluators:
                    e.process(samples, outputs)
                scored += len(samples)
            bar.update(min(n, start + batch_size) - start)
    if not scored:
        raise DataError(f"none of the {n} samples of {reader.meta.name} {getattr(reader, 'split', '')} "
                        "could be read")
    return {e.name: e.evaluate() for e in evaluators}


def evaluate_model(predict: Callable[[list[np.ndarray]], list[dict]], reader, evaluators: Sequence[Evaluator],
                   batch_size: int = 1, progress: bool = True) -> dict:
    """Run ``predict(images) -> output dicts`` (``sem_seg``, ``extras``, ``instances``; original size)
    over ``reader`` and score with ``evaluators``; returns ``{evaluator name: result}``. Under torchrun the
    processes predict a share of the images each and every process scores all of them, as one process would."""
    if distributed.world_size() > 1:
        outputs = _predict_shared(predict, reader, batch_size)
        return run_evaluators(reader, lambda samples: [outputs[s["id"]] for s in samples], evaluators,
                              batch_size, progress)
    return run_evaluators(reader, lambda samples: predict([s["image"] for s in samples]), evaluators,
                          batch_size, progress)


def _predict_shared(predict, reader, batch_size: int) -> dict:
    """``{sample id: output}`` of every readable sample, each predicted by one process, gathered on all."""
    mine, todo = {}, distributed.shard(range(len(reader)))
    for start in range(0, len(todo), batch_size):
        samples = []
        for i in todo[start:start + batch_size]:
            try:
                samples.append(reader[i])
            except DataError:
                continue  # reported when the samples are scored
        if samples:
            mine.update(zip((s["id"] for s in samples), predict([s["image"] for s in samples])))
    return {k: v for part in distributed.gather_objects(mine) for k, v in part.items()}


def _read_prediction(pred_dir: Path, sample: dict, num_classes: int | None = None,
                     out_of_range: dict[str, list[int]] | None = None) -> np.ndarray | None:
    """``pred_dir/<id>.png`` (None when absent); ids >= ``num_classes`` are logged and noted in ``out_of_range``."""
    path = pred_dir / f"{Path(sample['id']).as_posix()}.png"
    if not path.is_file():
        return None
    pred, gt = read_label(path), sample["label"]
    if pred.shape != gt.shape:
        raise DataError(f"{path}: prediction is {pred.shape[1]}x{pred.shape[0]} but the ground truth is "
                        f"{gt.shape[1]}x{gt.shape[0]}; predictions must have the original image size")
    if num_classes is not None:
        bad = [int(v) for v in np.unique(pred) if v >= num_classes]
        if bad:
            log.warning("%s: class ids %s outside the label set (0..%d); those pixels are not scored",
                        path, bad, num_classes - 1)
            if out_of_range is not None:
                out_of_range[str(path)] = bad
    return pred


def evaluate_folder(pred_dir: str | Path, reader, convention: str = "ce2p", progress: bool = True,
                    label_map=None, out_of_range: dict[str, list[int]] | None = None):
    """Score ``pred_dir/<id>.png`` label maps against every sample of ``reader``.

    Returns ``(confusion, scores, missing_ids)``; a missing prediction is scored as all
    background so it lowers the score instead of vanishing. Without ``label_map``, a prediction with
    class ids outside the label set is reported (a warning naming the file and the ids; also put in
    ``out_of_range`` as ``{path: ids}`` when a dict is given).
    """
    pred_dir = Path(pred_dir)
    if not pred_dir.is_dir():
        raise DataError(f"{pred_dir}: prediction folder not found")
    evaluator = SemanticEvaluator(reader.meta, convention, label_map)
    limit = reader.meta.num_classes if label_map is None else None
    found = {} if out_of_range is None else out_of_range
    report = run_evaluators(
        reader, lambda samples: [{"sem_seg": _read_prediction(pred_dir, s, limit, found)} for s in samples],
        [evaluator], progress=progress, desc="evaluate")[evaluator.name]
    if report.missing:
        log.warning("%d of %d images have no prediction in %s (scored as background)",
                    len(report.missing), report.num_images, pred_dir)
    if found:
        log.warning("%d of %d predictions in %s hold class ids outside %s", len(found), report.num_images,
                    pred_dir, reader.meta.name)
    return report.confusion, report.scores, report.missing


def outputs_for(predictor, evaluators: Sequence[Evaluator]) -> Callable[[list[np.ndarray]], list[dict]]:
    """``images -> output dicts`` of ``predictor`` holding what ``evaluators`` read (extras, class probabilities)."""
    keys = {k for e in evaluators for k in e.output_keys}
    return partial(predictor.outputs, with_extras="extras" in keys, with_probs="probs" in keys)


def evaluators_for(eval_cfg: dict, meta, extra: Sequence[str | dict] = (), label_map=None) -> list[Evaluator]:
    """The evaluators of a config's ``eval`` section plus ``extra`` names or specs (CLI shortcuts such as
    ``low_res``),
    each given the section's ``convention`` and ``label_map`` when it takes them and its spec does not."""
    import inspect

    from ..evaluation import EVALUATORS

    def spec(s) -> dict:
        return dict(s) if isinstance(s, dict) else {"type": s}

    specs = [spec(s) for s in eval_cfg["evaluators"]]
    specs += [spec(e) for e in extra if spec(e)["type"] not in {s["type"] for s in specs}]
    defaults = {"convention": eval_cfg["convention"], "label_map": label_map}
    for spec in specs:
        params = inspect.signature(EVALUATORS.get(spec["type"])).parameters
        spec.update({k: v for k, v in defaults.items() if k in params and k not in spec and v is not None})
    return build_evaluators(specs, meta)
