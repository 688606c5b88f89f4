"""Scoring instance-level predictions from files (the challenge folders of
:mod:`hparse.io.instance_outputs`) against a dataset with instance ground truth (CIHP, LV-MHP-v2,
VIP, or composed data in the CIHP layout).

Per prediction folder present under ``pred_root``:

=========================  =====================================================================
folder                     scored as
=========================  =====================================================================
``instance_parsing/``      CIHP part-instance AP^r (:func:`hparse.metrics.instance.part_ap`) against
                           ``Instance_ids`` + ``.txt`` (or, without them, one instance per
                           (person, class) of ``label`` x ``human_ids``, e.g. LV-MHP-v2)
``person_parsing/``        MHP AP^p and PCP (:func:`~hparse.metrics.instance.person_ap`) against the
                           per-person label maps ``person_labels``
``instance_segmentation/`` COCO-style human mask AP (:func:`~hparse.metrics.instance.mask_ap`)
                           against the masks of ``human_ids``
``global_parsing/``        mIoU etc. by :func:`hparse.engine.evaluate.evaluate_folder`
=========================  =====================================================================

A folder that is absent is skipped with a note. As for semantic scoring, the ground-truth list
drives everything: an image with no prediction file counts its ground truth as missed (notes say
how many), except for AP^r, which by default follows the CIHP script (``official_image_list=True``:
an image without a prediction ``.txt`` is left out, ground truth included; ``False`` counts it).
Each metric reads the samples in its own pass (one image in memory at a time), so memory does not grow with the dataset.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ..errors import DataError
from ..io import instance_outputs as io
from ..metrics.instance import PARSING_THRESHOLDS, MaskAPResult, PartAPResult, PersonAPResult
from ..metrics.instance import mask_ap as _mask_ap
from ..metrics.instance import part_ap as _part_ap
from ..metrics.instance import person_ap as _person_ap
from ..structures import PartInstances, PersonInstances
from .evaluate import evaluate_folder

log = logging.getLogger("hparse.eval")


def is_instance_folder(pred_root: str | Path) -> bool:
    """True when ``pred_root`` holds ``instance_parsing/`` or ``person_parsing/`` (auto-detection)."""
    return any((Path(pred_root) / f).is_dir() for f in (io.PARTS, io.PERSONS))


# -- ground truth ---------------------------------------------------------------------------

def _clean(label: np.ndarray, num_classes: int) -> np.ndarray:
    """Person label map with ignore / out-of-range values (e.g. 255) set to background."""
    return np.where(label < num_classes, label, 0).astype(np.uint8)


def ground_truth_instances(sample: dict, num_classes: int | None = None) -> PersonInstances:
    """A sample's people as a :class:`PersonInstances` with score 1: one full-image part map per
    ``person_labels`` entry (values >= ``num_classes``, e.g. 255, become background)."""
    if "person_labels" not in sample:
        raise DataError(f"sample {sample.get('id')!r} has no per-person ground truth (person_labels)")
    size = sample["image"].shape[:2]
    maps = sample["person_labels"]
    if num_classes is not None:
        maps = [_clean(p, num_classes) for p in maps]
    return PersonInstances.from_person_labels(maps, image_size=size)


def ground_truth_parts(sample: dict, num_classes: int) -> PartInstances | None:
    """Part-instance ground truth: ``instance_ids`` + ``instances`` when the dataset has them, else
    one instance per (person, class) of ``label`` x ``human_ids`` (None without either)."""
    if "instance_ids" in sample and "instances" in sample:
        return PartInstances.from_cihp(sample["instance_ids"], sample["instances"])
    if "label" in sample and "human_ids" in sample:
        from ..data.compose import part_instances

        inst, rows = part_instances(_clean(sample["label"], num_classes), sample["human_ids"], num_classes,
                                    "consecutive")
        return PartInstances.from_cihp(inst, rows)
    return None


def ground_truth_humans(sample: dict) -> np.ndarray | None:
    """``(M, H, W)`` bool masks of ``human_ids`` 1..M (None without human ids)."""
    if "human_ids" not in sample:
        return None
    h = sample["human_ids"]
    return h[None] == np.arange(1, int(h.max(initial=0)) + 1, dtype=h.dtype)[:, None, None]


def write_ground_truth_predictions(reader, out_root: str | Path, folders: Sequence[str] = io.FOLDERS,
                                   progress: bool = True) -> Path:
    """Write every sample's ground truth, as :func:`ground_truth_instances` (score 1), as a
    prediction folder (``hparse.io.instance_outputs``): a perfect prediction, for testing the
    scoring pipeline and as a reference for the file formats."""
    out_root = Path(out_root)
    for i in tqdm(range(len(reader)), desc="write ground truth", disable=not progress, leave=False):
        s = reader[i]
        persons = ground_truth_instances(s, reader.meta.num_classes)
        io.write_instance_outputs(out_root, s["id"], persons, reader.meta, folders=folders)
    return out_root


# -- lazy per-image sequences (one sample in memory at a time) --------------------------------

class _Samples:
    """``reader[i]`` with a one-sample cache, shared by the prediction and ground-truth sequences."""

    def __init__(self, reader, desc: str, progress: bool):
        self.reader, self._i, self._s = reader, None, None
        self.bar = tqdm(total=len(reader), desc=desc, disable=not progress, leave=False)

    def __call__(self, i: int) -> dict:
        if self._i != i:
            self._i, self._s = i, self.reader[i]
            self.bar.update(1)
        return self._s

    def close(self):
        self.bar.close()


class _Lazy(Sequence):
    def __init__(self, n: int, fn: Callable[[int], object]):
        self.n, self.fn = n, fn

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i):
        if not 0 <= i < self.n:
            raise IndexError(i)
        return self.fn(i)


def _check_size(path: Path, shape, sample: dict) -> None:
    size = sample["image"].shape[:2]
    if tuple(shape) != tuple(size):
        raise DataError(f"{path}: prediction is {shape[1]}x{shape[0]} but the image is {size[1]}x{size[0]}; "
                        "predictions must have the original image size")


# -- results --------------------------------------------------------------------------------

@dataclass
class InstanceScores:
    """What :func:`evaluate_instance_folder` measured (None: not evaluated, see ``notes``)."""

    label_set: str
    split: str
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


# -- the evaluation -------------------------------------------------------------------------

def evaluate_instance_folder(pred_root: str | Path, reader, thresholds=PARSING_THRESHOLDS,
                             convention: str = "ce2p", one_to_one: bool = False,
                             official_image_list: bool = True, person_background: str = "include",
                             progress: bool = True) -> InstanceScores:
    """Score the challenge folders under ``pred_root`` against every sample of ``reader``
    (see the module docstring). Returns :class:`InstanceScores`."""
    root = Path(pred_root)
    if not root.is_dir():
        raise DataError(f"{root}: prediction folder not found")
    present = io.present_folders(root)
    if not present:
        raise DataError(f"{root}: none of the folders {', '.join(io.FOLDERS)} found")
    meta, n = reader.meta, len(reader)
    res = InstanceScores(meta.name, reader.split, n)
    for f in io.FOLDERS:
        if f not in present:
            res.notes.append(f"{f}/ not in {root}: {_WHAT[f]} skipped")
    ids = [it.id for it in reader.items]

    if io.PARTS in present:
        res.parts = _score_parts(root, reader, ids, thresholds, one_to_one, official_image_list, res, progress)
    if io.PERSONS in present:
        res.persons = _score_persons(root, reader, ids, thresholds, person_background, res, progress)
    if io.HUMANS in present:
        res.humans = _score_humans(root, reader, ids, res, progress)
    if io.GLOBAL in present:
        _, res.semantic, missing = evaluate_folder(root / io.GLOBAL, reader, convention, progress=progress)
        _missing(res, io.GLOBAL, len(missing), n, "scored as background")
    return res


_WHAT = {io.GLOBAL: "mIoU", io.PARTS: "part-instance AP^r", io.HUMANS: "human mask AP",
         io.PERSONS: "AP^p / PCP"}


def _missing(res: InstanceScores, folder: str, count: int, n: int, how: str) -> None:
    res.missing[folder] = count
    if count:
        res.notes.append(f"{count} of {n} images have no prediction in {folder}/ ({how})")
        log.warning("%d of %d images have no prediction in %s/ (%s)", count, n, folder, how)


def _score(reader, ids, what: str, folder: str, metric, gt, pred, res, progress, how: str, on_missing=None):
    """Run ``metric(preds, gts)`` over lazy per-image sequences (one sample in memory at a time).

    ``gt(sample)`` raises :class:`_NoGT` when the dataset lacks that ground truth (the metric is skipped
    with a note); ``pred(sample, id)`` returns None for a missing prediction, replaced by
    ``on_missing(sample)`` when given. Missing predictions are counted in ``res`` (``how`` says their fate).
    """
    samples = _Samples(reader, what, progress)
    missing = []

    def pred_i(i):
        s = samples(i)
        p = pred(s, ids[i])
        if p is None:
            missing.append(ids[i])
            return on_missing(s) if on_missing else None
        return p

    try:
        out = metric(_Lazy(len(ids), pred_i), _Lazy(len(ids), lambda i: gt(samples(i))))
    except _NoGT as e:
        res.notes.append(f"{reader.meta.name} {reader.split} has no {e}: {what} skipped")
        return None
    finally:
        samples.close()
    _missing(res, folder, len(missing), len(ids), how)
    return out


def _score_parts(root, reader, ids, thresholds, one_to_one, official, res, progress) -> PartAPResult | None:
    nc = reader.meta.num_classes

    def gt(s):
        g = ground_truth_parts(s, nc)
        if g is None:
            raise _NoGT("part-instance ground truth")
        return g

    def pred(s, image_id):
        p = io.read_part_instances(root, image_id)
        if p is not None:
            _check_size(io._path(root, io.PARTS, image_id, ".png"), p.ids.shape, s)
        return p

    def metric(preds, gts):
        return _part_ap(preds, gts, nc, thresholds, one_to_one=one_to_one, class_names=reader.meta.classes)

    return _score(reader, ids, "AP^r", io.PARTS, metric, gt, pred, res, progress,
                  "left out, as the CIHP script does" if official else "their ground truth counts as missed",
                  None if official else lambda s: PartInstances(np.zeros(s["image"].shape[:2], np.uint8), [], []))


def _score_persons(root, reader, ids, thresholds, background, res, progress) -> PersonAPResult | None:
    nc = reader.meta.num_classes

    def gt(s):
        if "person_labels" not in s:
            raise _NoGT("per-person ground truth")
        maps = [_clean(p, nc) for p in s["person_labels"]]
        return np.stack(maps) if maps else np.zeros((0, *s["image"].shape[:2]), np.uint8)

    def pred(s, image_id):
        p = io.read_person_parsing(root, image_id, image_size=s["image"].shape[:2])
        if p is not None and len(p):
            _check_size(io._path(root, io.PERSONS, f"{image_id}_1", ".png"), p.image_size, s)
            if p.parsings.max() >= nc:
                raise DataError(f"{io._path(root, io.PERSONS, image_id, '.txt')}: a person map holds class "
                                f"{int(p.parsings.max())}, outside the {nc} classes of {reader.meta.name}")
        return p

    def metric(preds, gts):
        return _person_ap(preds, gts, nc, thresholds, background=background)

    return _score(reader, ids, "AP^p", io.PERSONS, metric, gt, pred, res, progress,
                  "their ground truth counts as missed")


def _score_humans(root, reader, ids, res, progress) -> MaskAPResult | None:
    def gt(s):
        g = ground_truth_humans(s)
        if g is None:
            raise _NoGT("human ids")
        return g

    def pred(s, image_id):
        h = io.read_human_instances(root, image_id)
        if h is None:
            return None
        _check_size(io._path(root, io.HUMANS, image_id, ".png"), h.ids.shape, s)
        return PersonInstances(image_size=h.image_size, boxes=np.zeros((len(h), 4), np.float32),
                               scores=h.scores.astype(np.float32), parsings=h.masks().astype(np.uint8))

    return _score(reader, ids, "human mask AP", io.HUMANS, _mask_ap, gt, pred, res, progress,
                  "their ground truth counts as missed")


class _NoGT(Exception):
    """The dataset has no ground truth of the kind a metric needs."""
