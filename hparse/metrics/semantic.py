"""Semantic-parsing metrics: confusion matrix, mIoU / accuracies / ATR F1, isolated pixel rate.

Everything is computed from one ``(C, C)`` int64 confusion matrix ``M[g, p]`` (rows = GT,
as in CE2P, SCHP, CNIF, HHP and Parsing R-CNN; detectron2 stores the transpose). With
``tp = diag(M)``, ``pos = M.sum(1)`` (GT pixels per class) and ``res = M.sum(0)``
(predicted pixels per class):

* pixel accuracy = sum(tp) / sum(pos)
* class accuracy = tp / pos; mean accuracy = its mean
* IoU = tp / (pos + res - tp); mIoU = its mean

Three conventions differ only for classes with no GT and/or no prediction (see
:func:`semantic_scores`). Scores are stored as fractions in [0, 1]; only
:meth:`SemanticScores.format_table` shows percentages (x100, like the official printouts).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

CONVENTIONS = ("ce2p", "nan", "d2")


def _to_numpy(x) -> np.ndarray:
    if hasattr(x, "detach"):  # torch.Tensor, without importing torch here
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def _check_int(name: str, a: np.ndarray) -> None:
    if a.dtype.kind not in "iub":
        raise TypeError(f"{name} must be an integer label map, got dtype {a.dtype}")


# --------------------------------------------------------------------------- confusion matrix


class ConfusionMatrix:
    """Accumulates ``M[g, p]`` (rows = GT, columns = prediction) over label maps.

    A pixel counts iff ``gt != ignore_index`` and ``0 <= gt < C`` and ``0 <= pred < C``.
    Pixels with a valid GT but an out-of-range prediction are *not* counted in the matrix
    (mmseg drops them silently too); their number is kept in :attr:`invalid_pred` so a
    caller can warn. GT values outside ``[0, C)`` other than ``ignore_index`` are counted
    in :attr:`invalid_gt` and skipped.
    """

    def __init__(self, num_classes: int, ignore_index: int = 255):
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.num_classes = int(num_classes)
        self.ignore_index = ignore_index
        self.reset()

    def reset(self) -> None:
        self.matrix = np.zeros((self.num_classes, self.num_classes), dtype=np.int64)
        self.invalid_pred = 0
        self.invalid_gt = 0

    def update(self, pred, gt) -> ConfusionMatrix:
        """Add one prediction / GT pair (numpy arrays or torch tensors, any int dtype, same shape)."""
        pred, gt = _to_numpy(pred), _to_numpy(gt)
        if pred.shape != gt.shape:
            raise ValueError(f"pred shape {tuple(pred.shape)} != gt shape {tuple(gt.shape)}")
        _check_int("pred", pred)
        _check_int("gt", gt)
        c = self.num_classes
        g = gt.ravel().astype(np.int64)
        p = pred.ravel().astype(np.int64)
        in_range_gt = (g >= 0) & (g < c)
        valid_gt = in_range_gt if self.ignore_index is None else in_range_gt & (g != self.ignore_index)
        if self.ignore_index is not None:
            self.invalid_gt += int(np.count_nonzero(~in_range_gt & (g != self.ignore_index)))
        else:
            self.invalid_gt += int(np.count_nonzero(~in_range_gt))
        ok_pred = (p >= 0) & (p < c)
        self.invalid_pred += int(np.count_nonzero(valid_gt & ~ok_pred))
        keep = valid_gt & ok_pred
        self.matrix += np.bincount(c * g[keep] + p[keep], minlength=c * c).reshape(c, c)
        return self

    def merge(self, other: ConfusionMatrix) -> ConfusionMatrix:
        if other.num_classes != self.num_classes:
            raise ValueError(f"cannot merge {other.num_classes}-class matrix into {self.num_classes}-class")
        self.matrix += other.matrix
        self.invalid_pred += other.invalid_pred
        self.invalid_gt += other.invalid_gt
        return self

    def __iadd__(self, other: ConfusionMatrix) -> ConfusionMatrix:
        return self.merge(other)

    def scores(self, convention: str = "ce2p", class_names=None, atr_quirk: bool = True) -> SemanticScores:
        return semantic_scores(self.matrix, convention, class_names, atr_quirk)

    def to_dict(self) -> dict:
        return {"num_classes": self.num_classes, "ignore_index": self.ignore_index,
                "matrix": self.matrix.tolist(), "invalid_pred": self.invalid_pred,
                "invalid_gt": self.invalid_gt}

    @classmethod
    def from_dict(cls, d: dict) -> ConfusionMatrix:
        cm = cls(d["num_classes"], d.get("ignore_index", 255))
        m = np.asarray(d["matrix"], dtype=np.int64)
        if m.shape != cm.matrix.shape:
            raise ValueError(f"matrix shape {m.shape} does not match num_classes={cm.num_classes}")
        cm.matrix = m
        cm.invalid_pred = int(d.get("invalid_pred", 0))
        cm.invalid_gt = int(d.get("invalid_gt", 0))
        return cm

    def __repr__(self) -> str:
        return (f"ConfusionMatrix(num_classes={self.num_classes}, pixels={int(self.matrix.sum())}, "
                f"invalid_pred={self.invalid_pred})")


# --------------------------------------------------------------------------- scores


def _div(a, b, guard: bool):
    """a / b elementwise; ``guard``: divide by max(1, b) (CE2P), else 0/0 -> NaN."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if guard:
        return a / np.maximum(1.0, b)
    with np.errstate(divide="ignore", invalid="ignore"):
        return a / b


