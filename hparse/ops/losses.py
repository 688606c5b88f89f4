"""Detection losses: focal loss (RetinaNet / FCOS classification) and FCOS box IoU losses.

- ``sigmoid_focal_loss``: Lin et al. 2017, exactly ``torchvision.ops.sigmoid_focal_loss`` /
  ``fvcore.nn.sigmoid_focal_loss``:
  ``alpha_t * (1 - p_t) ** gamma * BCE(logits, targets)`` with ``p_t = p * t + (1 - p) * (1 - t)`` and
  ``alpha_t = alpha * t + (1 - alpha) * (1 - t)`` (``alpha < 0``: no weighting).
- ``iou_loss`` / ``giou_loss``: FCOS ``IOULoss`` (also AIParsing's) on ``(l, t, r, b)`` distances from the
  same point: ``iou = (inter + 1) / (union + 1)``, ``giou = iou - (C - union) / C`` with
  ``C = enclosing area + 1e-7``; ``iou_loss = -log(iou)`` (``linear=True``: ``1 - iou``),
  ``giou_loss = 1 - giou``; with ``weight`` (e.g. centerness targets) and ``sum(weight) > 0`` the result is
  ``sum(weight * loss) / sum(weight)``, else the mean (0 for no boxes).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _reduce(loss: torch.Tensor, reduction: str) -> torch.Tensor:
    if reduction == "none":
        return loss
    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    raise ValueError(f"reduction must be 'none', 'mean' or 'sum', got {reduction!r}")


def sigmoid_focal_loss(logits: torch.Tensor, targets: torch.Tensor, alpha: float = 0.25, gamma: float = 2.0,
                       reduction: str = "none") -> torch.Tensor:
    """Focal loss on logits with binary (or soft) ``targets`` of the same shape; ``reduction``
    ``"none" | "mean" | "sum"`` (torchvision's default is ``"none"``)."""
    targets = targets.to(logits.dtype)
    p = torch.sigmoid(logits)
    ce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    p_t = p * targets + (1 - p) * (1 - targets)
    loss = ce * (1 - p_t) ** gamma
    if alpha >= 0:
        loss = (alpha * targets + (1 - alpha) * (1 - targets)) * loss
    return _reduce(loss, reduction)


def _ltrb_ious(pred: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    pl, pt, pr, pb = pred.unbind(-1)
    tl, tt, tr, tb = target.unbind(-1)
    target_area = (tl + tr) * (tt + tb)
    pred_area = (pl + pr) * (pt + pb)
    inter = (torch.min(pl, tl) + torch.min(pr, tr)) * (torch.min(pb, tb) + torch.min(pt, tt))
    enclosing = (torch.max(pl, tl) + torch.max(pr, tr)) * (torch.max(pb, tb) + torch.max(pt, tt)) + 1e-7
    union = target_area + pred_area - inter
    ious = (inter + 1.0) / (union + 1.0)
    return ious, ious - (enclosing - union) / enclosing


def _weighted_mean(loss: torch.Tensor, weight: torch.Tensor | None) -> torch.Tensor:
    if weight is not None and weight.sum() > 0:
        return (loss * weight).sum() / weight.sum()
    return loss.mean() if loss.numel() else loss.sum()


def iou_loss(pred: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None,
             linear: bool = False) -> torch.Tensor:
    """FCOS IoU loss on ``(N, 4)`` ltrb distances: ``-log(iou)`` (UnitBox), or ``1 - iou`` if ``linear``."""
    ious, _ = _ltrb_ious(pred, target)
    return _weighted_mean(1 - ious if linear else -torch.log(ious), weight)


def giou_loss(pred: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
    """FCOS GIoU loss ``1 - giou`` on ``(N, 4)`` ltrb distances."""
    _, gious = _ltrb_ious(pred, target)
    return _weighted_mean(1 - gious, weight)
