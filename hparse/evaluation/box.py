"""The ``box`` evaluator: COCO box AP of the detected people (mAP^bbox, AIParsing Tables IV and VII), number for
number what ``pycocotools.cocoeval.COCOeval(iouType="bbox")`` reports for one category (a test checks it).

COCO's rules, as :func:`box_ap` follows them:

- per image, detections sorted by score (stable) and cut to the largest ``max_dets`` (100); IoU of boxes
  without ``+1``;
- per area range (all / small < 32^2 / medium < 96^2 / large; ends included), ground truth outside it is
  ignored (sorted after the rest); at IoU threshold t (0.5:0.05:0.95) each detection in turn takes the
  unmatched ground truth of highest IoU >= t (the later one on ties, a non-ignored one before any ignored
  one), and a detection matched to ignored ground truth, or unmatched with its own area outside the range,
  is ignored;
- over all images (detections cut to each ``max_dets`` value, stable-sorted by score) the precision envelope
  is sampled at recall 0:0.01:1 (0 past the highest recall); AP = the mean of those samples over the IoU
  thresholds; AR = the mean over the thresholds of the final recall. A range without ground truth gives NaN
  (COCO's -1).

The ground truth of an image are the people of ``human_ids``: the tight box of each person's pixels, with
COCO's annotation ``area`` = the person's pixel count (``gt_area="mask"``) or the box area (``"box"``);
detections have their box area (as ``COCO.loadRes``). Predictions come from ``outputs["instances"]``
(:class:`~hparse.structures.PersonInstances` at the image's size).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..errors import ConfigError
from ..metrics.instance import COCO_IOU_THRESHOLDS, COCO_RECALL_THRESHOLDS
from .base import EVALUATORS, Evaluator

AREA_RANGES = {"all": (0.0, 1e10), "small": (0.0, 32.0 ** 2), "medium": (32.0 ** 2, 96.0 ** 2),
               "large": (96.0 ** 2, 1e10)}
MAX_DETS = (1, 10, 100)
#: COCOeval.stats order: (name, AP or AR, IoU threshold or None, area range, max detections)
STATS = (("AP", True, None, "all", 100), ("AP50", True, 0.5, "all", 100), ("AP75", True, 0.75, "all", 100),
         ("APs", True, None, "small", 100), ("APm", True, None, "medium", 100), ("APl", True, None, "large", 100),
         ("AR1", False, None, "all", 1), ("AR10", False, None, "all", 10), ("AR100", False, None, "all", 100),
         ("ARs", False, None, "small", 100), ("ARm", False, None, "medium", 100), ("ARl", False, None, "large", 100))


def box_areas(boxes: np.ndarray) -> np.ndarray:
    b = np.asarray(boxes, np.float64).reshape(-1, 4)
    return (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])


def box_ious(d: np.ndarray, g: np.ndarray) -> np.ndarray:
    """(D, G) IoU of ``x1, y1, x2, y2`` boxes (COCO's bbox IoU, no ``+1``)."""
    d, g = np.asarray(d, np.float64).reshape(-1, 4), np.asarray(g, np.float64).reshape(-1, 4)
    w = np.clip(np.minimum(d[:, None, 2], g[None, :, 2]) - np.maximum(d[:, None, 0], g[None, :, 0]), 0, None)
    h = np.clip(np.minimum(d[:, None, 3], g[None, :, 3]) - np.maximum(d[:, None, 1], g[None, :, 1]), 0, None)
    inter = w * h
    union = box_areas(d)[:, None] + box_areas(g)[None, :] - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(union > 0, inter / union, 0.0)


@dataclass
class ImageBoxes:
    """One image's detections (``boxes`` (D, 4), ``scores`` (D,)) or ground truth (``boxes``, ``areas``)."""

    boxes: np.ndarray
    scores: np.ndarray | None = None
    areas: np.ndarray | None = None


def _match_image(ious: np.ndarray, gt_ignore: np.ndarray, dt_outside: np.ndarray, thresholds: np.ndarray):
    """COCO's ``evaluateImg`` for one area range: ``(matched (T, D), ignored (T, D))`` of the detections
    (best first) against ground truth whose ignored ones come last (``ious`` columns in that order)."""
    t_count, (d_count, g_count) = len(thresholds), ious.shape
    t_eff = np.minimum(thresholds, 1 - 1e-10)[:, None]
    kept = int((~gt_ignore).sum())                       # the ground truth that counts comes first
    rows = np.arange(t_count)
    matched = np.zeros((t_count, d_count), bool)
    ignored = np.zeros((t_count, d_count), bool)
    taken = np.zeros((t_count, g_count), bool)
    for di in range(d_count):
        vals = np.where(~taken & (ious[di][None, :] >= t_eff), ious[di][None, :], -1.0)
        m = np.full(t_count, -1)
        for lo, hi in ((0, kept), (kept, g_count)):     # an ignored one only when no counted one matches
            part = vals[:, lo:hi]
            ok = (m < 0) & (part.max(1, initial=-1.0) >= 0)
            last_max = hi - 1 - np.argmax(part[:, ::-1], axis=1) if hi > lo else m
            m = np.where(ok, last_max, m)
        hit = m >= 0
        taken[rows[hit], m[hit]] = True
        matched[hit, di] = True
        ignored[hit, di] = gt_ignore[m[hit]]
    ignored |= ~matched & dt_outside[None, :]
    return matched, ignored


@dataclass
class BoxAPResult:
    """COCO box AP / AR (fractions; NaN where COCO reports -1)."""

    stats: dict[str, float]
    thresholds: np.ndarray
    precision: np.ndarray     # (T, 101, A, M) as COCOeval.eval["precision"] for one category, -1 = undefined
    recall: np.ndarray        # (T, A, M)
    num_gt: int
    num_dets: int

    def summary(self) -> dict[str, float]:
        """``AP, AP50, AP75, APs, APm, APl, AR1, AR10, AR100, ARs, ARm, ARl`` (COCOeval.stats)."""
        return dict(self.stats)

    def to_dict(self) -> dict:
        return {"metric": "box_ap", "num_gt": self.num_gt, "num_dets": self.num_dets,
                **{k: (None if math.isnan(v) else v) for k, v in self.stats.items()}}

    def format_table(self, digits: int = 2) -> str:
        lines = [f"Box AP (%, COCO; {self.num_gt} ground-truth people, {self.num_dets} detections)"]
        for name, is_ap, thr, area, dets in STATS:
            what = f"{'AP' if is_ap else 'AR'} @IoU={'0.50:0.95' if thr is None else f'{thr:.2f}'} area={area} " \
                   f"maxDets={dets}"
            v = self.stats[name]
            lines.append(f"{name:<6} {what:<44} {'nan' if math.isnan(v) else f'{100 * v:.{digits}f}':>7}")
        return "\n".join(lines)


def box_ap(preds: Sequence[ImageBoxes | None], gts: Sequence[ImageBoxes], thresholds=COCO_IOU_THRESHOLDS,
           max_dets: Sequence[int] = MAX_DETS, area_ranges: dict[str, tuple[float, float]] | None = None
           ) -> BoxAPResult:
    """COCO box AP of one category over images (``preds[i]`` None: no detections); see the module docstring."""
    if len(preds) != len(gts):
        raise ValueError(f"{len(preds)} predictions for {len(gts)} ground-truth images")
    thr = np.asarray(thresholds, np.float64)
    ranges = area_ranges or AREA_RANGES
    max_dets = tuple(int(m) for m in max_dets)
    per_range: dict[str, list] = {a: [] for a in ranges}
    num_gt = num_dets = 0
    for pred, gt in zip(preds, gts):
        gt_boxes = np.asarray(gt.boxes, np.float64).reshape(-1, 4)
        gt_areas = box_areas(gt_boxes) if gt.areas is None else np.asarray(gt.areas, np.float64)
        dt_boxes = np.zeros((0, 4)) if pred is None else np.asarray(pred.boxes, np.float64).reshape(-1, 4)
        scores = np.zeros(0) if pred is None else np.asarray(pred.scores, np.float64).reshape(-1)
        num_gt, num_dets = num_gt + len(gt_boxes), num_dets + len(dt_boxes)
        if not len(gt_boxes) and not len(dt_boxes):
            continue
        order = np.argsort(-scores, kind="mergesort")[:max_dets[-1]]
        dt_boxes, scores = dt_boxes[order], scores[order]
        ious = box_ious(dt_boxes, gt_boxes)
        dt_areas = box_areas(dt_boxes)
        for name, (lo, hi) in ranges.items():
            gt_ignore = (gt_areas < lo) | (gt_areas > hi)
            g_order = np.argsort(gt_ignore, kind="mergesort")
            matched, ignored = _match_image(ious[:, g_order], gt_ignore[g_order], (dt_areas < lo) | (dt_areas > hi),
                                            thr)
            per_range[name].append((scores, matched, ignored, int((~gt_ignore).sum())))
    precision = -np.ones((len(thr), len(COCO_RECALL_THRESHOLDS), len(ranges), len(max_dets)))
    recall = -np.ones((len(thr), len(ranges), len(max_dets)))
    for a, name in enumerate(ranges):
        for m, limit in enumerate(max_dets):
            _accumulate(per_range[name], limit, precision[:, :, a, m], recall[:, a, m])
    names = list(ranges)
    stats = {}
    for key, is_ap, t, area, dets in STATS:
        a, m = names.index(area), max_dets.index(dets)
        values = precision[:, :, a, m] if is_ap else recall[:, a, m]
        if t is not None:
            values = values[np.isclose(thr, t)]
        valid = values[values > -1]
        stats[key] = float(np.mean(valid)) if valid.size else math.nan
    return BoxAPResult(stats, thr, precision, recall, num_gt, num_dets)


def _accumulate(images: list, limit: int, precision: np.ndarray, recall: np.ndarray) -> None:
    """COCO's ``accumulate`` for one area range and detection limit, into ``precision`` (T, R) / ``recall`` (T,)."""
    npig = sum(n for *_, n in images)
    if npig == 0:
        return
    scores = np.concatenate([s[:limit] for s, *_ in images])
    order = np.argsort(-scores, kind="mergesort")
    matched = np.concatenate([mt[:, :limit] for _, mt, _, _ in images], axis=1)[:, order]
    ignored = np.concatenate([ig[:, :limit] for _, _, ig, _ in images], axis=1)[:, order]
    tp = np.cumsum(matched & ~ignored, axis=1, dtype=np.float64)
    fp = np.cumsum(~matched & ~ignored, axis=1, dtype=np.float64)
    for t in range(len(tp)):
        rc = tp[t] / npig
        pr = tp[t] / (fp[t] + tp[t] + np.spacing(1))
        recall[t] = rc[-1] if len(rc) else 0.0
        pr = np.maximum.accumulate(pr[::-1])[::-1] if len(pr) else pr
        inds = np.searchsorted(rc, COCO_RECALL_THRESHOLDS, side="left")
        ok = inds < len(pr)
        precision[t] = 0.0
        precision[t, ok] = pr[inds[ok]]


def ground_truth_boxes(human_ids: np.ndarray, gt_area: str = "mask") -> ImageBoxes:
    """The people 1..M of a human-id map (empty ids left out) as COCO ground truth."""
    ids = np.asarray(human_ids)
    present = [k for k in range(1, int(ids.max(initial=0)) + 1) if (ids == k).any()]
    boxes, areas = np.zeros((len(present), 4)), np.zeros(len(present))
    for i, k in enumerate(present):
        rows, cols = np.flatnonzero((ids == k).any(1)), np.flatnonzero((ids == k).any(0))
        boxes[i] = (cols[0], rows[0], cols[-1] + 1, rows[-1] + 1)
        areas[i] = (ids == k).sum()
    return ImageBoxes(boxes, areas=areas if gt_area == "mask" else box_areas(boxes))


@EVALUATORS.register("box")
class BoxEvaluator(Evaluator):
    """COCO box AP of ``outputs["instances"]`` against the people of ``human_ids``; option ``gt_area``
    (``mask``: COCO's annotation area; ``box``)."""

    output_keys = ("instances",)
    summary_keys = tuple(s[0] for s in STATS)

    def __init__(self, meta, gt_area: str = "mask"):
        if gt_area not in ("mask", "box"):
            raise ConfigError(f"box evaluator: gt_area must be 'mask' or 'box', got {gt_area!r}")
        self.gt_area = gt_area
        super().__init__(meta)

    def reset(self) -> None:
        super().reset()
        self.preds: list[ImageBoxes | None] = []
        self.gts: list[ImageBoxes] = []

    def process_image(self, sample: dict, output: dict) -> None:
        if "human_ids" not in sample:
            raise ConfigError(f"box evaluator: sample {sample.get('id')!r} has no human_ids (an instance dataset)")
        persons = output.get("instances")
        self.preds.append(None if persons is None else ImageBoxes(np.asarray(persons.boxes, np.float64),
                                                                  np.asarray(persons.scores, np.float64)))
        self.gts.append(ground_truth_boxes(sample["human_ids"], self.gt_area))

    def result(self) -> BoxAPResult:
        return box_ap(self.preds, self.gts)
