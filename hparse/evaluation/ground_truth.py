"""A sample's instance ground truth in the forms the instance metrics take (reader samples as input:
``person_labels``, ``human_ids``, ``label`` and, for CIHP, ``instance_ids`` + ``instances``)."""

from __future__ import annotations

import numpy as np

from ..errors import DataError
from ..structures import PartInstances, PersonInstances


def clean_person_label(label: np.ndarray, num_classes: int) -> np.ndarray:
    """Person label map with ignore / out-of-range values (e.g. 255) set to background."""
    return np.where(label < num_classes, label, 0).astype(np.uint8)


def ground_truth_instances(sample: dict, num_classes: int | None = None) -> PersonInstances:
    """A sample's people as a :class:`PersonInstances` with score 1: one full-image part map per
    ``person_labels`` entry (values >= ``num_classes``, e.g. 255, become background)."""
    if "person_labels" not in sample:
        raise DataError(f"sample {sample.get('id')!r} has no per-person ground truth (person_labels)")
    maps = sample["person_labels"]
    if num_classes is not None:
        maps = [clean_person_label(p, num_classes) for p in maps]
    return PersonInstances.from_person_labels(maps, image_size=sample["image"].shape[:2])


def ground_truth_persons(sample: dict, num_classes: int, ignore_index: int = 255) -> np.ndarray | None:
    """``(M, H, W)`` part maps of the people (the AP^p / PCP ground truth; None without them): ignore pixels kept
    (the metric drops them, as the official scripts do), other out-of-range values background."""
    if "person_labels" not in sample:
        return None
    maps = [np.where(p == ignore_index, p, clean_person_label(p, num_classes)).astype(np.uint8)
            for p in sample["person_labels"]]
    return np.stack(maps) if maps else np.zeros((0, *sample["image"].shape[:2]), np.uint8)


def parts_of_people(label: np.ndarray, human_ids: np.ndarray) -> PartInstances:
    """One part instance per (person, class) present, ids 1..K in (person, class) order, score 1."""
    fg = (human_ids > 0) & (label > 0)
    uniq, inverse = np.unique(human_ids[fg].astype(np.int64) * 256 + label[fg], return_inverse=True)
    ids = np.zeros(label.shape, np.int32)
    ids[fg] = inverse.reshape(-1) + 1
    return PartInstances(ids=ids, classes=uniq % 256, scores=np.ones(len(uniq)))


def ground_truth_parts(sample: dict, num_classes: int) -> PartInstances | None:
    """Part-instance ground truth: ``instance_ids`` + ``instances`` when the dataset has them, else
    one instance per (person, class) of ``label`` x ``human_ids`` (None without either)."""
    if "instance_ids" in sample and "instances" in sample:
        return PartInstances.from_cihp(sample["instance_ids"], sample["instances"])
    if "label" in sample and "human_ids" in sample:
        return parts_of_people(clean_person_label(sample["label"], num_classes), sample["human_ids"])
    return None


def human_masks(human_ids: np.ndarray) -> np.ndarray:
    """``(M, H, W)`` bool masks of the people 1..M of a human-id map."""
    return human_ids[None] == np.arange(1, int(human_ids.max(initial=0)) + 1, dtype=human_ids.dtype)[:, None, None]
