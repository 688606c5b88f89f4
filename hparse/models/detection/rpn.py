"""The region proposal network of Faster R-CNN with FPN (Ren et al. 2015; Lin et al. 2017), as the unified
framework uses it (instance-parsers spec 2.2.1, maskrcnn-benchmark / Detectron2 conventions).

- **Anchors** (:func:`level_anchors`): one size per level, ``len(aspect_ratios)`` anchors per cell;
  for size s and ratio r = h / w, ``w = s / sqrt(r)``, ``h = s sqrt(r)``, centred on the cell's corner
  ``(j stride, i stride)`` (Detectron2 ``DefaultAnchorGenerator``, offset 0); row-major cells, the anchors of a
  cell in ratio order -- the order of the head's channels.
- **Head** (:class:`RPNHead`), shared over levels: conv3x3 + ReLU, then 1x1 convs to ``A`` objectness logits
  and ``4 A`` deltas; N(0, 0.01) weights, zero biases.
- **Targets and losses** (:meth:`RPN.losses`): per image, :class:`~.matcher.Matcher` (0.7, 0.3) with
  low-quality matches; ``batch_size_per_image`` anchors at ``positive_fraction`` positives
  (:func:`~.matcher.subsample_labels`); BCE on the sampled objectness and smooth-L1 (beta 1/9) on the
  positives' deltas (weights 1, 1, 1, 1), both summed and divided by the number of sampled anchors.
- **Proposals** (:meth:`RPN.proposals`): per image and level the ``pre_nms_top_n`` best anchors by
  objectness, decoded, clipped to the image, empty ones dropped, NMS (0.7) per level, then the
  ``post_nms_top_n`` best over all levels; ground-truth boxes are appended by the RoI sampler, not here.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ...errors import ConfigError
from ...ops import BoxCoder, batched_nms, box_iou, clip_boxes
from .matcher import Matcher, subsample_labels


def cell_anchors(size: float, aspect_ratios: Sequence[float]) -> torch.Tensor:
    """(A, 4) anchors of one cell centred on (0, 0): area ``size ** 2``, height / width = each ratio."""
    out = []
    for r in aspect_ratios:
        w, h = size / math.sqrt(r), size * math.sqrt(r)
        out.append([-w / 2, -h / 2, w / 2, h / 2])
    return torch.tensor(out, dtype=torch.float32)


def level_anchors(grid: tuple[int, int], stride: int, size: float, aspect_ratios: Sequence[float],
                  device=None) -> torch.Tensor:
    """(h * w * A, 4) anchors of one level, cell-major (module docstring)."""
    h, w = grid
    ys = torch.arange(h, device=device, dtype=torch.float32) * stride
    xs = torch.arange(w, device=device, dtype=torch.float32) * stride
    yy, xx = torch.meshgrid(ys, xs, indexing="ij")
    shifts = torch.stack((xx, yy, xx, yy), -1).reshape(-1, 1, 4)
    return (shifts + cell_anchors(size, aspect_ratios).to(device)[None]).reshape(-1, 4)


class RPNHead(nn.Module):
    """``forward(features)`` -> (objectness (B, A, h, w), deltas (B, 4 A, h, w)) per level."""

    def __init__(self, channels: int, num_anchors: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)
        self.objectness = nn.Conv2d(channels, num_anchors, 1)
        self.deltas = nn.Conv2d(channels, 4 * num_anchors, 1)
        for m in (self.conv, self.objectness, self.deltas):
            nn.init.normal_(m.weight, std=0.01)
            nn.init.zeros_(m.bias)

    def forward(self, features: Sequence[torch.Tensor]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        objectness, deltas = [], []
        for x in features:
            t = F.relu(self.conv(x))
            objectness.append(self.objectness(t))
            deltas.append(self.deltas(t))
        return objectness, deltas


def _flat(maps: Sequence[torch.Tensor], k: int) -> list[torch.Tensor]:
    """Per level (B, A k, h, w) -> (B, h w A, k): cell-major, the anchors of a cell together."""
    out = []
    for m in maps:
        b, _, h, w = m.shape
        out.append(m.view(b, -1, k, h, w).permute(0, 3, 4, 1, 2).reshape(b, -1, k))
    return out


class RPN(nn.Module):
    """Anchors + head + targets + losses + proposals over FPN levels of the given ``strides`` and
    ``anchor_sizes`` (one per level); see the module docstring."""

    def __init__(self, channels: int, strides: Sequence[int], anchor_sizes: Sequence[float],
                 aspect_ratios: Sequence[float] = (0.5, 1.0, 2.0), fg_iou: float = 0.7, bg_iou: float = 0.3,
                 batch_size_per_image: int = 256, positive_fraction: float = 0.5, smooth_l1_beta: float = 1 / 9,
                 pre_nms_top_n_train: int = 2000, pre_nms_top_n_test: int = 1000, post_nms_top_n_train: int = 2000,
                 post_nms_top_n_test: int = 1000, nms_thresh: float = 0.7, min_size: float = 0.0):
        super().__init__()
        if len(anchor_sizes) != len(strides):
            raise ConfigError(f"{len(anchor_sizes)} anchor sizes for {len(strides)} RPN levels: give one per level")
        self.strides, self.anchor_sizes = tuple(int(s) for s in strides), tuple(float(s) for s in anchor_sizes)
        self.aspect_ratios = tuple(float(r) for r in aspect_ratios)
        self.head = RPNHead(channels, len(self.aspect_ratios))
        self.matcher = Matcher(fg_iou, bg_iou, allow_low_quality_matches=True)
        self.batch_size_per_image, self.positive_fraction = batch_size_per_image, positive_fraction
        self.beta, self.coder = smooth_l1_beta, BoxCoder((1.0, 1.0, 1.0, 1.0))
        self.pre_nms_top_n = (pre_nms_top_n_train, pre_nms_top_n_test)
        self.post_nms_top_n = (post_nms_top_n_train, post_nms_top_n_test)
        self.nms_thresh, self.min_size = nms_thresh, min_size

    def forward(self, features: Sequence[torch.Tensor]) -> dict:
        """Raw outputs: ``objectness`` (B, P_l) and ``deltas`` (B, P_l, 4) per level, with its ``anchors``."""
        objectness, deltas = self.head(features)
        anchors = [level_anchors(tuple(f.shape[-2:]), s, size, self.aspect_ratios, f.device)
                   for f, s, size in zip(features, self.strides, self.anchor_sizes)]
        return {"objectness": [o[..., 0] for o in _flat(objectness, 1)], "deltas": _flat(deltas, 4),
                "anchors": anchors}

    # -- training -----------------------------------------------------------------------------------
    def sample_anchors(self, anchors: torch.Tensor, gt_boxes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor,
                                                                                     torch.Tensor]:
        """One image: ``(positive, negative, matched)``: sampled anchor indices and each anchor's ground truth."""
        matches, labels = self.matcher(box_iou(gt_boxes, anchors))
        positive, negative = subsample_labels(labels, self.batch_size_per_image, self.positive_fraction)
        return positive, negative, matches

    def losses(self, out: dict, gt_boxes: Sequence[torch.Tensor]) -> dict[str, torch.Tensor]:
        """``{"rpn_cls", "rpn_box"}`` for the ground-truth boxes per image."""
        anchors = torch.cat(out["anchors"])
        objectness, deltas = torch.cat(out["objectness"], 1), torch.cat(out["deltas"], 1)
        logits, targets, pos_deltas, pos_targets = [], [], [], []
        for i, gt in enumerate(gt_boxes):
            positive, negative, matches = self.sample_anchors(anchors, gt)
            sampled = torch.cat([positive, negative])
            logits.append(objectness[i, sampled])
            targets.append(torch.cat([torch.ones(len(positive)), torch.zeros(len(negative))]).to(objectness))
            if len(positive):
                pos_deltas.append(deltas[i, positive])
                pos_targets.append(self.coder.encode(gt[matches[positive]], anchors[positive]))
        logits, targets = torch.cat(logits), torch.cat(targets)
        n = max(len(logits), 1)
        cls = F.binary_cross_entropy_with_logits(logits.float(), targets.float(), reduction="sum") / n
        if not pos_deltas:
            return {"rpn_cls": cls, "rpn_box": deltas.sum() * 0}
        box = F.smooth_l1_loss(torch.cat(pos_deltas).float(), torch.cat(pos_targets), beta=self.beta,
                               reduction="sum") / n
        return {"rpn_cls": cls, "rpn_box": box}

    # -- proposals ------------------------------------------------------------------------------------
    @torch.no_grad()
    def proposals(self, out: dict, image_sizes: Sequence[tuple[int, int]]) -> list[torch.Tensor]:
        """Per image the (N, 4) proposals, best first (module docstring)."""
        pre, post = (n[0 if self.training else 1] for n in (self.pre_nms_top_n, self.post_nms_top_n))
        result = []
        for i, size in enumerate(image_sizes):
            boxes, scores, levels = [], [], []
            for level, (obj, deltas, anchors) in enumerate(zip(out["objectness"], out["deltas"], out["anchors"])):
                score, top = obj[i].float().topk(min(pre, obj.shape[1]))
                b = clip_boxes(self.coder.decode(deltas[i, top], anchors[top]), size)
                keep = ((b[:, 2] - b[:, 0]) > self.min_size) & ((b[:, 3] - b[:, 1]) > self.min_size)
                boxes.append(b[keep])
                scores.append(score[keep])
                levels.append(torch.full((int(keep.sum()),), level, device=b.device))
            boxes, scores, levels = torch.cat(boxes), torch.cat(scores), torch.cat(levels)
            keep = batched_nms(boxes, scores, levels, self.nms_thresh)[:post]   # per level, then the best overall
            result.append(boxes[keep])
        return result