def f1_from_means(mean_p: float, mean_r: float) -> float:
    """HHP's F1: the harmonic mean of the class-averaged precision and recall (0 when both are 0)."""
    if math.isnan(mean_p + mean_r):
        return math.nan
    return 2 * mean_p * mean_r / (mean_p + mean_r) if mean_p + mean_r > 0 else 0.0


def _nanmean(x: np.ndarray) -> float:
    x = x[~np.isnan(x)]
    return float(x.mean()) if x.size else math.nan


@dataclass
class SemanticScores:
    """Scores from one confusion matrix. All values are fractions in [0, 1] (NaN = undefined).

    Per-class arrays (length C): ``class_iou``, ``class_acc`` (= per-class recall, tp/pos),
    ``class_precision`` (tp/res), ``class_recall`` (tp/pos), ``class_f1`` (2tp/(pos+res)),
    ``gt_pixels`` (pos), ``pred_pixels`` (res). ``class_iou`` / ``class_acc`` follow
    ``convention``; precision / recall / F1 per class always use the max(1, .) guard.

    ATR / Fashion Clothing set (HHP ``val/f1_eval_atr.py``): ``fg_acc``,
    ``mean_precision``, ``mean_recall``, ``f1`` -- see :func:`semantic_scores`.
    """

    convention: str
    atr_quirk: bool
    class_names: tuple[str, ...]
    class_iou: np.ndarray
    class_acc: np.ndarray
    class_precision: np.ndarray
    class_recall: np.ndarray
    class_f1: np.ndarray
    gt_pixels: np.ndarray
    pred_pixels: np.ndarray
    pixel_acc: float
    mean_acc: float
    miou: float
    fg_acc: float
    mean_precision: float
    mean_recall: float
    f1: float

    SUMMARY = ("pixel_acc", "mean_acc", "miou", "fg_acc", "mean_precision", "mean_recall", "f1")

    def summary(self) -> dict:
        """The headline scores as plain floats (fractions in [0, 1]; NaN stays NaN)."""
        return {k: float(getattr(self, k)) for k in self.SUMMARY}

    def to_dict(self) -> dict:
        """JSON-able dict: plain floats as fractions in [0, 1]; NaN becomes ``None``."""

        def f(v):
            v = float(v)
            return None if math.isnan(v) else v

        out = {"convention": self.convention, "atr_quirk": self.atr_quirk}
        out.update({k: f(getattr(self, k)) for k in self.SUMMARY})
        out["per_class"] = {
            name: {"iou": f(self.class_iou[i]), "acc": f(self.class_acc[i]),
                   "precision": f(self.class_precision[i]), "recall": f(self.class_recall[i]),
                   "f1": f(self.class_f1[i]), "gt_pixels": int(self.gt_pixels[i]),
                   "pred_pixels": int(self.pred_pixels[i])}
            for i, name in enumerate(self.class_names)
        }
        return out

    def format_table(self, digits: int = 2) -> str:
        """Plain-text tables in percent: per-class IoU / Acc / F1, then the summary block."""

        def pct(v) -> str:
            return "nan" if math.isnan(v) else f"{100 * v:.{digits}f}"

        w = max(10, *(len(n) for n in self.class_names)) + 4
        head = f"{'class':<{w}}{'IoU':>9}{'Acc':>9}{'F1':>9}{'GT px':>12}"
        lines = [f"Per-class scores (%, convention={self.convention})", head, "-" * len(head)]
        for i, name in enumerate(self.class_names):
            lines.append(f"{i:>2} {name:<{w - 3}}{pct(self.class_iou[i]):>9}{pct(self.class_acc[i]):>9}"
                         f"{pct(self.class_f1[i]):>9}{int(self.gt_pixels[i]):>12}")
        lines.append("-" * len(head))
        p_note, r_note = (" (HHP name; = mean per-class recall)", " (HHP name; = mean per-class precision)") \
            if self.atr_quirk else ("", "")
        rows = [("Pixel accuracy", self.pixel_acc, ""), ("Mean accuracy", self.mean_acc, ""),
                ("mIoU", self.miou, ""), ("FG accuracy", self.fg_acc, ""),
                ("Mean precision", self.mean_precision, p_note), ("Mean recall", self.mean_recall, r_note),
                ("F1", self.f1, " (from mean P and R)")]
        lines += [f"{k:<16}{pct(v):>8}{note}" for k, v, note in rows]
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.format_table()


