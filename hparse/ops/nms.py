"""Greedy non-maximum suppression, same results as ``torchvision.ops.nms`` / ``batched_nms``.

Boxes are visited by descending score (ties keep the input order: a stable sort); a box is dropped
when its IoU (no ``+1``, see ``boxes.box_iou``) with an already kept box is **strictly greater**
than ``iou_threshold``.  The "IoU > threshold" matrix is built once, vectorised, in row blocks and only
above the diagonal (a box can only suppress lower-scored ones); the greedy pass then walks it on the
CPU, touching only the rows of kept boxes.  Memory ~ N^2 / 2 bytes: meant for up to ~10k boxes.
"""

from __future__ import annotations

import numpy as np
import torch

from .boxes import box_iou

_BLOCK = 256  # rows of the IoU matrix computed at a time


@torch.no_grad()
def nms(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """Indices (int64) of the boxes kept by greedy NMS, sorted by descending score."""
    if boxes.numel() == 0:
        return torch.zeros(0, dtype=torch.long, device=boxes.device)
    order = torch.sort(scores, descending=True, stable=True).indices
    b = boxes[order]
    n = len(b)
    # row block i0 only needs the columns from i0 on (boxes of lower score)
    over = [(box_iou(b[i0:i0 + _BLOCK], b[i0:]) > iou_threshold).cpu().numpy() for i0 in range(0, n, _BLOCK)]
    suppressed = np.zeros(n, dtype=bool)
    keep = []
    for i in range(n):
        if not suppressed[i]:
            keep.append(i)
            i0 = i - i % _BLOCK
            suppressed[i0:] |= over[i0 // _BLOCK][i - i0]
    return order[torch.as_tensor(keep, dtype=torch.long, device=boxes.device)]


def batched_nms(boxes: torch.Tensor, scores: torch.Tensor, idxs: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """Class-aware NMS: boxes with different ``idxs`` never suppress each other.  torchvision's
    coordinate trick: shift each category's boxes by ``idx * (max_coordinate + 1)`` so categories cannot
    overlap, then one ``nms``."""
    if boxes.numel() == 0:
        return torch.zeros(0, dtype=torch.long, device=boxes.device)
    offsets = idxs.to(boxes) * (boxes.max() + 1)
    return nms(boxes + offsets[:, None], scores, iou_threshold)
