"""FCOS (Tian et al., ICCV'19), the anchor-free one-stage detector of AIParsing, as in the authors'
maskrcnn-benchmark / CenterMask code (reference-notes A.3, instance-parsers spec 2.1.1-2.1.4).

- **Points**: level l of stride s has a location per feature cell, ``(j s + s // 2, i s + s // 2)``.
- **Targets** (:func:`assign_targets`): a location is a candidate for a ground-truth box when it lies inside
  the box -- with centre sampling, strictly inside the box cut down to ``[c - r s, c + r s]`` around the box
  centre c (``r = center_sampling_radius``) -- and the largest of its distances ``(l, t, r, b)`` to the box
  sides lies in the level's size range (both ends inclusive). Among several candidates the box of minimum
  area wins (the first on ties). Regression targets are those distances in input pixels (no stride
  normalisation), centerness ``sqrt(min(l, r) / max(l, r) * min(t, b) / max(t, b))``.
- **Head** (:class:`FCOSHead`): classification and box towers of ``num_convs`` x (conv3x3 + GroupNorm +
  ReLU), conv3x3 predictors for the class logits, the four distances (``exp(scale_l * x)`` with a learnable
  per-level scale, initialised to 1) and centerness (on the box tower); convs N(0, 0.01), the class bias
  ``-log((1 - p) / p)`` for the prior ``p = 0.01``.
- **Losses** (:meth:`FCOS.losses`): sigmoid focal loss (alpha 0.25, gamma 2) summed and divided by
  ``num_positives + num_images``; the IoU loss ``-ln IoU`` (UnitBox, the paper) or GIoU (the code:
  ``box_loss="giou"``) on the positives, weighted by their centerness targets (``sum(w l) / sum(w)``); the
  centerness BCE averaged over the positives.
- **Detections** (:meth:`FCOS.detect`): per level the locations whose class probability exceeds
  ``score_thresh`` (0.05; the AIParsing code: 0.03), the ``pre_nms_top_n`` best by probability x centerness;
  boxes decoded, clipped to the image, empty ones dropped; class-wise NMS (0.6) over all levels; the best
  ``max_per_image`` kept (100 while training, 50 at test).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ...ops import batched_nms, clip_boxes, giou_loss, iou_loss, ltrb_decode, sigmoid_focal_loss
from ..blocks import group_norm

INF = float("inf")
BOX_LOSSES = {"iou": iou_loss, "giou": giou_loss}


def default_size_ranges(strides: Sequence[int]) -> list[tuple[float, float]]:
    """FCOS's ranges of ``max(l, t, r, b)`` per level: ``(-1, 8 s_0)``, ``(8 s_0, 8 s_1)``, ..., the last
    one open (P3..P7: -1/64/128/256/512/inf)."""
    bounds = [-1.0] + [8.0 * s for s in strides[:-1]] + [INF]
    return list(zip(bounds[:-1], bounds[1:]))


def level_points(sizes: Sequence[tuple[int, int]], strides: Sequence[int], device=None) -> list[torch.Tensor]:
    """The ``(x, y)`` location of every cell of each level, ``(h * w, 2)`` float, row-major."""
    points = []
    for (h, w), s in zip(sizes, strides):
        ys = torch.arange(h, device=device, dtype=torch.float32) * s + s // 2
        xs = torch.arange(w, device=device, dtype=torch.float32) * s + s // 2
        points.append(torch.stack(torch.meshgrid(xs, ys, indexing="xy"), -1).reshape(-1, 2))
    return points


def centerness_targets(distances: torch.Tensor) -> torch.Tensor:
    """``sqrt(min(l, r) / max(l, r) * min(t, b) / max(t, b))`` of ``(N, 4)`` ltrb distances."""
    lr, tb = distances[:, 0::2], distances[:, 1::2]
    return torch.sqrt((lr.min(1).values / lr.max(1).values) * (tb.min(1).values / tb.max(1).values))


def assign_targets(points: torch.Tensor, strides: torch.Tensor, ranges: torch.Tensor, boxes: torch.Tensor,
                   classes: torch.Tensor | None = None, radius: float = 1.5
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """FCOS targets of one image (see the module docstring).

    ``points`` (P, 2), each point's level ``strides`` (P,) and size ``ranges`` (P, 2); ground-truth ``boxes``
    (G, 4) and ``classes`` (G,) in 1..K (default 1). ``radius <= 0`` turns centre sampling off. Returns
    ``(labels, distances, matched)``: (P,) class (0 = background), (P, 4) ltrb distances to the matched box,
    (P,) index of that box (0 for background points).
    """
    p, g = len(points), len(boxes)
    if g == 0:
        return (torch.zeros(p, dtype=torch.long, device=points.device), points.new_zeros((p, 4)),
                torch.zeros(p, dtype=torch.long, device=points.device))
    x, y = points[:, 0, None], points[:, 1, None]
    x0, y0, x1, y1 = boxes.unbind(1)
    dist = torch.stack((x - x0, y - y0, x1 - x, y1 - y), dim=2)                           # (P, G, 4)
    if radius > 0:
        reach = strides.to(points.dtype)[:, None] * radius
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        inner = torch.stack((x - torch.maximum(cx - reach, x0), y - torch.maximum(cy - reach, y0),
                             torch.minimum(cx + reach, x1) - x, torch.minimum(cy + reach, y1) - y), dim=2)
        inside = inner.min(dim=2).values > 0
    else:
        inside = dist.min(dim=2).values > 0
    largest = dist.max(dim=2).values
    in_range = (largest >= ranges[:, 0, None]) & (largest <= ranges[:, 1, None])
    area = ((x1 - x0) * (y1 - y0))[None].expand(p, g).clone()
    area[~(inside & in_range)] = INF
    min_area, matched = area.min(dim=1)
    classes = torch.ones(g, dtype=torch.long, device=points.device) if classes is None else classes.long()
    labels = torch.where(min_area < INF, classes[matched], torch.zeros_like(matched))
    return labels, dist[torch.arange(p, device=points.device), matched], matched


class Scale(nn.Module):
    """A learnable scalar multiplier (initialised to ``init``)."""

    def __init__(self, init: float = 1.0):
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(float(init)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale


def _tower(channels: int, num_convs: int, gn_groups: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    for _ in range(num_convs):
        layers += [nn.Conv2d(channels, channels, 3, padding=1), group_norm(channels, gn_groups), nn.ReLU(inplace=True)]
    return nn.Sequential(*layers)


class FCOSHead(nn.Module):
    """The head shared over the levels; ``forward(features)`` -> (class logits, ltrb distances, centerness
    logits), each a list over the levels of (B, K | 4 | 1, h, w)."""

    def __init__(self, channels: int, num_levels: int, num_classes: int = 1, num_convs: int = 4,
                 gn_groups: int = 32, prior_prob: float = 0.01):
        super().__init__()
        self.cls_tower = _tower(channels, num_convs, gn_groups)
        self.bbox_tower = _tower(channels, num_convs, gn_groups)
        self.cls_logits = nn.Conv2d(channels, num_classes, 3, padding=1)
        self.bbox_pred = nn.Conv2d(channels, 4, 3, padding=1)
        self.centerness = nn.Conv2d(channels, 1, 3, padding=1)
        self.scales = nn.ModuleList(Scale() for _ in range(num_levels))
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, std=0.01)
                nn.init.zeros_(m.bias)
        nn.init.constant_(self.cls_logits.bias, -math.log((1 - prior_prob) / prior_prob))

    def forward(self, features: Sequence[torch.Tensor]):
        logits, distances, centerness = [], [], []
        for x, scale in zip(features, self.scales):
            box = self.bbox_tower(x)
            logits.append(self.cls_logits(self.cls_tower(x)))
            distances.append(torch.exp(scale(self.bbox_pred(box))))
            centerness.append(self.centerness(box))
        return logits, distances, centerness


@dataclass
class FCOSOutputs:
    """Raw head outputs per level and the locations of their cells."""

    logits: list[torch.Tensor]        # (B, K, h, w)
    distances: list[torch.Tensor]     # (B, 4, h, w), input pixels
    centerness: list[torch.Tensor]    # (B, 1, h, w)
    points: list[torch.Tensor]        # (h * w, 2)

    def flat(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """All levels' cells in one row per image: (B, P, K), (B, P, 4), (B, P)."""
        def cat(maps):
            return torch.cat([m.flatten(2).transpose(1, 2) for m in maps], 1)
        return cat(self.logits), cat(self.distances), cat(self.centerness)[..., 0]