def resolve_class_names(class_names, c: int) -> tuple[str, ...]:
    """Names of a ``c``-class matrix: a sequence of names, a label set (its ``classes``) or None (ids)."""
    if class_names is None:
        return tuple(str(i) for i in range(c))
    class_names = getattr(class_names, "classes", class_names)
    if isinstance(class_names, str):
        raise TypeError(f"class_names must be names or a label set, not the string {class_names!r}")
    names = tuple(str(n) for n in class_names)
    if len(names) != c:
        raise ValueError(f"{len(names)} class names for a {c}-class matrix")
    return names


def semantic_scores(matrix, convention: str = "ce2p", class_names=None,
                    atr_quirk: bool = True) -> SemanticScores:
    """Compute all semantic scores from one confusion matrix (rows = GT).

    ``matrix`` is a ``(C, C)`` array or a :class:`ConfusionMatrix`. ``class_names`` is a
    sequence of C names, a registered label-set name (``"lip"``, ``"atr"`` ...), or None.

    ``convention`` (affects ``class_iou``, ``class_acc``, ``miou``, ``mean_acc``, ``pixel_acc``):

    * ``"ce2p"`` -- CE2P ``utils/miou.py``, SCHP ``utils/miou.compute_mean_ioU``, CNIF and
      HHP eval scripts: divide by max(1, denominator), average over **all** C classes, so
      a class absent from both GT and prediction counts as 0.
    * ``"nan"`` -- Parsing R-CNN / AIParsing ``parsing_eval`` and mmseg ``IoUMetric``:
      0/0 = NaN, then nanmean. Absent from both -> skipped; predicted but no GT -> IoU 0
      (its accuracy is 0/0 -> skipped).
    * ``"d2"`` -- detectron2 ``SemSegEvaluator``: only classes with GT pixels are
      averaged (for both mIoU and mACC), even if other classes were predicted.

    ATR / Fashion Clothing set, always averaged over all C classes (HHP
    ``val/f1_eval_atr.py``):

    * ``fg_acc`` = sum(tp[1:]) / max(1, sum(pos[1:])) (class 0 = background).
    * ``atr_quirk=True`` (default, reproduces HHP): ``mean_precision`` = mean(tp / max(1, pos))
      -- really the mean per-class *recall* -- and ``mean_recall`` = mean(tp / res) -- really
      the mean per-class *precision*, NaN when some class is never predicted (so F1 is NaN).
    * ``atr_quirk=False``: correctly named, guarded: ``mean_precision`` = mean(tp / max(1, res)),
      ``mean_recall`` = mean(tp / max(1, pos)).
    * ``f1`` = 2 P R / (P + R) from the class-averaged P and R (0 when P + R = 0), **not**
      the mean of per-class F1 (that is mmseg's mFscore; per-class F1 is in ``class_f1``).
      The naming swap does not change ``f1``.
    """
    if convention not in CONVENTIONS:
        raise ValueError(f"convention must be one of {CONVENTIONS}, got {convention!r}")
    m = matrix.matrix if isinstance(matrix, ConfusionMatrix) else _to_numpy(matrix)
    if m.ndim != 2 or m.shape[0] != m.shape[1]:
        raise ValueError(f"confusion matrix must be square (C, C), got shape {m.shape}")
    m = m.astype(np.float64)
    c = m.shape[0]
    tp, pos, res = np.diag(m), m.sum(1), m.sum(0)
    union = pos + res - tp

    guard = convention == "ce2p"
    iou, acc = _div(tp, union, guard), _div(tp, pos, guard)
    if convention == "d2":
        iou[pos == 0] = np.nan
        acc[pos == 0] = np.nan
    if guard:
        miou, mean_acc = float(iou.mean()), float(acc.mean())
    else:
        miou, mean_acc = _nanmean(iou), _nanmean(acc)
    pixel_acc = float(_div(tp.sum(), pos.sum(), guard))

    prec, rec = _div(tp, res, True), _div(tp, pos, True)
    if atr_quirk:
        mean_p, mean_r = float(rec.mean()), float(_div(tp, res, False).mean())
    else:
        mean_p, mean_r = float(prec.mean()), float(rec.mean())
    f1 = f1_from_means(mean_p, mean_r)

    return SemanticScores(
        convention=convention, atr_quirk=atr_quirk, class_names=resolve_class_names(class_names, c),
        class_iou=iou, class_acc=acc, class_precision=prec, class_recall=rec,
        class_f1=_div(2 * tp, pos + res, True), gt_pixels=pos.astype(np.int64),
        pred_pixels=res.astype(np.int64), pixel_acc=pixel_acc, mean_acc=mean_acc, miou=miou,
        fg_acc=float(_div(tp[1:].sum(), pos[1:].sum(), True)), mean_precision=mean_p,
        mean_recall=mean_r, f1=float(f1))


