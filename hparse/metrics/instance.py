"""Instance-level parsing metrics: CIHP part-instance AP^r, MHP person AP^p / PCP, COCO human mask AP.

* :func:`part_ap` -- CIHP AP^r as ``CIHP_PGN/evaluation/test_inst_part_ap.py`` computes it
  (reference notes B.4): part instances, per class, strict ``IoU > t``, **no one-to-one
  matching** (every prediction whose best IoU with a same-class GT exceeds t is a TP, so
  duplicates are all TP and recall -- and AP -- can exceed 1), VOC area AP, mAP over classes
  1..C-1, AP^r_vol = mean over t = 0.1..0.9. ``one_to_one=True`` gives VOC matching instead.
* :func:`person_ap` -- MHP ``eval_mhp.py`` / Parsing R-CNN ``parsing_eval.py`` AP^p and PCP
  (B.5): persons matched by the nanmean of their per-class IoUs over all classes *including
  background*, VOC matching without retrying the second-best GT.
* :func:`mask_ap` -- COCO ``COCOeval`` (segm, area "all", 100 detections) on human masks:
  AP over IoU 0.5:0.05:0.95 with 101-point interpolated precision, plus AP50 / AP75.

All three take one entry per image (predictions and ground truth in the same order) and compute
the per-image overlaps once, reusing them for every threshold. Values are fractions (tables
print percentages); an undefined value (no ground truth) is NaN.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np

from hparse.metrics.semantic import resolve_class_names
from hparse.structures import PartInstances, PersonInstances, score_at_least

PARSING_THRESHOLDS = tuple(round(0.1 * i, 1) for i in range(1, 10))       # 0.1, 0.2, ..., 0.9
COCO_IOU_THRESHOLDS = np.linspace(.5, 0.95, int(np.round((0.95 - .5) / .05)) + 1, endpoint=True)
COCO_RECALL_THRESHOLDS = np.linspace(.0, 1.00, int(np.round((1.00 - .0) / .01)) + 1, endpoint=True)
_EPS = np.finfo(np.float64).eps


# --------------------------------------------------------------------------- shared helpers


def voc_ap(rec, prec) -> float:
    """VOC area AP (not 11-point), as ``voc_ap(use_07_metric=False)`` in the CIHP / MHP scripts:
    sentinels ``[0, rec, 1]`` / ``[0, prec, 0]``, precision envelope from the right, sum of
    Δrecall x precision where the recall changes. Recall above 1 is not clipped."""
    mrec = np.concatenate(([0.0], np.asarray(rec, np.float64), [1.0]))
    mpre = np.concatenate(([0.0], np.asarray(prec, np.float64), [0.0]))
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]
    i = np.where(mrec[1:] != mrec[:-1])[0]
    return float(np.sum((mrec[i + 1] - mrec[i]) * mpre[i + 1]))


def _thresholds(thresholds) -> np.ndarray:
    t = np.asarray(thresholds, np.float64).reshape(-1)
    if t.size == 0:
        raise ValueError("no thresholds given")
    return t


def _at(thresholds: np.ndarray, values: np.ndarray, t: float) -> float:
    hit = np.flatnonzero(np.isclose(thresholds, t))
    return float(values[hit[0]]) if hit.size else math.nan


def _first_per_key(keys: np.ndarray, candidate: np.ndarray) -> np.ndarray:
    """Boolean mask: the candidates that are the first (in array order) candidate of their key."""
    out = np.zeros(len(keys), bool)
    pos = np.flatnonzero(candidate)
    if pos.size:
        _, first = np.unique(keys[pos], return_index=True)
        out[pos[first]] = True
    return out


def _pr_curve(tp: np.ndarray, npos: int) -> tuple[np.ndarray, np.ndarray]:
    """(rec, prec) from a TP indicator row in score order (FP = not TP)."""
    ctp = np.cumsum(tp, dtype=np.float64)
    cfp = np.cumsum(~tp, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        rec = ctp / float(npos)
    return rec, ctp / np.maximum(ctp + cfp, _EPS)


def _flat(a: np.ndarray) -> np.ndarray:
    """(N, ...) -> (N, prod(...)), also for N = 0."""
    return a.reshape(len(a), int(np.prod(a.shape[1:])))


def _cat(xs: list, empty_shape: tuple, dtype=np.float64) -> np.ndarray:
    return np.concatenate(xs).astype(dtype) if xs else np.zeros(empty_shape, dtype)


def _pct(v: float, digits: int = 2) -> str:
    return "nan" if v is None or math.isnan(v) else f"{100 * v:.{digits}f}"


def _floats(a) -> list:
    return [None if math.isnan(float(v)) else float(v) for v in np.asarray(a).reshape(-1)]


# --------------------------------------------------------------------------- CIHP AP^r


@dataclass
class PartAPResult:
    """CIHP part-instance AP^r. Per-class arrays cover classes 1..C-1 (column j = class j + 1)."""

    thresholds: np.ndarray        # (T,)
    class_ap: np.ndarray          # (T, C-1); NaN for a class without ground truth
    class_recall: np.ndarray      # (T, C-1) recall after the last prediction (> 1 possible by default)
    gt_counts: np.ndarray         # (C-1,) ground-truth instances counted (images with a prediction only)
    pred_counts: np.ndarray       # (C-1,) predicted instances
    map: np.ndarray               # (T,) mean AP over the classes with ground truth
    ap_vol: float                 # mean of ``map`` over the thresholds
    one_to_one: bool
    num_images: int               # images with a prediction (the ones evaluated)
    class_names: tuple[str, ...]  # all C names, background first

    def summary(self) -> dict:
        """``{"APr50", "APr60", "APr70", "APr_vol"}`` as fractions (NaN if a threshold is missing)."""
        return {"APr50": _at(self.thresholds, self.map, 0.5), "APr60": _at(self.thresholds, self.map, 0.6),
                "APr70": _at(self.thresholds, self.map, 0.7), "APr_vol": float(self.ap_vol)}

    def to_dict(self) -> dict:
        return {"metric": "part_ap", "one_to_one": self.one_to_one, "num_images": self.num_images,
                **{k: _floats([v])[0] for k, v in self.summary().items()},
                "thresholds": _floats(self.thresholds), "map": _floats(self.map),
                "per_class": {name: {"ap": _floats(self.class_ap[:, j]), "recall": _floats(self.class_recall[:, j]),
                                     "gt": int(self.gt_counts[j]), "pred": int(self.pred_counts[j])}
                              for j, name in enumerate(self.class_names[1:])}}

    def format_table(self, digits: int = 2) -> str:
        mode = "one-to-one VOC matching" if self.one_to_one else "CIHP official: no one-to-one matching"
        w = max(10, *(len(n) for n in self.class_names)) + 4
        shown = [t for t in (0.5, 0.6, 0.7) if np.isclose(self.thresholds, t).any()]
        head = f"{'class':<{w}}" + "".join(f"{f'AP{round(t * 100)}':>9}" for t in shown) + f"{'AP_vol':>9}{'GT':>8}"
        lines = [f"Part-instance AP^r (%, {mode}; {self.num_images} images)", head, "-" * len(head)]
        for j, name in enumerate(self.class_names[1:]):
            col = self.class_ap[:, j]
            vol = float(np.mean(col)) if not np.isnan(col).all() else math.nan
            lines.append(f"{j + 1:>2} {name:<{w - 3}}"
                         + "".join(f"{_pct(_at(self.thresholds, col, t), digits):>9}" for t in shown)
                         + f"{_pct(vol, digits):>9}{int(self.gt_counts[j]):>8}")
        lines.append("-" * len(head))
        lines += [f"{k:<10}{_pct(v, digits):>8}" for k, v in self.summary().items()]
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.format_table()


def _part_image(pred: PartInstances, gt: PartInstances, num_classes: int):
    """Per prediction of one image (ascending id): class, score, best same-class IoU (-inf if no
    same-class GT), index of that GT (first max; -1 if none); and the GT classes counted."""
    if pred.ids.shape != gt.ids.shape:
        raise ValueError(f"prediction is {pred.ids.shape} but ground truth is {gt.ids.shape}")
    gidx, garea = gt.lookup()
    pidx, parea = pred.lookup()
    gvalid = (garea > 0) & (gt.classes >= 1) & (gt.classes < num_classes)
    kp, kg = len(pred), len(gt)
    ov = np.full(kp, -np.inf)
    best = np.full(kp, -1, np.int64)
    if kp and gvalid.any():
        inter = np.bincount((pidx * (kg + 1) + gidx).reshape(-1), minlength=(kp + 1) * (kg + 1))
        inter = inter.reshape(kp + 1, kg + 1)[1:, 1:].astype(np.float64)
        union = parea[:, None] + garea[None, :] - inter
        same = (pred.classes[:, None] == gt.classes[None, :]) & gvalid[None, :]
        with np.errstate(divide="ignore", invalid="ignore"):
            iou = np.where(same, inter / union, -np.inf)
        best = np.argmax(iou, axis=1)
        ov = iou[np.arange(kp), best]
        best[np.isneginf(ov)] = -1
    return pred.classes, pred.scores, ov, best, gt.classes[gvalid]


def part_ap(preds: list[PartInstances | None], gts: list[PartInstances], num_classes: int,
            thresholds=PARSING_THRESHOLDS, one_to_one: bool = False, class_names=None) -> PartAPResult:
    """CIHP part-instance AP^r (``test_inst_part_ap.py``, reference notes B.4).

    ``preds[i]`` / ``gts[i]`` are the part instances of image i; ``preds[i] = None`` means no
    prediction file: the image is left out, its ground truth is not counted (the official image
    list is the prediction folder). For each class c = 1..C-1 and threshold t:

    * each prediction of class c is a TP iff its highest IoU with a ground-truth instance of class
      c in the same image is **> t** (strict), else FP (also when the image has no such GT). With
      ``one_to_one=False`` (official) nothing stops several predictions from matching one GT:
      duplicates are all TP, recall can exceed 1 and so can AP. ``one_to_one=True``: VOC
      matching -- in descending score order a prediction whose best GT is already taken is FP
      (the second-best GT is not tried), so each GT is matched at most once.
    * the class's scores are concatenated over images (image order, ascending id) and ordered by
      ``np.argsort(scores)[::-1]`` as the script does (ties: the later one first, for small lists).
    * rec = cumTP / #GT, prec = cumTP / (cumTP + cumFP); AP = VOC area (:func:`voc_ap`).
    * mAP(t) = mean over classes; AP^r_vol = mean of mAP over the thresholds.

    Ground truth with no pixel, or whose class is outside 1..C-1, is not counted; a prediction
    without pixels is an FP. Deviation from the script: a class with no ground truth in the
    evaluated images gets AP NaN and is left out of mAP (the script yields NaN, or 0 when that
    class has no prediction either, and averages it in; on CIHP val every class has ground truth).
    """
    if len(preds) != len(gts):
        raise ValueError(f"{len(preds)} predictions for {len(gts)} ground-truth images")
    if num_classes < 2:
        raise ValueError("num_classes must be >= 2 (background + parts)")
    thr = _thresholds(thresholds)
    cls_l, score_l, ov_l, key_l, gt_cls_l = [], [], [], [], []
    offset = num_images = 0
    for pred, gt in zip(preds, gts):
        if pred is None:
            continue
        num_images += 1
        c, s, ov, best, gcls = _part_image(pred, gt, num_classes)
        cls_l.append(c)
        score_l.append(s)
        ov_l.append(ov)
        key_l.append(np.where(best >= 0, best + offset, -1))
        gt_cls_l.append(gcls)
        offset += len(gt)
    classes, scores, ovs = _cat(cls_l, (0,), np.int64), _cat(score_l, (0,)), _cat(ov_l, (0,))
    keys = _cat(key_l, (0,), np.int64)
    gt_counts = np.bincount(_cat(gt_cls_l, (0,), np.int64), minlength=num_classes)[1:num_classes]

    nc = num_classes - 1
    class_ap = np.full((len(thr), nc), np.nan)
    class_rec = np.zeros((len(thr), nc))
    pred_counts = np.zeros(nc, np.int64)
    for c in range(1, num_classes):
        sel = np.flatnonzero(classes == c)
        pred_counts[c - 1] = sel.size
        order = sel[np.argsort(scores[sel])[::-1]]       # the script's order, ties included
        tp = ovs[order][None, :] > thr[:, None]          # (T, P)
        if one_to_one:
            tp = np.stack([_first_per_key(keys[order], row) for row in tp]) if order.size else tp
        npos = int(gt_counts[c - 1])
        for ti in range(len(thr)):
            rec, prec = _pr_curve(tp[ti], npos)
            if npos:
                class_ap[ti, c - 1] = voc_ap(rec, prec)
                class_rec[ti, c - 1] = rec[-1] if rec.size else 0.0
            else:
                class_rec[ti, c - 1] = np.nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        m = np.nanmean(class_ap, axis=1) if nc else np.full(len(thr), np.nan)
    return PartAPResult(thresholds=thr, class_ap=class_ap, class_recall=class_rec, gt_counts=gt_counts,
                        pred_counts=pred_counts, map=m, ap_vol=float(np.mean(m)), one_to_one=one_to_one,
                        num_images=num_images, class_names=resolve_class_names(class_names, num_classes))


# --------------------------------------------------------------------------- MHP AP^p / PCP


@dataclass
class PersonAPResult:
    """MHP person-level AP^p and PCP, one value per threshold."""

    thresholds: np.ndarray   # (T,)
    ap: np.ndarray           # (T,)
    pcp: np.ndarray          # (T,)
    recall: np.ndarray       # (T,) recall after the last prediction
    npos: int                # ground-truth persons (non-empty)
    num_preds: int           # predictions evaluated (after score_thresh)
    background: str          # "include" (official) or "exclude"

    @property
    def ap_vol(self) -> float:
        return float(np.mean(self.ap))

    def summary(self) -> dict:
        """``{"APp50", "APp_vol", "PCP50"}`` as fractions."""
        return {"APp50": _at(self.thresholds, self.ap, 0.5), "APp_vol": self.ap_vol,
                "PCP50": _at(self.thresholds, self.pcp, 0.5)}

    def to_dict(self) -> dict:
        return {"metric": "person_ap", "background": self.background, "npos": self.npos,
                "num_preds": self.num_preds, **{k: _floats([v])[0] for k, v in self.summary().items()},
                "thresholds": _floats(self.thresholds), "ap": _floats(self.ap), "pcp": _floats(self.pcp),
                "recall": _floats(self.recall)}

    def format_table(self, digits: int = 2) -> str:
        lines = [f"Person AP^p / PCP (%, background {self.background}d in the IoU mean; "
                 f"{self.npos} GT persons, {self.num_preds} predictions)",
                 f"{'IoU >':<8}{'AP^p':>9}{'PCP':>9}{'recall':>9}", "-" * 35]
        lines += [f"{t:<8.2f}{_pct(a, digits):>9}{_pct(p, digits):>9}{_pct(r, digits):>9}"
                  for t, a, p, r in zip(self.thresholds, self.ap, self.pcp, self.recall)]
        lines.append("-" * 35)
        lines += [f"{k:<10}{_pct(v, digits):>8}" for k, v in self.summary().items()]
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.format_table()


def _as_person_stack(gt, size=None) -> np.ndarray:
    if isinstance(gt, np.ndarray) and gt.ndim == 3:
        return gt
    maps = [np.asarray(g) for g in gt]
    if maps:
        return np.stack(maps)
    return np.zeros((0, *(size or (0, 0))), np.uint8)


def _disjoint_layers(g_rows: list[np.ndarray], hw: int) -> list[list[int]]:
    """Group GT persons (given by their flat foreground indices) into layers of non-overlapping persons."""
    layers, occupied = [], []
    for j, idx in enumerate(g_rows):
        for layer, occ in zip(layers, occupied):
            if not occ[idx].any():
                layer.append(j)
                occ[idx] = True
                break
        else:
            occ = np.zeros(hw, bool)
            occ[idx] = True
            layers.append([j])
            occupied.append(occ)
    return layers


def _class_iou_matrix(p: np.ndarray, g: np.ndarray, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """``(N, M, C)`` per-class IoU of every (prediction, GT person) pair over the whole image
    (class 0 = background included; 0/0 = NaN) and the ``(M, C)`` GT class areas.

    GT values >= ``num_classes`` (255 = ignore) drop their pixels from that pair's counts, prediction
    included, as the official ``fast_hist`` does. Bincounts over the predictions' foreground pixels only:
    GT persons are split into layers of non-overlapping persons (one layer for CIHP), so each predicted pixel
    meets at most one GT person per layer; background counts follow from the foreground ones."""
    n, m, c = len(p), len(g), num_classes
    hw = p.shape[1] * p.shape[2]
    pflat, gflat = p.reshape(-1), g.reshape(-1)
    pidx = np.flatnonzero(pflat)
    pr, pc = np.divmod(pidx, hw)
    pv = pflat[pidx].astype(np.int64)
    gidx = np.flatnonzero(gflat)
    gr, gc = np.divmod(gidx, hw)
    gv = gflat[gidx].astype(np.int64)
    valid = gv < c
    area_p = np.bincount(pr * c + pv, minlength=n * c).reshape(n, c)
    area_g = np.bincount(gr[valid] * c + gv[valid], minlength=m * c).reshape(m, c)
    ignored = np.bincount(gr[~valid], minlength=m)                        # (m,) dropped pixels per GT
    fg_p, fg_g = area_p[:, 1:].sum(1), area_g[:, 1:].sum(1)
    area_g[:, 0] = hw - fg_g - ignored
    inter = np.zeros(n * m * c, np.int64)
    in_ignored = np.zeros(n * m * c, np.int64)                            # predicted class c on GT m's ignore
    fg_both = np.zeros(n * m, np.int64)
    starts = np.searchsorted(gr, np.arange(m + 1))
    g_rows = [gc[starts[j]:starts[j + 1]] for j in range(m)]
    owner, cls = np.empty(hw, np.int64), np.empty(hw, np.int64)
    for layer in _disjoint_layers(g_rows, hw):
        owner.fill(-1)
        for j in layer:
            owner[g_rows[j]] = j
            cls[g_rows[j]] = gv[starts[j]:starts[j + 1]]
        o = owner[pc]
        hit = o >= 0
        pair = pr[hit] * m + o[hit]
        hit_ignored = cls[pc[hit]] >= c
        fg_both += np.bincount(pair[~hit_ignored], minlength=n * m)
        in_ignored += np.bincount(pair[hit_ignored] * c + pv[hit][hit_ignored], minlength=n * m * c)
        same = hit & (cls[pc] == pv)
        inter += np.bincount((pr[same] * m + o[same]) * c + pv[same], minlength=n * m * c)
    inter = inter.reshape(n, m, c).astype(np.float64)
    in_ignored = in_ignored.reshape(n, m, c)
    kept = hw - ignored[None, :]                                          # (1, m) pixels each pair counts
    fg_p_kept = fg_p[:, None] - in_ignored[..., 1:].sum(2)                # (n, m)
    inter[..., 0] = kept - fg_p_kept - fg_g[None, :] + fg_both.reshape(n, m)
    pred_area = area_p[:, None, :] - in_ignored                           # (n, m, c)
    pred_area[..., 0] = kept - fg_p_kept
    union = pred_area + area_g[None, :, :] - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        return inter / union, area_g


def _person_image(p: np.ndarray, g: np.ndarray, num_classes: int, lo: int):
    """One image's kept predictions against its GT persons: (best mean IoU, best GT index, per-part IoU
    with that GT, number of part classes that GT has)."""
    n = len(p)
    if len(g) == 0:
        return np.full(n, -np.inf), np.full(n, -1, np.int64), np.full((n, num_classes - 1), np.nan), np.zeros(n)
    if p.shape[1:] != g.shape[1:]:
        raise ValueError(f"prediction is {p.shape[1:]} but ground truth is {g.shape[1:]}")
    iou, area_g = _class_iou_matrix(p, g, num_classes)                 # (n, m, C), (m, C)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        mean = np.nanmean(iou[..., lo:], axis=-1)                      # (n, m)
    mean = np.where(np.isnan(mean), -np.inf, mean)                     # NaN never wins (strict >)
    best = np.argmax(mean, axis=1)
    rows = np.arange(n)
    return mean[rows, best], best, iou[rows, best, 1:], (area_g[best, 1:] > 0).sum(1).astype(np.float64)


def _check_classes(what: str, a: np.ndarray, num_classes: int, ignore_index: int | None = None) -> None:
    bad = a[(a >= num_classes) & (a != ignore_index)] if ignore_index is not None else a[a >= num_classes]
    if bad.size:
        raise ValueError(f"{what} has class {int(bad.max())} >= num_classes={num_classes}")


def person_ap(preds: list[PersonInstances | None], gts: list, num_classes: int, thresholds=PARSING_THRESHOLDS,
              score_thresh: float | None = None, background: str = "include", ignore_index: int = 255
              ) -> PersonAPResult:
    """Person-level AP^p and PCP (MHP ``eval_mhp.py`` / Parsing R-CNN ``parsing_eval.py``, notes B.5).

    ``gts[i]`` holds image i's ground-truth persons: an ``(M, H, W)`` array or a list of HxW part
    label maps (0 outside the person, values < ``num_classes``, ``ignore_index`` for pixels not to
    score); persons without a non-zero pixel are skipped. ``preds[i]`` is a :class:`PersonInstances`
    (``None`` = no prediction; its ground truth still counts). At each threshold t:

    * all predictions are ordered by ``np.argsort(-scores)`` over the float64 scores (the scripts' order);
    * for each prediction, the per-class IoU with each GT person of its image is computed from the
      full-image confusion matrix over **all** classes including background 0 (``background=
      "include"``, official: the whole-image background IoU inflates the score) or classes 1..C-1
      (``"exclude"``), 0/0 = NaN; pixels where that GT person is ``ignore_index`` are left out of the
      matrix, prediction included (the scripts' ``fast_hist``); the score is their nanmean; the best GT
      is the first maximum;
    * TP iff that score > t and the GT is not yet matched (matches are fresh per threshold); an
      already matched best GT makes an FP -- the second best is not tried;
    * on a TP, PCP = #classes c >= 1 with IoU_c > t / #part classes present in the GT (0 if none);
      PCP(t) = sum over TPs / #GT persons (unmatched GT count 0);
    * rec = cumTP / #GT persons, AP = VOC area.

    ``score_thresh``: as Parsing R-CNN (``PRCNN.SCORE_THRESH`` 0.001), every prediction is sorted first
    and those with a lower score are then skipped, not counted as FP (so ties keep the official order).
    """
    if len(preds) != len(gts):
        raise ValueError(f"{len(preds)} predictions for {len(gts)} ground-truth images")
    if background not in ("include", "exclude"):
        raise ValueError(f"background must be 'include' or 'exclude', got {background!r}")
    thr = _thresholds(thresholds)
    lo = 0 if background == "include" else 1
    score_l, kept_l, ov_l, key_l, part_iou_l, den_l = [], [], [], [], [], []
    npos = 0
    for pred, gt in zip(preds, gts):
        g = _as_person_stack(gt, None if pred is None else pred.image_size)
        _check_classes("ground truth", g, num_classes, ignore_index)
        g = g[_flat(g).any(1)]
        offset = npos
        npos += len(g)
        if pred is None or len(pred) == 0:
            continue
        s = np.asarray(pred.scores, np.float64).reshape(-1)
        kept = (np.ones(len(s), bool) if score_thresh is None
                else score_at_least(np.asarray(pred.scores).reshape(-1), score_thresh))
        p = pred.full_parsings()[kept]
        _check_classes("prediction", p, num_classes)
        ov, best, part_iou, den = (np.full(len(s), -np.inf), np.full(len(s), -1, np.int64),
                                   np.full((len(s), num_classes - 1), np.nan), np.zeros(len(s)))
        if kept.any():
            ov[kept], best[kept], part_iou[kept], den[kept] = _person_image(p, g, num_classes, lo)
        score_l.append(s)
        kept_l.append(kept)
        ov_l.append(ov)
        key_l.append(np.where(best >= 0, offset + best, -1))
        part_iou_l.append(part_iou)
        den_l.append(den)
    scores, ovs, dens = _cat(score_l, (0,)), _cat(ov_l, (0,)), _cat(den_l, (0,))
    keys, part_iou = _cat(key_l, (0,), np.int64), _cat(part_iou_l, (0, num_classes - 1))
    order = np.argsort(-scores)                                        # sort everything, then skip
    order = order[_cat(kept_l, (0,), bool)[order]]
    ovs, keys, part_iou, dens = ovs[order], keys[order], part_iou[order], dens[order]
    ap, pcp, rec_end = np.full(len(thr), np.nan), np.full(len(thr), np.nan), np.full(len(thr), np.nan)
    for ti, t in enumerate(thr):
        tp = _first_per_key(keys, ovs > t)
        if npos:
            rec, prec = _pr_curve(tp, npos)
            ap[ti] = voc_ap(rec, prec)
            rec_end[ti] = rec[-1] if rec.size else 0.0
            with np.errstate(invalid="ignore"):
                hits = (part_iou[tp] > t).sum(1)
            pcp[ti] = float(np.sum(np.where(dens[tp] > 0, hits / np.maximum(dens[tp], 1), 0.0)) / npos)
    return PersonAPResult(thresholds=thr, ap=ap, pcp=pcp, recall=rec_end, npos=npos, num_preds=len(order),
                          background=background)


# --------------------------------------------------------------------------- COCO human mask AP


@dataclass
class MaskAPResult:
    """COCO-style human (person mask) AP."""

    thresholds: np.ndarray   # (T,) IoU thresholds, 0.5:0.05:0.95
    precision: np.ndarray    # (T, 101) interpolated precision at recall 0, 0.01, ..., 1
    recall: np.ndarray       # (T,) recall after the last detection
    npos: int
    num_preds: int

    @property
    def ap_per_threshold(self) -> np.ndarray:
        return self.precision.mean(1) if self.npos else np.full(len(self.thresholds), np.nan)

    @property
    def ap(self) -> float:
        return float(np.mean(self.precision)) if self.npos else math.nan

    def summary(self) -> dict:
        """``{"APh", "APh50", "APh75"}`` (human mask AP, COCO ``stats[0:3]``) as fractions."""
        return {"APh": self.ap, "APh50": _at(self.thresholds, self.ap_per_threshold, 0.5),
                "APh75": _at(self.thresholds, self.ap_per_threshold, 0.75)}

    def to_dict(self) -> dict:
        return {"metric": "mask_ap", "npos": self.npos, "num_preds": self.num_preds,
                **{k: _floats([v])[0] for k, v in self.summary().items()},
                "thresholds": _floats(self.thresholds), "ap": _floats(self.ap_per_threshold),
                "recall": _floats(self.recall)}

    def format_table(self, digits: int = 2) -> str:
        lines = [f"Human mask AP (%, COCO-style; {self.npos} GT persons, {self.num_preds} detections)",
                 f"{'IoU >=':<8}{'AP':>9}{'recall':>9}", "-" * 26]
        lines += [f"{t:<8.2f}{_pct(a, digits):>9}{_pct(r, digits):>9}"
                  for t, a, r in zip(self.thresholds, self.ap_per_threshold, self.recall)]
        lines.append("-" * 26)
        lines += [f"{k:<10}{_pct(v, digits):>8}" for k, v in self.summary().items()]
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.format_table()


def _mask_iou(d: np.ndarray, g: np.ndarray) -> np.ndarray:
    """(D, G) IoU of boolean masks by one matrix product of the flattened masks."""
    df, gf = _flat(d), _flat(g)
    dt = np.float32 if df.shape[1] < 2 ** 24 else np.float64        # float32 sums of 0/1 are exact below 2^24
    inter = (df.astype(dt) @ gf.astype(dt).T).astype(np.float64)
    union = df.sum(1)[:, None] + gf.sum(1)[None, :] - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(union > 0, inter / union, 0.0)


def mask_ap(preds: list[PersonInstances | None], gts: list, thresholds=COCO_IOU_THRESHOLDS,
            max_dets: int = 100) -> MaskAPResult:
    """COCO-style AP of human masks (``COCOeval(iouType="segm")``, one category, area "all").

    ``preds[i]``: image i's :class:`PersonInstances` (masks = non-zero parsing; ``None`` = none);
    ``gts[i]``: ``(M, H, W)`` bool masks or a list of HxW masks / person label maps (non-zero =
    person); empty ground-truth masks are skipped (no crowd regions). Per image the detections are
    sorted by score (stable) and cut to ``max_dets``; at each IoU threshold t each detection in
    turn takes the unmatched GT with the highest IoU >= t (ties: the later GT, as COCOeval), else
    it is an FP. Over all images (stable sort by score) the precision envelope is sampled at
    recall 0:0.01:1 (0 past the highest recall); AP(t) = mean of the 101 samples; AP = mean over t.
    """
    if len(preds) != len(gts):
        raise ValueError(f"{len(preds)} predictions for {len(gts)} ground-truth images")
    thr = _thresholds(thresholds)
    t_eff = np.minimum(thr, 1 - 1e-10)
    scores_l, match_l = [], []
    npos = 0
    for pred, gt in zip(preds, gts):
        g = _as_person_stack(gt, None if pred is None else pred.image_size)
        g = g.reshape(len(g), *g.shape[-2:]) != 0
        g = g[_flat(g).any(1)]
        npos += len(g)
        if pred is None or len(pred) == 0:
            continue
        s = np.asarray(pred.scores, np.float64).reshape(-1)
        order = np.argsort(-s, kind="mergesort")[:max_dets]
        d = pred.human_masks()[order]
        s = s[order]
        matched = np.zeros((len(thr), len(s)), bool)
        if len(g):
            if d.shape[1:] != g.shape[1:]:
                raise ValueError(f"prediction is {d.shape[1:]} but ground truth is {g.shape[1:]}")
            ious = _mask_iou(d, g)
            taken = np.zeros((len(thr), len(g)), bool)
            rows = np.arange(len(thr))
            for k in range(len(s)):
                cand = ~taken & (ious[k][None, :] >= t_eff[:, None])          # (T, G)
                vals = np.where(cand, ious[k][None, :], -1.0)
                m = len(g) - 1 - np.argmax(vals[:, ::-1], axis=1)             # last maximum
                ok = cand.any(1)
                taken[rows[ok], m[ok]] = True
                matched[ok, k] = True
        scores_l.append(s)
        match_l.append(matched)
    scores = np.concatenate(scores_l) if scores_l else np.zeros(0)
    matched = np.concatenate(match_l, axis=1) if match_l else np.zeros((len(thr), 0), bool)
    order = np.argsort(-scores, kind="mergesort")
    matched = matched[:, order]
    rthr = COCO_RECALL_THRESHOLDS
    precision = np.zeros((len(thr), len(rthr)))
    recall = np.zeros(len(thr))
    if npos:
        tp = np.cumsum(matched, axis=1, dtype=np.float64)
        fp = np.cumsum(~matched, axis=1, dtype=np.float64)
        for ti in range(len(thr)):
            rc = tp[ti] / npos
            pr = tp[ti] / (fp[ti] + tp[ti] + np.spacing(1))
            pr = np.maximum.accumulate(pr[::-1])[::-1] if pr.size else pr
            recall[ti] = rc[-1] if rc.size else 0.0
            inds = np.searchsorted(rc, rthr, side="left")
            ok = inds < len(pr)
            precision[ti, ok] = pr[inds[ok]]
    else:
        recall[:] = np.nan
    return MaskAPResult(thresholds=thr, precision=precision, recall=recall, npos=npos, num_preds=len(scores))