@dataclass
class Detections:
    """One image's detections, best first."""

    boxes: torch.Tensor    # (N, 4)
    scores: torch.Tensor   # (N,)
    classes: torch.Tensor  # (N,) in 1..K


class FCOS(nn.Module):
    """Head + targets + losses + detections over feature levels of the given ``strides`` (see the module
    docstring); ``size_ranges`` default to :func:`default_size_ranges`."""

    def __init__(self, channels: int, strides: Sequence[int], num_classes: int = 1, num_convs: int = 4,
                 gn_groups: int = 32, prior_prob: float = 0.01, size_ranges: Sequence[Sequence[float]] | None = None,
                 center_sampling_radius: float = 1.5, box_loss: str = "iou", focal_alpha: float = 0.25,
                 focal_gamma: float = 2.0, score_thresh: float = 0.05, pre_nms_top_n: int = 1000,
                 nms_thresh: float = 0.6, detections_train: int = 100, detections_test: int = 50):
        super().__init__()
        if box_loss not in BOX_LOSSES:
            raise ValueError(f"box_loss must be one of {', '.join(BOX_LOSSES)}, got {box_loss!r}")
        ranges = default_size_ranges(strides) if size_ranges is None else [tuple(r) for r in size_ranges]
        if len(ranges) != len(strides):
            raise ValueError(f"{len(ranges)} size ranges for {len(strides)} levels")
        self.strides, self.size_ranges = tuple(int(s) for s in strides), ranges
        self.head = FCOSHead(channels, len(strides), num_classes, num_convs, gn_groups, prior_prob)
        self.radius, self.box_loss = center_sampling_radius, BOX_LOSSES[box_loss]
        self.alpha, self.gamma = focal_alpha, focal_gamma
        self.score_thresh, self.pre_nms_top_n, self.nms_thresh = score_thresh, pre_nms_top_n, nms_thresh
        self.detections_train, self.detections_test = detections_train, detections_test

    def forward(self, features: Sequence[torch.Tensor]) -> FCOSOutputs:
        logits, distances, centerness = self.head(features)
        sizes = [tuple(f.shape[-2:]) for f in features]
        return FCOSOutputs(logits, distances, centerness, level_points(sizes, self.strides, features[0].device))

    # -- training ---------------------------------------------------------------------------------------
    def targets(self, out: FCOSOutputs, boxes: Sequence[torch.Tensor], classes: Sequence[torch.Tensor] | None = None):
        """Per image ``(labels (P,), distances (P, 4))`` over all levels' points."""
        points = torch.cat(out.points)
        counts = [len(p) for p in out.points]
        strides = torch.repeat_interleave(torch.tensor(self.strides, device=points.device),
                                          torch.tensor(counts, device=points.device))
        ranges = torch.repeat_interleave(torch.tensor(self.size_ranges, device=points.device, dtype=points.dtype),
                                         torch.tensor(counts, device=points.device), dim=0)
        classes = classes if classes is not None else [None] * len(boxes)
        return [assign_targets(points, strides, ranges, b.to(points.dtype), c, self.radius)[:2]
                for b, c in zip(boxes, classes)]

    def losses(self, out: FCOSOutputs, boxes: Sequence[torch.Tensor],
               classes: Sequence[torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
        """``{"fcos_cls", "fcos_box", "fcos_ctr"}`` for the ground-truth ``boxes`` (and ``classes``) per image."""
        logits, distances, centerness = out.flat()
        labels, targets = (torch.stack(t) for t in zip(*self.targets(out, boxes, classes)))
        onehot = F.one_hot(labels, logits.shape[-1] + 1)[..., 1:].to(logits.dtype)
        positive = labels > 0
        num_pos = int(positive.sum())
        cls = sigmoid_focal_loss(logits, onehot, self.alpha, self.gamma, "sum") / (num_pos + len(labels))
        if num_pos == 0:
            zero = distances.sum() * 0 + centerness.sum() * 0
            return {"fcos_cls": cls, "fcos_box": zero, "fcos_ctr": zero}
        pos_targets = targets[positive]
        ctr_targets = centerness_targets(pos_targets)
        return {"fcos_cls": cls,
                "fcos_box": self.box_loss(distances[positive], pos_targets, ctr_targets),
                "fcos_ctr": F.binary_cross_entropy_with_logits(centerness[positive], ctr_targets)}

    # -- detections -------------------------------------------------------------------------------------
    @torch.no_grad()
    def detect(self, out: FCOSOutputs, image_sizes: Sequence[tuple[int, int]],
               max_per_image: int | None = None) -> list[Detections]:
        """The detections of every image (``max_per_image`` default: 100 in training mode, 50 in eval)."""
        if max_per_image is None:
            max_per_image = self.detections_train if self.training else self.detections_test
        result = []
        for i, size in enumerate(image_sizes):
            levels = [self._level_candidates(out.logits[k][i], out.distances[k][i], out.centerness[k][i],
                                             out.points[k]) for k in range(len(out.points))]
            boxes, scores, classes = (torch.cat(t) for t in zip(*levels))
            boxes = clip_boxes(boxes, size)
            keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
            boxes, scores, classes = boxes[keep], scores[keep], classes[keep]
            keep = batched_nms(boxes, scores, classes, self.nms_thresh)[:max_per_image]
            result.append(Detections(boxes[keep], scores[keep], classes[keep]))
        return result

    def _level_candidates(self, logits, distances, centerness, points):
        """One image, one level: (boxes, scores, classes) of the best ``pre_nms_top_n`` candidates."""
        prob = logits.flatten(1).t().float().sigmoid()                         # (h w, K)
        score = prob * centerness.flatten().float().sigmoid()[:, None]
        cell, cls = torch.nonzero(prob > self.score_thresh, as_tuple=True)
        score = score[cell, cls]
        if len(score) > self.pre_nms_top_n:
            score, top = score.topk(self.pre_nms_top_n)
            cell, cls = cell[top], cls[top]
        boxes = ltrb_decode(points[cell], distances.flatten(1).t()[cell].float())
        return boxes, score, cls + 1
