"""Scoring: a model on a dataset split, or a folder of predicted label PNGs.

Both iterate over the ground-truth list: an image with no prediction counts as all
background (and is reported), never silently skipped (reference-notes B.1).
"""

from __future__ import annotations

import copy
import logging
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ..errors import DataError
from ..io.image import read_label
from ..metrics.semantic import ConfusionMatrix, IPRMeter, low_resolution, semantic_scores

log = logging.getLogger("hparse.eval")


class LowResMeter:
    """Confusion of label maps nearest-downsampled by ``factor`` (MMAN's low-resolution mIoU: both the
    prediction and the ground truth at 1/16, :func:`~hparse.metrics.semantic.low_resolution`)."""

    def __init__(self, num_classes: int, ignore_index: int = 255, factor: int = 16):
        self.factor, self.cm = factor, ConfusionMatrix(num_classes, ignore_index)

    def update(self, pred, gt) -> None:
        self.cm.update(low_resolution(pred, self.factor), low_resolution(gt, self.factor))


class PairIPRMeter:
    """Isolated pixel rate of the predictions and, as a floor, of the ground truth (ignore excluded)."""

    def __init__(self, ignore_index: int = 255, k: int = 1):
        self.pred, self.gt = IPRMeter(k=k), IPRMeter(k=k, ignore=ignore_index)

    def update(self, pred, gt) -> None:
        self.pred.update(pred)
        self.gt.update(gt)


def evaluate_predictor(predictor, reader, convention: str = "ce2p", batch_size: int = 1,
                       progress: bool = True, label_map=None, target_map=None, class_names=None,
                       meters=()):
    """Run ``predictor`` over ``reader`` and score at the original resolution.

    ``label_map`` (a 256-entry LUT) maps predictions into the reader's label set first, for
    cross-dataset evaluation; ``target_map`` maps the ground truth instead, scored over
    ``class_names`` (e.g. a hierarchy level: parts -> upper / lower body). Every object in
    ``meters`` (e.g. :class:`LowResMeter`, :class:`PairIPRMeter`) is also fed each
    ``(prediction, ground truth)`` pair, after the mapping.
    """
    meta = reader.meta
    names = tuple(class_names or meta.classes)
    cm = ConfusionMatrix(len(names), meta.ignore_index)
    idx = list(range(len(reader)))
    bar = tqdm(total=len(idx), desc="eval", disable=not progress, leave=False)
    for start in range(0, len(idx), batch_size):
        samples = []
        for i in idx[start:start + batch_size]:
            try:
                samples.append(reader[i])
            except DataError as e:
                log.warning("skipping unreadable sample: %s", e)
        if samples:
            for s, pred in zip(samples, predictor.predict([s["image"] for s in samples])):
                gt = target_map[s["label"]] if target_map is not None else s["label"]
                pred = label_map[pred] if label_map is not None else pred
                cm.update(pred, gt)
                for m in meters:
                    m.update(pred, gt)
        bar.update(len(idx[start:start + batch_size]))
    bar.close()
    return cm, semantic_scores(cm.matrix, convention=convention, class_names=names)


def level_evaluation(predictor, reader, convention: str = "ce2p") -> dict:
    """Scores of a hierarchical model's (CNIF) upper levels: ``{2: scores, 3: scores}``, each level's
    output (``level2``, ``level3``) against the ground truth mapped through the label set's hierarchy."""
    from ..models.cnif import CNIF

    if not isinstance(predictor.model, CNIF):
        raise DataError("--levels needs a hierarchical model (CNIF) with level2 / level3 outputs")
    meta, out = reader.meta, {}
    for lvl in (2, 3):
        p = copy.copy(predictor)
        p.output, p.perm = f"level{lvl}", None       # upper levels have no left / right classes
        out[lvl] = evaluate_predictor(p, reader, convention, target_map=meta.hierarchy_lut(lvl),
                                      class_names=meta.level_classes(lvl))[1]
    return out


def evaluate_folder(pred_dir: str | Path, reader, convention: str = "ce2p", progress: bool = True,
                    label_map=None):
    """Score ``pred_dir/<id>.png`` label maps against every sample of ``reader``.

    Returns ``(confusion, scores, missing_ids)``; a missing prediction is scored as all
    background so it lowers the score instead of vanishing.
    """
    pred_dir = Path(pred_dir)
    if not pred_dir.is_dir():
        raise DataError(f"{pred_dir}: prediction folder not found")
    meta = reader.meta
    cm = ConfusionMatrix(meta.num_classes, meta.ignore_index)
    missing = []
    for i in tqdm(range(len(reader)), desc="evaluate", disable=not progress, leave=False):
        item = reader.items[i]
        gt = reader[i]["label"]
        path = pred_dir / f"{Path(item.id).as_posix()}.png"
        if path.is_file():
            pred = read_label(path)
            if pred.shape != gt.shape:
                raise DataError(f"{path}: prediction is {pred.shape[1]}x{pred.shape[0]} but the ground "
                                f"truth is {gt.shape[1]}x{gt.shape[0]}; predictions must have the "
                                "original image size")
            if label_map is not None:
                pred = label_map[pred]
        else:
            missing.append(item.id)
            pred = np.zeros_like(gt)
        cm.update(pred, gt)
    if missing:
        log.warning("%d of %d images have no prediction in %s (scored as background)",
                    len(missing), len(reader), pred_dir)
    return cm, semantic_scores(cm.matrix, convention=convention, class_names=meta.classes), missing