def person_iou(pred, truth, ignore: int = 255, background: int = 0) -> float:
    """IoU of person vs background: pixels labelled as any part in ``pred`` against those in ``truth`` (label
    maps of any two label sets), ``ignore`` pixels of ``truth`` left out."""
    pred, truth = _to_numpy(pred), _to_numpy(truth)
    valid = truth != ignore
    ours, theirs = (pred != background) & valid, (truth != background) & valid
    return float((ours & theirs).sum() / max((ours | theirs).sum(), 1))


# --------------------------------------------------------------------------- IPR


def isolated_pixel_rate(pred, k: int = 1, ignore: int | None = None, foreground_only: bool = False,
                        background: int = 0, connectivity: int = 8) -> tuple[int, int]:
    """Isolated pixel rate of a label map, returned as ``(count, total)``.

    A pixel is *isolated* iff its same-label connected component (8-connected by default,
    4 with ``connectivity=4``) has **area <= k** pixels. With ``k=1`` this means none of
    its 8 neighbours has the same label; ``k=10`` / ``20`` measure small speckles.

    ``total`` is the number of counted pixels: all pixels except those labelled ``ignore``
    (if given); with ``foreground_only=True`` also excluding ``background``. ``count`` is
    the number of isolated pixels among them. Pixels labelled ``ignore`` still act as a
    different label for their neighbours. Images are independent: ``pred`` may be
    ``(H, W)`` or ``(..., H, W)`` (connectivity never crosses images).

    Aggregate over a dataset as a ratio of sums (:class:`IPRMeter`); compute it at the
    original resolution and report the GT's IPR as a floor. No official definition exists
    (reference notes B.7); this is the proposed one with "area <= k".
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if connectivity not in (4, 8):
        raise ValueError(f"connectivity must be 4 or 8, got {connectivity}")
    a = _to_numpy(pred)
    _check_int("pred", a)
    if a.ndim < 2:
        raise ValueError(f"pred must be (..., H, W), got shape {a.shape}")
    a = a.reshape(-1, *a.shape[-2:])
    structure = np.zeros((3, 3, 3), dtype=bool)  # connect within each image only
    structure[1] = ndimage.generate_binary_structure(2, 1 if connectivity == 4 else 2)
    skip = set() if ignore is None else {ignore}
    if foreground_only:
        skip.add(background)
    count = total = 0
    for lab in np.unique(a):
        if lab in skip:
            continue
        comp, n = ndimage.label(a == lab, structure=structure)
        sizes = np.bincount(comp.ravel())[1:]
        count += int(sizes[sizes <= k].sum())
        total += int(sizes.sum())
    return count, total


class IPRMeter:
    """Accumulates :func:`isolated_pixel_rate` over images; ``value`` = sum(count) / sum(total)."""

    def __init__(self, k: int = 1, ignore: int | None = None, foreground_only: bool = False,
                 background: int = 0, connectivity: int = 8):
        self.kwargs = dict(k=k, ignore=ignore, foreground_only=foreground_only, background=background,
                           connectivity=connectivity)
        self.reset()

    def reset(self) -> None:
        self.count = self.total = 0

    def update(self, pred) -> tuple[int, int]:
        c, t = isolated_pixel_rate(pred, **self.kwargs)
        self.count += c
        self.total += t
        return c, t

    @property
    def value(self) -> float:
        return self.count / self.total if self.total else math.nan

    def to_dict(self) -> dict:
        return {"count": self.count, "total": self.total,
                "ipr": None if not self.total else self.value, **self.kwargs}


# --------------------------------------------------------------------------- low resolution


def resize_label_nearest(label, size):
    """Nearest-neighbour resize of a label map ``(..., H, W)`` to ``size`` ``(h, w)``: output cell
    ``(i, j)`` takes the input pixel at ``(floor((i + 0.5) * H / h), floor((j + 0.5) * W / w))``, as PIL
    ``resize(..., NEAREST)``. Numpy in -> numpy out, torch in -> torch out."""
    h_in, w_in = label.shape[-2:]
    h, w = int(size[0]), int(size[1])
    if (h, w) == (h_in, w_in):
        return label
    rows = ((np.arange(h) + 0.5) * h_in / h).astype(np.int64)
    cols = ((np.arange(w) + 0.5) * w_in / w).astype(np.int64)
    if hasattr(label, "detach"):
        import torch

        rows, cols = torch.as_tensor(rows, device=label.device), torch.as_tensor(cols, device=label.device)
        return label.index_select(-2, rows).index_select(-1, cols)
    label = np.asarray(label)
    return label[..., rows, :][..., cols]


def low_resolution(label, factor: int = 16):
    """Nearest-neighbour downsample of a label map ``(..., H, W)`` by ``factor`` to
    ``(..., H // factor, W // factor)`` (:func:`resize_label_nearest`): for H divisible by ``factor`` the
    centre pixel ``(i * factor + factor // 2)`` of each factor x factor cell. This equals PIL
    ``resize(..., NEAREST)``, which MMAN uses for its 16x16 label thumbnails (its low-resolution mIoU).
    """
    h_in, w_in = label.shape[-2:]
    h, w = h_in // factor, w_in // factor
    if h < 1 or w < 1:
        raise ValueError(f"label of size {h_in}x{w_in} is smaller than factor {factor}")
    return resize_label_nearest(label, (h, w))
