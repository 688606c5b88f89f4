"""Instance-level results: the detected people of one image, shared by models, metrics and writers.

A :class:`PersonInstances` holds N people: boxes ``(N, 4)`` as ``x1, y1, x2, y2`` in image pixels
(float, x2/y2 exclusive), scores ``(N,)`` and their part parsing, either at image resolution
(``parsings``: ``(N, H, W)`` uint8, 0 outside the person) or at RoI resolution (``roi_parsings``:
``(N, h, w)`` uint8 over each box, pasted on demand by :meth:`PersonInstances.full_parsings`).
Optional: ``part_scores`` ``(N, C)`` per-person, per-class confidences (for part-instance scores)
and ``quality`` ``(N,)`` (e.g. AIParsing's parsing-quality score, already folded into ``scores``
or not, as the model says). Everything is numpy so metrics and writers need no torch.

A :class:`PartInstances` holds the part instances of one image in the CIHP ``Instance_ids`` sense
(an id map plus one class and score per id); :meth:`PersonInstances.to_part_instances` derives
them from people, :meth:`PartInstances.from_cihp` reads CIHP ground truth.

Ties between equal scores are broken by index everywhere here: among equal scores the person
with the *higher* index paints last (wins pixels) and comes first in descending order.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

MAX_PART_INSTANCES = 255  # ids of the CIHP / LIP instance PNGs are uint8


def score_at_least(scores, thresh: float) -> np.ndarray:
    """``scores >= thresh`` compared in the scores' own float type (a float32 score 0.9 passes 0.9)."""
    s = np.asarray(scores)
    if s.dtype.kind != "f":
        s = s.astype(np.float64)
    return s >= s.dtype.type(thresh)


def _rank_desc(scores: np.ndarray) -> np.ndarray:
    """Indices by descending score; among ties the higher index first (reverse of a stable ascending sort)."""
    return np.argsort(np.asarray(scores, np.float64), kind="stable")[::-1]


