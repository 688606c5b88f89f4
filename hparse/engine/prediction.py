"""One image's result as the writers (``hparse parse``, the service) see it: :func:`as_prediction` turns a
predictor's label map or :class:`~hparse.structures.PersonInstances` into a :class:`Prediction` -- the one place
where semantic and instance models part."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import ClassVar

import numpy as np

from ..io.instance_outputs import numbered_people, person_map_order
from ..structures import PersonInstances, score_at_least
from ..viz import PeopleMarks

SEMANTIC_SCORE_THRESH = 0.3      # instance models: people in the label PNG, overlay and sidecar (SEMSEG_SCORE_THRESH)


@dataclass
class Prediction:
    """A semantic model's result for one image, as the writers see it."""

    label: np.ndarray                     # HxW class ids
    probs: np.ndarray | None = None
    people: ClassVar[bool] = False        # an instance model's result (challenge folders, outlines)

    def marks(self) -> PeopleMarks | None:
        """The people to outline on the overlay."""
        return None

    def summary(self, classes, map_path: Callable[[int], str] | None = None) -> dict:
        """What the JSON sidecar adds for the people; ``map_path(k)``: where person map k lies."""
        return {}


@dataclass
class PeoplePrediction(Prediction):
    """An instance model's result: ``label`` is the global parsing at ``min_score``; ``persons`` all the people as
    the model gave them (parsings pasted), ``order`` their indices by descending score (ties keep their order).
    Per pixel ``owner`` is 1 + the index of the person on top (0: nobody; higher scores on top), in the smallest
    unsigned type that holds it. Per person: ``ids`` its number k in ``instance_segmentation`` (1 = highest score;
    0: no visible pixel), ``maps`` its number k in ``person_parsing`` (0: empty parsing), ``pixels`` its visible
    pixels per class of ``label``."""

    persons: PersonInstances | None = None
    min_score: float = SEMANTIC_SCORE_THRESH
    order: np.ndarray | None = None
    owner: np.ndarray | None = None
    ids: np.ndarray | None = None
    maps: np.ndarray | None = None
    pixels: np.ndarray | None = None
    people: ClassVar[bool] = True

    def shown(self) -> list[int]:
        """Indices of the people shown (score >= ``min_score``, a visible pixel), by id."""
        keep = (self.ids > 0) & score_at_least(self.persons.scores, self.min_score)
        return sorted(np.flatnonzero(keep).tolist(), key=lambda i: self.ids[i])

    def person_maps(self) -> int:
        """How many people have a non-empty parsing (the maps of ``person_parsing``)."""
        return int(np.count_nonzero(self.maps))

    def _caption(self, i: int) -> str:
        return f"{self.ids[i]} {float(self.persons.scores[i]):.2f}"

    def marks(self) -> PeopleMarks:
        shown = self.shown()
        return PeopleMarks(self.owner, [i + 1 for i in shown], [self.persons.boxes[i] for i in shown],
                           [self._caption(i) for i in shown])

    def _person(self, i: int, classes, map_path: Callable[[int], str] | None) -> dict:
        entry = {"id": int(self.ids[i]), "box": [float(v) for v in self.persons.boxes[i]],
                 "score": float(self.persons.scores[i])}
        if self.persons.quality is not None:
            entry["quality"] = float(self.persons.quality[i])
        counts = self.pixels[i]
        entry["pixels"] = {classes[c]: int(counts[c]) for c in np.flatnonzero(counts)}
        k = int(self.maps[i])
        entry["person_map"] = map_path(k) if k and map_path is not None else None
        return entry

    def summary(self, classes, map_path: Callable[[int], str] | None = None) -> dict:
        return {"min_score": self.min_score, "persons": [self._person(i, classes, map_path) for i in self.shown()]}


def as_prediction(result, probs: np.ndarray | None, min_score: float) -> Prediction:
    """A predictor's result (a label map, or :class:`PersonInstances`) for the writers: the one place where
    semantic and instance models part. The people's parsings are pasted once and never copied; one painting
    gives the global parsing and the owner map, one :func:`numpy.bincount` every person's pixels per class."""
    if not isinstance(result, PersonInstances):
        return Prediction(result, probs)
    persons = replace(result, parsings=result.full_parsings(), roi_parsings=None)
    parsings, n = persons.parsings, len(persons)
    scores = np.asarray(persons.scores, np.float64)
    order = np.argsort(-scores, kind="stable")
    label, owner = _paint_people(parsings, np.argsort(scores, kind="stable"), score_at_least(persons.scores, min_score))
    classes = int(label.max(initial=0)) + 1
    key = owner.astype(np.intp)
    key *= classes
    key += label
    pixels = np.bincount(key.reshape(-1), minlength=(n + 1) * classes).reshape(n + 1, classes)[1:]
    # instance_segmentation's numbers (io.human_instances does the same painting, of the masks when the model
    # predicts them): people visible there with a score >= 0 (what human_instances keeps at its threshold 0)
    visible = pixels.sum(1) > 0 if persons.masks is None else _visible_masks(persons, np.argsort(scores, kind="stable"))
    present = numbered_people(np.argsort(scores, kind="stable"), visible & (scores >= 0.0))
    ids = np.zeros(n, np.int64)
    ids[np.array(present, np.int64)] = np.arange(1, len(present) + 1)
    maps = np.zeros(n, np.int64)
    written = person_map_order(persons, order=order)
    maps[written] = np.arange(1, len(written) + 1)
    return PeoplePrediction(label, probs, persons, min_score, order, owner, ids, maps, pixels)


def _visible_masks(persons: PersonInstances, ascending: np.ndarray) -> np.ndarray:
    """(N,) bool: the people whose mask keeps a pixel when painted in ``ascending`` order."""
    _, owner = persons.paint(persons.masks, ascending)
    return np.bincount(owner[owner >= 0], minlength=len(persons)) > 0


def _paint_people(parsings: np.ndarray, ascending: np.ndarray, semantic: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Paint the people in ``ascending`` order (the last wins): (class map of those with ``semantic``, owner map:
    1 + the person's index, 0 = nobody)."""
    n, h, w = parsings.shape
    label, owner = np.zeros((h, w), np.uint8), np.zeros((h, w), np.min_scalar_type(n))
    fg = np.empty((h, w), bool)
    for k in ascending:
        np.greater(parsings[k], 0, out=fg)
        owner[fg] = k + 1
        if semantic[k]:
            np.copyto(label, parsings[k], where=fg)
    return label, owner
