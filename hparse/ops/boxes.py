"""Box utilities.  Boxes are ``(N, 4)`` ``x1, y1, x2, y2`` in pixels with x2/y2 exclusive, so
width = ``x2 - x1`` with no ``+1`` (torchvision / Detectron2 convention, not the legacy
maskrcnn-benchmark ``TO_REMOVE = 1``).

- ``box_area``, ``box_iou`` (pairwise ``(N, M)``), ``generalized_box_iou``: as ``torchvision.ops``.
- ``clip_boxes``: clamp x to ``[0, W]`` and y to ``[0, H]`` (``torchvision.ops.clip_boxes_to_image``).
- ``BoxCoder``: Faster R-CNN deltas ``(dx, dy, dw, dh)`` as torchvision's ``det_utils.BoxCoder``.
- ``ltrb_encode`` / ``ltrb_decode``: FCOS point-to-side distances ``(l, t, r, b)``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

BBOX_XFORM_CLIP = math.log(1000.0 / 16)


def box_area(boxes: torch.Tensor) -> torch.Tensor:
    """``(x2 - x1) * (y2 - y1)`` per box (negative for inverted boxes, as torchvision)."""
    return (boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1])


def _inter_union(boxes1: torch.Tensor, boxes2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    a, b = boxes1[:, None], boxes2[None]
    w = (torch.min(a[..., 2], b[..., 2]) - torch.max(a[..., 0], b[..., 0])).clamp_(min=0)
    h = (torch.min(a[..., 3], b[..., 3]) - torch.max(a[..., 1], b[..., 1])).clamp_(min=0)
    inter = w.mul_(h)
    return inter, box_area(boxes1)[:, None] + box_area(boxes2)[None, :] - inter


def box_iou(boxes1: torch.Tensor, boxes2: torch.Tensor) -> torch.Tensor:
    """Pairwise IoU ``(N, M)``: ``inter / (area1 + area2 - inter)`` (0/0 = NaN, as torchvision)."""
    inter, union = _inter_union(boxes1, boxes2)
    return inter / union


def generalized_box_iou(boxes1: torch.Tensor, boxes2: torch.Tensor) -> torch.Tensor:
    """Pairwise GIoU ``(N, M)`` = ``IoU - (C - union) / C`` with C the smallest enclosing box's area
    (Rezatofighi et al. 2019; ``torchvision.ops.generalized_box_iou``)."""
    inter, union = _inter_union(boxes1, boxes2)
    a, b = boxes1[:, None], boxes2[None]
    enclosing = ((torch.max(a[..., 2], b[..., 2]) - torch.min(a[..., 0], b[..., 0])).clamp(min=0)
                 * (torch.max(a[..., 3], b[..., 3]) - torch.min(a[..., 1], b[..., 1])).clamp(min=0))
    return inter / union - (enclosing - union) / enclosing


def clip_boxes(boxes: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Clamp boxes to an image of ``size = (H, W)``: x to ``[0, W]``, y to ``[0, H]``."""
    h, w = int(size[0]), int(size[1])
    x = boxes[..., 0::2].clamp(0, w)
    y = boxes[..., 1::2].clamp(0, h)
    return torch.stack((x, y), dim=-1).reshape(boxes.shape)


class BoxCoder:
    """Faster R-CNN box deltas (torchvision ``det_utils.BoxCoder``, Detectron2 ``Box2BoxTransform``).

    ``encode(gt, proposals)``: ``dx = wx * (gx - px) / pw``, ``dy = wy * (gy - py) / ph``,
    ``dw = ww * log(gw / pw)``, ``dh = wh * log(gh / ph)`` with centres/sizes from x2 - x1 (no +1).
    ``decode(deltas, proposals)`` inverts it; ``dw``/``dh`` are clamped to ``bbox_xform_clip``
    (``log(1000 / 16)``) before ``exp``.  ``deltas`` may be ``(N, 4 * K)`` (class-specific), giving
    ``(N, 4 * K)`` boxes.  Default weights ``(10, 10, 5, 5)`` are the R-CNN box head's; RPN uses ones.
    """

    def __init__(self, weights: Sequence[float] = (10.0, 10.0, 5.0, 5.0), bbox_xform_clip: float = BBOX_XFORM_CLIP):
        self.weights = tuple(float(w) for w in weights)
        self.bbox_xform_clip = bbox_xform_clip

    @staticmethod
    def _ctr_size(boxes: torch.Tensor) -> tuple[torch.Tensor, ...]:
        w = boxes[:, 2] - boxes[:, 0]
        h = boxes[:, 3] - boxes[:, 1]
        return boxes[:, 0] + 0.5 * w, boxes[:, 1] + 0.5 * h, w, h

    def encode(self, gt: torch.Tensor, proposals: torch.Tensor) -> torch.Tensor:
        wx, wy, ww, wh = self.weights
        px, py, pw, ph = self._ctr_size(proposals)
        gx, gy, gw, gh = self._ctr_size(gt)
        return torch.stack((wx * (gx - px) / pw, wy * (gy - py) / ph,
                            ww * torch.log(gw / pw), wh * torch.log(gh / ph)), dim=1)

    def decode(self, deltas: torch.Tensor, proposals: torch.Tensor) -> torch.Tensor:
        wx, wy, ww, wh = self.weights
        deltas = deltas.to(proposals.dtype)
        px, py, pw, ph = (t[:, None] for t in self._ctr_size(proposals))
        dx, dy = deltas[:, 0::4] / wx, deltas[:, 1::4] / wy
        dw = (deltas[:, 2::4] / ww).clamp(max=self.bbox_xform_clip)
        dh = (deltas[:, 3::4] / wh).clamp(max=self.bbox_xform_clip)
        cx, cy = dx * pw + px, dy * ph + py
        half_w, half_h = 0.5 * torch.exp(dw) * pw, 0.5 * torch.exp(dh) * ph
        return torch.stack((cx - half_w, cy - half_h, cx + half_w, cy + half_h), dim=2).flatten(1)


def ltrb_encode(points: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """FCOS regression targets: distances ``(px - x1, py - y1, x2 - px, y2 - py)`` from ``points`` ``(N, 2)``
    (x, y) to the sides of ``boxes`` ``(N, 4)``; all positive iff the point lies inside the box."""
    return torch.cat((points - boxes[:, :2], boxes[:, 2:] - points), dim=1)


def ltrb_decode(points: torch.Tensor, distances: torch.Tensor) -> torch.Tensor:
    """Inverse of ``ltrb_encode``: ``(px - l, py - t, px + r, py + b)`` (FCOS post-processing)."""
    return torch.cat((points - distances[:, :2], points + distances[:, 2:]), dim=1)
