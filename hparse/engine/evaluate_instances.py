"""Scoring instance-level predictions from files (the challenge folders of
:mod:`hparse.io.instance_outputs`) with the ``instance`` evaluator
(:class:`hparse.evaluation.InstanceEvaluator`, which says what each folder is scored as) against a
dataset with instance ground truth (CIHP, LV-MHP-v2, VIP, or composed data in the CIHP layout).

A folder that is absent is skipped with a note. The ground-truth list drives everything: an image with
no prediction file counts its ground truth as missed (notes say how many), except for AP^r, which by
default follows the CIHP script (``official_image_list=True``: an image without a prediction ``.txt`` is
left out, ground truth included; ``False`` counts it).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from ..errors import DataError
from ..evaluation import (
    ChallengeFoldersEvaluator,
    InstanceEvaluator,
    InstanceScores,
    ground_truth_instances,
    is_instance_folder,
)
from ..io import instance_outputs as io
from ..metrics.instance import PARSING_THRESHOLDS
from .evaluate import run_evaluators

__all__ = ["evaluate_instance_folder", "is_instance_folder", "read_instance_pieces", "write_ground_truth_predictions"]


def _check_size(path: Path, shape, sample: dict) -> None:
    size = sample["image"].shape[:2]
    if tuple(shape) != tuple(size):
        raise DataError(f"{path}: prediction is {shape[1]}x{shape[0]} but the image is {size[1]}x{size[0]}; "
                        "predictions must have the original image size")


def read_instance_pieces(root: Path, folders: Sequence[str], sample: dict, meta) -> dict:
    """One image's predictions in ``folders`` under ``root`` as the ``instance`` evaluator's output dict
    (a piece is None when its file is missing), checked against the image size and the label set ``meta``."""
    image_id, out = sample["id"], {}
    if io.PARTS in folders:
        p = out["part_instances"] = io.read_part_instances(root, image_id)
        if p is not None:
            _check_size(io._path(root, io.PARTS, image_id, ".png"), p.ids.shape, sample)
    if io.PERSONS in folders:
        p = out["persons"] = io.read_person_parsing(root, image_id, image_size=sample["image"].shape[:2])
        if p is not None and len(p):
            _check_size(io._path(root, io.PERSONS, f"{image_id}_1", ".png"), p.image_size, sample)
            if p.parsings.max() >= meta.num_classes:
                raise DataError(f"{io._path(root, io.PERSONS, image_id, '.txt')}: a person map holds class "
                                f"{int(p.parsings.max())}, outside the {meta.num_classes} classes of {meta.name}")
    if io.HUMANS in folders:
        h = out["humans"] = io.read_human_instances(root, image_id)
        if h is not None:
            _check_size(io._path(root, io.HUMANS, image_id, ".png"), h.ids.shape, sample)
    if io.GLOBAL in folders:
        g = out["sem_seg"] = io.read_global_parsing(root, image_id)
        if g is not None:
            _check_size(io._path(root, io.GLOBAL, image_id, ".png"), g.shape, sample)
    return out


def evaluate_instance_folder(pred_root: str | Path, reader, thresholds=PARSING_THRESHOLDS,
                             convention: str = "ce2p", one_to_one: bool = False,
                             official_image_list: bool = True, person_background: str = "include",
                             progress: bool = True) -> InstanceScores:
    """Score the challenge folders under ``pred_root`` against every sample of ``reader``
    (see the module docstring). Returns :class:`~hparse.evaluation.InstanceScores`."""
    root = Path(pred_root)
    if not root.is_dir():
        raise DataError(f"{root}: prediction folder not found")
    present = io.present_folders(root)
    if not present:
        raise DataError(f"{root}: none of the folders {', '.join(io.FOLDERS)} found")
    evaluator = InstanceEvaluator(reader.meta, thresholds, convention, one_to_one, official_image_list,
                                  person_background)
    def read(samples):
        return [read_instance_pieces(root, present, s, reader.meta) for s in samples]

    scores = run_evaluators(reader, read, [evaluator], progress=progress, desc="evaluate")[evaluator.name]
    scores.split = reader.split
    return scores


def write_ground_truth_predictions(reader, out_root: str | Path, folders: Sequence[str] = io.FOLDERS,
                                   progress: bool = True) -> Path:
    """Write every sample's ground truth, as :func:`~hparse.evaluation.ground_truth_instances` (score 1),
    as a prediction folder: a perfect prediction, for testing the scoring pipeline and as a reference
    for the file formats."""
    writer = ChallengeFoldersEvaluator(reader.meta, out_root, folders)
    nc = reader.meta.num_classes
    run_evaluators(reader, lambda samples: [{"instances": ground_truth_instances(s, nc)} for s in samples],
                   [writer], progress=progress, desc="write ground truth")
    return Path(out_root)
