"""The ``instance`` evaluator: CIHP part-instance AP^r, MHP AP^p / PCP, COCO human mask AP (APh) and
the mIoU of the global parsing, from a model's :class:`~hparse.structures.PersonInstances` or from the
challenge-folder pieces read from disk.

Per image, ``outputs["instances"]`` is turned into the four pieces exactly as
:func:`hparse.io.instance_outputs.write_instance_outputs` writes them (:func:`challenge_pieces`), so
scoring in memory equals writing the folders and scoring those. Folder scoring gives the pieces instead:

==================  =========================  ==================================================
output key          folder                     scored as (ground truth)
==================  =========================  ==================================================
``part_instances``  ``instance_parsing/``      AP^r (``instance_ids`` + ``instances``, or one
                                               instance per (person, class) of ``label`` x ``human_ids``)
``persons``         ``person_parsing/``        AP^p, PCP (``person_labels``)
``humans``          ``instance_segmentation/`` APh (the masks of ``human_ids``); a PartInstances id map
``sem_seg``         ``global_parsing/``        mIoU etc. (``label``)
==================  =========================  ==================================================

The pieces of the first image decide which metrics run; a piece that is None (or absent later) is a
missing prediction: its ground truth counts as missed (AP^p, APh), it is scored as background (mIoU),
and for AP^r the image is left out as the CIHP script does (``official_image_list=True``) or counted.
A metric whose ground truth the dataset lacks is skipped with a note. AP needs every image at once, so
the predictions and ground truth are kept, zlib-compressed, until :meth:`InstanceEvaluator.evaluate`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from ..errors import ConfigError
from ..io import instance_outputs as io
from ..metrics.instance import (
    PARSING_THRESHOLDS,
    MaskAPResult,
    PartAPResult,
    PersonAPResult,
    mask_ap,
    part_ap,
    person_ap,
)
from ..metrics.semantic import ConfusionMatrix, semantic_scores
from ..structures import PartInstances, PersonInstances
from .base import EVALUATORS, Evaluator
from .ground_truth import ground_truth_parts, ground_truth_persons, human_masks
from .packed import Packed, Unpacked
from .semantic import check_convention

log = logging.getLogger("hparse.eval")

# the output key of each folder's piece, in scoring (and notes) order
PIECES = {io.PARTS: "part_instances", io.PERSONS: "persons", io.HUMANS: "humans", io.GLOBAL: "sem_seg"}
_WHAT = {io.GLOBAL: "mIoU", io.PARTS: "part-instance AP^r", io.HUMANS: "human mask AP", io.PERSONS: "AP^p / PCP"}
_GT_KIND = {io.PARTS: "part-instance ground truth", io.PERSONS: "per-person ground truth (person_labels)",
            io.HUMANS: "human ids", io.GLOBAL: "label maps"}
_MISSED = "their ground truth counts as missed"


def is_instance_folder(pred_root: str | Path) -> bool:
    """True when ``pred_root`` holds ``instance_parsing/`` or ``person_parsing/`` (auto-detection)."""
    return any((Path(pred_root) / f).is_dir() for f in (io.PARTS, io.PERSONS))


def challenge_pieces(persons: PersonInstances, part_score: str = "person", score_thresh: float = 0.0,
                     semantic_thresh: float | None = None) -> dict:
    """What :func:`~hparse.io.instance_outputs.write_instance_outputs` would write for ``persons``, as
    read back: ``sem_seg``, ``part_instances``, ``humans`` (PartInstances id map) and ``persons``."""
    if persons.parsings is None:
        persons = replace(persons, parsings=persons.full_parsings(), roi_parsings=None)
    visible = io._nonempty(persons, score_thresh)        # the people person_parsing/ holds
    return {"sem_seg": persons.to_semantic(score_thresh if semantic_thresh is None else semantic_thresh),
            "part_instances": persons.to_part_instances(score=part_score, score_thresh=score_thresh).relabel(),
            "humans": io.human_instances(persons, score_thresh).relabel(),
            "persons": visible}


def _pack_parts(p: PartInstances) -> Packed:
    return Packed(PartInstances, ids=p.ids, classes=p.classes, scores=p.scores, instance_ids=p.instance_ids)


def _persons(image_size, scores, parsings) -> PersonInstances:
    return PersonInstances(image_size, boxes=np.zeros((len(scores), 4), np.float32), scores=scores, parsings=parsings)


def _humans_as_persons(ids, classes, scores, instance_ids) -> PersonInstances:
    """Human id map -> people whose parsing is their mask (what the mask AP reads)."""
    h = PartInstances(ids, classes, scores, instance_ids)
    return _persons(h.image_size, h.scores, h.masks().astype(np.uint8))


def _same(array: np.ndarray) -> np.ndarray:
    return array


# -- the result ------------------------------------------------------------------------------------

@dataclass
class InstanceScores:
    """What the ``instance`` evaluator measured (None: not evaluated, see ``notes``)."""

    label_set: str
    split: str | None
    num_images: int
    parts: PartAPResult | None = None
    persons: PersonAPResult | None = None
    humans: MaskAPResult | None = None
    semantic: object | None = None                  # hparse.metrics.semantic.SemanticScores
    missing: dict[str, int] = field(default_factory=dict)   # folder -> images without a prediction
    notes: list[str] = field(default_factory=list)

    def summary(self) -> dict:
        """One flat dict: APr50/60/70/_vol, APp50/_vol, PCP50, APh/APh50/APh75, miou (fractions)."""
        out = {}
        for r in (self.parts, self.persons, self.humans):
            if r is not None:
                out.update(r.summary())
        if self.semantic is not None:
            out["miou"] = self.semantic.miou
        return out

    def to_dict(self) -> dict:
        def clean(v):
            return None if isinstance(v, float) and v != v else v

        return {"label_set": self.label_set, "split": self.split, "num_images": self.num_images,
                "summary": {k: clean(float(v)) for k, v in self.summary().items()},
                "part_ap": self.parts.to_dict() if self.parts else None,
                "person_ap": self.persons.to_dict() if self.persons else None,
                "mask_ap": self.humans.to_dict() if self.humans else None,
                "semantic": self.semantic.to_dict() if self.semantic is not None else None,
                "missing": self.missing, "notes": self.notes}

    def format_table(self) -> str:
        blocks = [r.format_table() for r in (self.parts, self.persons, self.humans, self.semantic)
                  if r is not None]
        blocks += [f"note: {n}" for n in self.notes]
        return "\n\n".join(blocks)


# -- the evaluator -----------------------------------------------------------------------------------

@EVALUATORS.register("instance")
class InstanceEvaluator(Evaluator):
    """AP^r, AP^p / PCP, APh and mIoU of instance predictions (see the module docstring).

    Options: ``thresholds`` (AP^r / AP^p IoU thresholds), ``convention`` (mIoU), ``one_to_one`` (AP^r
    with VOC matching), ``official_image_list`` (AP^r leaves out images without a prediction),
    ``person_background`` ("include": the official AP^p IoU mean), and for ``outputs["instances"]`` the
    writer's ``part_score``, ``score_thresh``, ``semantic_thresh``.
    """

    output_keys = ("instances",)
    summary_keys = ("APr50", "APr60", "APr70", "APr_vol", "APp50", "APp_vol", "PCP50", "APh", "APh50", "APh75",
                    "miou")

    def __init__(self, meta, thresholds=PARSING_THRESHOLDS, convention: str = "ce2p", one_to_one: bool = False,
                 official_image_list: bool = True, person_background: str = "include", part_score: str = "person",
                 score_thresh: float = 0.0, semantic_thresh: float | None = None):
        if person_background not in ("include", "exclude"):
            raise ConfigError(f"person_background must be 'include' or 'exclude', got {person_background!r}")
        if part_score not in ("person", "part"):
            raise ConfigError(f"part_score must be 'person' or 'part', got {part_score!r}")
        self.thresholds, self.convention = tuple(thresholds), check_convention(convention)
        self.one_to_one, self.official_image_list = bool(one_to_one), bool(official_image_list)
        self.person_background = person_background
        self.piece_options = dict(part_score=part_score, score_thresh=score_thresh, semantic_thresh=semantic_thresh)
        super().__init__(meta)

    def reset(self) -> None:
        super().reset()
        self.active: list[str] | None = None            # the folders scored, from the first image
        self.preds: dict[str, list] = {f: [] for f in io.FOLDERS}
        self.gts: dict[str, list] = {f: [] for f in io.FOLDERS}
        self.no_gt: set[str] = set()
        self.missing = dict.fromkeys(io.FOLDERS, 0)
        self.confusion = ConfusionMatrix(self.meta.num_classes, self.meta.ignore_index)

    def process_image(self, sample: dict, output: dict) -> None:
        pieces = challenge_pieces(output["instances"], **self.piece_options) if "instances" in output else output
        if self.active is None:
            self.active = [f for f in PIECES if PIECES[f] in pieces]
            if not self.active:
                raise ConfigError(f"instance evaluator needs outputs['instances'] or the pieces "
                                  f"{', '.join(PIECES.values())}; image {sample.get('id')!r} has "
                                  f"{', '.join(output) or 'nothing'}")
        add = {io.PARTS: self._add_parts, io.PERSONS: self._add_persons, io.HUMANS: self._add_humans,
               io.GLOBAL: self._add_semantic}
        for folder in self.active:
            pred = pieces.get(PIECES[folder])
            self.missing[folder] += pred is None
            if folder not in self.no_gt:
                add[folder](sample, pred)

    def _no_gt(self, folder: str) -> None:
        self.no_gt.add(folder)
        self.preds[folder], self.gts[folder] = [], []

    def _add_parts(self, sample: dict, pred: PartInstances | None) -> None:
        gt = ground_truth_parts(sample, self.meta.num_classes)
        if gt is None:
            return self._no_gt(io.PARTS)
        if pred is None and not self.official_image_list:
            pred = PartInstances(np.zeros(sample["image"].shape[:2], np.uint8), [], [])
        self.preds[io.PARTS].append(None if pred is None else _pack_parts(pred))
        self.gts[io.PARTS].append(_pack_parts(gt))

    def _add_persons(self, sample: dict, pred: PersonInstances | None) -> None:
        gt = ground_truth_persons(sample, self.meta.num_classes)
        if gt is None:
            return self._no_gt(io.PERSONS)
        self.preds[io.PERSONS].append(None if pred is None else Packed(
            _persons, image_size=tuple(pred.image_size), scores=np.asarray(pred.scores), parsings=pred.full_parsings()))
        self.gts[io.PERSONS].append(Packed(_same, array=gt))

    def _add_humans(self, sample: dict, pred: PartInstances | None) -> None:
        if "human_ids" not in sample:
            return self._no_gt(io.HUMANS)
        self.preds[io.HUMANS].append(None if pred is None else Packed(
            _humans_as_persons, ids=pred.ids, classes=pred.classes, scores=pred.scores, instance_ids=pred.instance_ids))
        self.gts[io.HUMANS].append(Packed(human_masks, human_ids=sample["human_ids"]))

    def _add_semantic(self, sample: dict, pred: np.ndarray | None) -> None:
        if "label" not in sample:
            return self._no_gt(io.GLOBAL)
        self.confusion.update(np.zeros(sample["label"].shape, np.uint8) if pred is None else pred, sample["label"])

    def result(self) -> InstanceScores:
        res = InstanceScores(self.meta.name, None, self.num_images)
        res.notes += [f"{f}/ not in the predictions: {_WHAT[f]} skipped" for f in io.FOLDERS if f not in self.active]
        for folder in self.active:
            if folder in self.no_gt:
                res.notes.append(f"the {self.meta.name} samples have no {_GT_KIND[folder]}: {_WHAT[folder]} skipped")
                continue
            how = self._score(folder, res, Unpacked(self.preds[folder]), Unpacked(self.gts[folder]))
            _note_missing(res, folder, self.missing[folder], self.num_images, how)
        return res

    def _score(self, folder: str, res: InstanceScores, preds: Sequence, gts: Sequence) -> str:
        """Score one folder's predictions into ``res``; returns what a missing prediction counted as."""
        nc = self.meta.num_classes
        if folder == io.PARTS:
            res.parts = part_ap(preds, gts, nc, self.thresholds, one_to_one=self.one_to_one,
                                class_names=self.meta.classes)
            return "left out, as the CIHP script does" if self.official_image_list else _MISSED
        if folder == io.PERSONS:
            res.persons = person_ap(preds, gts, nc, self.thresholds, background=self.person_background)
            return _MISSED
        if folder == io.HUMANS:
            res.humans = mask_ap(preds, gts)
            return _MISSED
        res.semantic = semantic_scores(self.confusion.matrix, self.convention, self.meta.classes)
        return "scored as background"


def _note_missing(res: InstanceScores, folder: str, count: int, n: int, how: str) -> None:
    res.missing[folder] = count
    if count:
        res.notes.append(f"{count} of {n} images have no prediction in {folder}/ ({how})")
        log.warning("%d of %d images have no prediction in %s/ (%s)", count, n, folder, how)