@dataclass
class PersonInstances:
    image_size: tuple[int, int]                       # (H, W)
    boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), np.float32))
    scores: np.ndarray = field(default_factory=lambda: np.zeros((0,), np.float64))  # kept float64: no new ties
    parsings: np.ndarray | None = None                # (N, H, W) uint8 part labels, 0 outside the person
    roi_parsings: np.ndarray | None = None            # (N, h, w) uint8 part labels over each box
    part_scores: np.ndarray | None = None             # (N, C) per-class confidences
    quality: np.ndarray | None = None                 # (N,) optional quality score
    masks: np.ndarray | None = None                   # (N, H, W) bool person masks; None: the parsings' foreground

    def __len__(self) -> int:
        return len(self.scores)

    # -- construction ----------------------------------------------------------------------
    @classmethod
    def from_person_labels(cls, person_labels, scores=None, image_size: tuple[int, int] | None = None
                           ) -> PersonInstances:
        """Ground truth as a prediction: one person per HxW label map (list or ``(M, H, W)`` array).

        Boxes are the tight boxes of each map's non-zero pixels (``x2``/``y2`` exclusive; an empty
        map gets a zero box), scores default to 1 and are kept as float64 (rounding them to float32 would
        tie scores that differ). ``image_size`` is needed only for an empty list.
        """
        maps = [np.asarray(p) for p in person_labels]
        if maps:
            size = maps[0].shape[:2]
            if any(m.shape != size for m in maps):
                raise ValueError(f"person label maps differ in size: {sorted({m.shape for m in maps})}")
            parsings = np.stack(maps).astype(np.uint8)
        elif image_size is not None:
            size = tuple(image_size)
            parsings = np.zeros((0, *size), np.uint8)
        else:
            raise ValueError("from_person_labels needs image_size when person_labels is empty")
        n = len(maps)
        fg = parsings > 0
        boxes = np.zeros((n, 4), np.float32)
        for k in range(n):
            rows, cols = np.flatnonzero(fg[k].any(1)), np.flatnonzero(fg[k].any(0))
            if rows.size:
                boxes[k] = (cols[0], rows[0], cols[-1] + 1, rows[-1] + 1)
        s = np.ones(n, np.float64) if scores is None else np.asarray(scores, np.float64).reshape(-1)
        if len(s) != n:
            raise ValueError(f"{len(s)} scores for {n} persons")
        return cls(image_size=(int(size[0]), int(size[1])), boxes=boxes, scores=s, parsings=parsings)

    def rescaled(self, valid_size: tuple[int, int], image_size: tuple[int, int]) -> PersonInstances:
        """From a network input whose top-left ``valid_size`` (h, w) holds the image, to the image's
        ``image_size`` (H, W): boxes scaled, full-size parsings cropped and resized (nearest)."""
        (h, w), (H, W) = valid_size, image_size
        boxes = np.asarray(self.boxes, np.float32) * np.array([W / w, H / h, W / w, H / h], np.float32)
        rows = np.minimum(((np.arange(H) + 0.5) * h / H).astype(np.int64), h - 1)
        cols = np.minimum(((np.arange(W) + 0.5) * w / W).astype(np.int64), w - 1)

        def resized(maps):
            return None if maps is None else np.ascontiguousarray(maps[:, rows][:, :, cols])

        return PersonInstances(image_size=(int(H), int(W)), boxes=boxes, scores=self.scores,
                               parsings=resized(self.parsings), roi_parsings=self.roi_parsings,
                               part_scores=self.part_scores, quality=self.quality, masks=resized(self.masks))

    def select(self, mask_or_idx) -> PersonInstances:
        """The persons picked by a boolean mask ``(N,)`` or an index array / list / int (in that order)."""
        idx = np.asarray(mask_or_idx)
        if idx.dtype == bool:
            if idx.shape != (len(self),):
                raise ValueError(f"boolean selection of shape {idx.shape} for {len(self)} persons")
            idx = np.flatnonzero(idx)
        idx = idx.reshape(-1).astype(np.int64)

        def take(a):
            return None if a is None else np.asarray(a)[idx]

        return PersonInstances(image_size=tuple(self.image_size), boxes=np.asarray(self.boxes)[idx],
                               scores=np.asarray(self.scores)[idx], parsings=take(self.parsings),
                               roi_parsings=take(self.roi_parsings), part_scores=take(self.part_scores),
                               quality=take(self.quality), masks=take(self.masks))

    # -- derived maps ----------------------------------------------------------------------
    def full_parsings(self) -> np.ndarray:
        """``(N, H, W)`` uint8 part labels at image resolution, 0 outside each person.

        ``parsings`` when set; otherwise ``roi_parsings`` pasted into their boxes by nearest
        resize: image pixel ``(y, x)`` belongs to the box iff its centre ``(x + .5, y + .5)`` lies
        in ``[x1, x2) x [y1, y2)``, and it takes RoI cell ``floor((x + .5 - x1) / (x2 - x1) * w)``
        (same for rows). Parts of a box outside the image are cut off.
        """
        h, w = (int(v) for v in self.image_size)
        n = len(self)
        if self.parsings is not None:
            p = np.asarray(self.parsings)
            if p.shape != (n, h, w):
                raise ValueError(f"parsings of shape {p.shape}, expected {(n, h, w)}")
            return p.astype(np.uint8, copy=False)
        out = np.zeros((n, h, w), np.uint8)
        if n == 0:
            return out
        if self.roi_parsings is None:
            raise ValueError("PersonInstances has neither parsings nor roi_parsings")
        rois = np.asarray(self.roi_parsings)
        boxes = np.asarray(self.boxes, np.float64).reshape(-1, 4)
        if len(rois) != n or len(boxes) != n:
            raise ValueError(f"{len(rois)} roi_parsings and {len(boxes)} boxes for {n} persons")
        rh, rw = rois.shape[1:3]
        for k, (x1, y1, x2, y2) in enumerate(boxes):
            if not (x2 > x1 and y2 > y1):
                continue
            xs = np.arange(max(0, int(np.ceil(x1 - 0.5))), min(w, int(np.ceil(x2 - 0.5))))
            ys = np.arange(max(0, int(np.ceil(y1 - 0.5))), min(h, int(np.ceil(y2 - 0.5))))
            if xs.size == 0 or ys.size == 0:
                continue
            u = np.clip(np.floor((xs + 0.5 - x1) / (x2 - x1) * rw).astype(np.int64), 0, rw - 1)
            v = np.clip(np.floor((ys + 0.5 - y1) / (y2 - y1) * rh).astype(np.int64), 0, rh - 1)
            out[k, ys[0]:ys[-1] + 1, xs[0]:xs[-1] + 1] = rois[k][v[:, None], u[None, :]]
        return out

    def human_masks(self) -> np.ndarray:
        """``(N, H, W)`` bool: each person's mask when the model predicts one, else the non-background pixels
        of their parsing."""
        if self.masks is not None:
            return np.asarray(self.masks, bool)
        return self.full_parsings() > 0

    def paint(self, parsings: np.ndarray, order: np.ndarray):
        """Paint persons in ``order`` (last wins) -> (class map, owner map with -1 = nobody)."""
        h, w = parsings.shape[1:]
        sem, owner = np.zeros((h, w), np.uint8), np.full((h, w), -1, np.int64)
        for k in order:
            fg = parsings[k] > 0
            sem[fg] = parsings[k][fg]
            owner[fg] = k
        return sem, owner

    def to_semantic(self, score_thresh: float = 0.0) -> np.ndarray:
        """HxW uint8 global parsing: persons with ``score >= score_thresh`` painted in ascending score
        order, so where people overlap the highest score wins (AIParsing / Parsing R-CNN, with
        ``SEMSEG_SCORE_THRESH`` 0.3 on CIHP and 0.005 on LV-MHP-v2). Background where nobody is."""
        parsings = self.full_parsings()
        keep = np.flatnonzero(score_at_least(self.scores, score_thresh))
        order = keep[_rank_desc(np.asarray(self.scores)[keep])[::-1]]
        return self.paint(parsings, order)[0]

    def to_part_instances(self, score: str = "person", score_thresh: float = 0.0,
                          max_instances: int = MAX_PART_INSTANCES, overflow: str = "top") -> PartInstances:
        """Part instances (CIHP AP^r predictions): one per (person, class present in its pixels).

        A pixel belongs to the highest-scoring person covering it (the :meth:`to_semantic`
        painting), so instance masks never overlap; instances left with no pixel are dropped.
        Ids are 1..K in the order (person by descending score, class ascending). Scores are the
        person score (``score="person"``) or person score x ``part_scores[n, c]`` (``"part"``).
        Persons below ``score_thresh`` are left out. More than ``max_instances`` (255: the ids
        are uint8): ``overflow="top"`` keeps the highest-scoring ones (ties: lower id) and
        renumbers them in the same order, ``overflow="raise"`` raises ``ValueError``.
        """
        if score not in ("person", "part"):
            raise ValueError(f"score must be 'person' or 'part', got {score!r}")
        if overflow not in ("top", "raise"):
            raise ValueError(f"overflow must be 'top' or 'raise', got {overflow!r}")
        if score == "part" and self.part_scores is None and len(self):   # no people: nothing to score
            raise ValueError("score='part' needs part_scores")
        parsings = self.full_parsings()
        h, w = parsings.shape[1:]
        scores = np.asarray(self.scores, np.float64)
        keep = np.flatnonzero(score_at_least(self.scores, score_thresh))
        desc = keep[_rank_desc(scores[keep])]            # persons, best first
        _, owner = self.paint(parsings, desc[::-1])
        rank = np.zeros(len(self), np.int64)
        rank[desc] = np.arange(len(desc))
        fg = np.flatnonzero(owner >= 0)
        own = owner.reshape(-1)[fg]
        cls = parsings.reshape(len(self), h * w)[own, fg].astype(np.int64)
        key = rank[own] * 256 + cls
        uniq, inverse = np.unique(key, return_inverse=True)
        person, classes = desc[uniq // 256], uniq % 256
        if score == "person" or not len(self):
            inst_scores = scores[person]
        else:
            ps = np.asarray(self.part_scores, np.float64)
            if classes.size and classes.max() >= ps.shape[1]:
                raise ValueError(f"part_scores has {ps.shape[1]} classes but a parsing has class {classes.max()}")
            inst_scores = scores[person] * ps[person, classes]
        ids = np.zeros(h * w, np.int64)
        ids[fg] = inverse.reshape(-1) + 1
        k = len(uniq)
        if k > max_instances:
            if overflow == "raise":
                raise ValueError(f"{k} part instances, more than {max_instances} (ids must fit uint8)")
            top = np.sort(np.argsort(-inst_scores, kind="stable")[:max_instances])
            lut = np.zeros(k + 1, np.int64)
            lut[top + 1] = np.arange(1, len(top) + 1)
            ids = lut[ids]
            classes, inst_scores, person = classes[top], inst_scores[top], person[top]
            k = len(top)
        dtype = np.uint8 if k <= 255 else np.int32
        return PartInstances(ids=ids.reshape(h, w).astype(dtype), classes=classes.astype(np.int64),
                             scores=inst_scores.astype(np.float64), instance_ids=np.arange(1, k + 1))


@dataclass
class PartInstances:
    """Part instances of one image in the CIHP ``Instance_ids`` sense.

    ``ids`` is an HxW integer map, 0 = background and v = the instance with id v. The arrays
    ``instance_ids`` ``(K,)``, ``classes`` ``(K,)`` and ``scores`` ``(K,)`` describe the K
    instances and are kept sorted by ascending id. Ids may be sparse (CIHP ground truth uses
    ``(human_id - 1) * 20 + class_id``); ``instance_ids=None`` means ``1..K`` (so
    ``PartInstances(ids, classes, scores)`` works as in CIHP's prediction format, where line k of
    ``<id>.txt`` describes id k). Ground truth uses score 1. :meth:`relabel` makes the ids
    contiguous, as the CIHP prediction format needs.
    """

    ids: np.ndarray                                   # (H, W) integer map, 0 = background
    classes: np.ndarray                               # (K,) int part class of each instance
    scores: np.ndarray                                # (K,) float confidence
    instance_ids: np.ndarray | None = None            # (K,) int ids in ``ids``; None = 1..K

    def __post_init__(self):
        self.ids = np.asarray(self.ids)
        if self.ids.ndim != 2 or self.ids.dtype.kind not in "iu":
            raise ValueError(f"ids must be an HxW integer map, got {self.ids.dtype} {self.ids.shape}")
        if self.ids.size and self.ids.min() < 0:
            raise ValueError("ids map has negative values")
        self.classes = np.asarray(self.classes, np.int64).reshape(-1)
        self.scores = np.asarray(self.scores, np.float64).reshape(-1)
        k = len(self.classes)
        if len(self.scores) != k:
            raise ValueError(f"{k} classes but {len(self.scores)} scores")
        if self.instance_ids is None:
            self.instance_ids = np.arange(1, k + 1, dtype=np.int64)
        self.instance_ids = np.asarray(self.instance_ids, np.int64).reshape(-1)
        if len(self.instance_ids) != k:
            raise ValueError(f"{k} classes but {len(self.instance_ids)} instance ids")
        if k and self.instance_ids.min() < 1:
            raise ValueError("instance ids must be >= 1 (0 is background)")
        order = np.argsort(self.instance_ids, kind="stable")
        if np.any(np.diff(self.instance_ids[order]) == 0):
            raise ValueError("duplicate instance ids")
        if not np.array_equal(order, np.arange(k)):
            self.instance_ids, self.classes, self.scores = (self.instance_ids[order], self.classes[order],
                                                            self.scores[order])

    def __len__(self) -> int:
        return len(self.classes)

    @property
    def image_size(self) -> tuple[int, int]:
        return int(self.ids.shape[0]), int(self.ids.shape[1])

    @classmethod
    def from_cihp(cls, instance_ids_map, instances_rows) -> PartInstances:
        """Ground truth from CIHP ``Instance_ids/<id>.png`` and the rows "inst_id class_id human_id"
        of ``<id>.txt`` (``(N, 3)``, e.g. a reader's ``instances``). Ids are kept as they are
        (sparse); scores are 1. Every non-zero id of the map must have a row (``ValueError``);
        rows whose id has no pixel are kept (the metrics skip empty ground truth)."""
        ids = np.asarray(instance_ids_map)
        rows = np.asarray(instances_rows, np.int64).reshape(-1, 3)
        present = np.unique(ids)
        missing = np.setdiff1d(present[present != 0], rows[:, 0])
        if missing.size:
            raise ValueError(f"instance ids {missing.tolist()} are in the map but not in the rows")
        return cls(ids=ids, classes=rows[:, 1], scores=np.ones(len(rows)), instance_ids=rows[:, 0])

    def lookup(self) -> tuple[np.ndarray, np.ndarray]:
        """``(index_map, areas)``: HxW int64 map with 0 = background and i + 1 = the i-th instance
        (ascending id), and the ``(K,)`` pixel count of each instance. Map values that are not an
        instance id raise ``ValueError``."""
        k = len(self)
        top = int(max(self.ids.max(initial=0), self.instance_ids.max(initial=0)))
        lut = np.full(top + 1, -1, np.int64)
        lut[0] = 0
        lut[self.instance_ids] = np.arange(1, k + 1)
        index = lut[self.ids.astype(np.int64)]
        if index.min(initial=0) < 0:
            bad = np.unique(self.ids[index < 0])
            raise ValueError(f"ids map holds ids {bad.tolist()[:10]} without a class / score")
        areas = np.bincount(index.reshape(-1), minlength=k + 1)[1:]
        return index, areas

    def masks(self) -> np.ndarray:
        """``(K, H, W)`` bool masks in ascending id order (the order of the arrays)."""
        return self.ids[None] == self.instance_ids[:, None, None]

    def class_map(self) -> np.ndarray:
        """HxW uint8 semantic map: each instance's pixels get its class."""
        index, _ = self.lookup()
        return np.concatenate([[0], self.classes]).astype(np.uint8)[index]

    def relabel(self, drop_empty: bool = True) -> PartInstances:
        """The same instances with ids ``1..K`` in ascending order of the old ids (uint8 map when
        K <= 255); ``drop_empty`` drops instances without pixels, so every line of a CIHP ``.txt``
        has pixels in the PNG (the official script misaligns otherwise)."""
        index, areas = self.lookup()
        keep = np.flatnonzero(areas > 0) if drop_empty else np.arange(len(self))
        lut = np.zeros(len(self) + 1, np.int64)
        lut[keep + 1] = np.arange(1, len(keep) + 1)
        dtype = np.uint8 if len(keep) <= 255 else np.int32
        return PartInstances(ids=lut[index].astype(dtype), classes=self.classes[keep], scores=self.scores[keep])


# -- what a model returns beyond its label map, typed so writers and viewers need no model knowledge -----------

class _ArrayLike:
    """Numpy interop: ``np.asarray(extra)`` gives the underlying array."""

    def __array__(self, dtype=None, copy=None):
        a = np.asarray(self.data)
        return a if dtype is None else a.astype(dtype)


@dataclass
class LabelMap(_ArrayLike):
    """An extra label map (e.g. a hierarchy level): ``data`` HxW uint8 ids into ``classes``."""

    data: np.ndarray
    classes: tuple[str, ...]


@dataclass
class Heatmap(_ArrayLike):
    """Non-negative maps at image size: ``data`` HxW or (K, H, W) float32 (boundary probability, keypoints)."""

    data: np.ndarray

    def peak(self) -> np.ndarray:
        """One HxW map in [0, 1]: a single map as it is (a probability), several by their maximum scaled
        by its own peak."""
        if self.data.ndim == 2:
            return np.clip(self.data, 0, 1)
        m = self.data.max(0)
        return m / max(float(m.max()), 1e-6)


@dataclass
class ScoreTable(_ArrayLike):
    """Per-image scores ``data`` (rows, cols), e.g. CNIF's fusion gates per node and source."""

    data: np.ndarray
    rows: tuple[str, ...]
    cols: tuple[str, ...]
