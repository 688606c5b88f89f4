"""The Fast R-CNN box branch of Faster R-CNN with FPN, for one object class (person), as the unified
framework uses it (instance-parsers spec 2.2.1; maskrcnn-benchmark / Detectron2 conventions).

- **RoI sampling** (:meth:`FastRCNN.sample`): per image the proposals plus the ground-truth boxes, matched
  by IoU (:class:`~.matcher.Matcher` (0.5, 0.5): foreground at IoU >= 0.5), ``batch_size_per_image`` RoIs at
  ``positive_fraction`` foreground (512 at 1:3 in the paper).
- **Head**: RoIAlign at each RoI's canonical FPN level (``ops.multilevel_roi_align``,
  ``k = floor(4 + log2(sqrt(wh) / 224))``), then either ``2fc`` (flatten -> FC -> ReLU -> FC -> ReLU, the
  FPN head at 7x7) or ``4conv1fc`` (4 x conv3x3 + ReLU -> FC -> ReLU, the literal reading of the paper at
  14x14); a linear classifier (background, person) and class-specific deltas (2 x 4, Box coder weights
  (10, 10, 5, 5)). FCs Kaiming-uniform (a = 1), classifier N(0, 0.01), deltas N(0, 0.001).
- **Losses** (:meth:`FastRCNN.losses`): cross-entropy over the sampled RoIs; smooth-L1 (beta 1) on the
  foreground RoIs' person deltas, summed and divided by the number of sampled RoIs.
- **Detections** (:meth:`FastRCNN.detect`): softmax person score, person deltas decoded on the proposals,
  clipped, score >= ``score_thresh`` (0.05), empty boxes dropped, NMS (0.5), the best ``detections_per_image``
  (100).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ...errors import ConfigError
from ...ops import BoxCoder, box_iou, clip_boxes, multilevel_roi_align, nms
from .fcos import Detections
from .inputs import GroundTruth
from .matcher import Matcher, subsample_labels
from .rois import rois_of

BOX_HEADS = ("2fc", "4conv1fc")


@dataclass
class SampledRoIs:
    """One image's training RoIs: ``boxes`` (n, 4), ``labels`` (n,) 1 = person / 0 = background and
    ``person`` (n,) the matched ground truth's index (meaningful where ``labels`` is 1)."""

    boxes: torch.Tensor
    labels: torch.Tensor
    person: torch.Tensor

    def positives(self) -> tuple[torch.Tensor, torch.Tensor]:
        fg = self.labels == 1
        return self.boxes[fg], self.person[fg]


class PooledFeatures(nn.Module):
    """RoIAlign at each RoI's canonical level of the given feature ``scales`` (finest first)."""

    def __init__(self, scales: Sequence[float], size: int, sampling_ratio: int = 2, aligned: bool = False):
        super().__init__()
        self.scales, self.size = tuple(scales), size
        self.sampling_ratio, self.aligned = sampling_ratio, aligned

    def forward(self, features: Sequence[torch.Tensor], boxes: Sequence[torch.Tensor]) -> torch.Tensor:
        return multilevel_roi_align(features, rois_of(boxes), self.size, self.scales, self.sampling_ratio,
                                    self.aligned)


def box_head_layers(kind: str, channels: int, roi_size: int, fc_dim: int, conv_dim: int = 256,
                    num_convs: int = 4) -> nn.Sequential:
    """The box head's trunk (module docstring): ``2fc`` or ``4conv1fc``."""
    if kind not in BOX_HEADS:
        raise ConfigError(f"box_head must be one of {', '.join(BOX_HEADS)}, got {kind!r}")
    layers: list[nn.Module] = []
    if kind == "4conv1fc":
        for i in range(num_convs):
            layers += [nn.Conv2d(channels if i == 0 else conv_dim, conv_dim, 3, padding=1), nn.ReLU(inplace=True)]
        channels = conv_dim
    layers.append(nn.Flatten())
    fcs = 2 if kind == "2fc" else 1
    for i in range(fcs):
        layers += [nn.Linear(channels * roi_size ** 2 if i == 0 else fc_dim, fc_dim), nn.ReLU(inplace=True)]
    for m in layers:
        if isinstance(m, nn.Linear | nn.Conv2d):
            nn.init.kaiming_uniform_(m.weight, a=1)
            nn.init.zeros_(m.bias)
    return nn.Sequential(*layers)


class FastRCNN(nn.Module):
    """Sampler + box head + losses + detections (module docstring) on FPN features of ``scales``."""

    def __init__(self, channels: int, scales: Sequence[float], box_head: str = "2fc", roi_size: int = 7,
                 sampling_ratio: int = 2, roi_aligned: bool = False, fc_dim: int = 1024, conv_dim: int = 256,
                 fg_iou: float = 0.5, batch_size_per_image: int = 512, positive_fraction: float = 0.25,
                 smooth_l1_beta: float = 1.0, score_thresh: float = 0.05, nms_thresh: float = 0.5,
                 detections_per_image: int = 100):
        super().__init__()
        self.pool = PooledFeatures(scales, roi_size, sampling_ratio, roi_aligned)
        self.head = box_head_layers(box_head, channels, roi_size, fc_dim, conv_dim)
        self.cls_score = nn.Linear(fc_dim, 2)
        self.bbox_pred = nn.Linear(fc_dim, 2 * 4)
        nn.init.normal_(self.cls_score.weight, std=0.01)
        nn.init.normal_(self.bbox_pred.weight, std=0.001)
        for m in (self.cls_score, self.bbox_pred):
            nn.init.zeros_(m.bias)
        self.matcher = Matcher(fg_iou, fg_iou)
        self.batch_size_per_image, self.positive_fraction = batch_size_per_image, positive_fraction
        self.coder, self.beta = BoxCoder((10.0, 10.0, 5.0, 5.0)), smooth_l1_beta
        self.score_thresh, self.nms_thresh, self.detections_per_image = score_thresh, nms_thresh, detections_per_image

    def forward(self, features: Sequence[torch.Tensor], boxes: Sequence[torch.Tensor]
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """(R, 2) class logits and (R, 8) deltas of the per-image boxes."""
        x = self.head(self.pool(features, boxes))
        return self.cls_score(x), self.bbox_pred(x)

    # -- training -----------------------------------------------------------------------------------
    def sample(self, proposals: Sequence[torch.Tensor], gts: Sequence[GroundTruth],
               generator: torch.Generator | None = None) -> list[SampledRoIs]:
        out = []
        for props, gt in zip(proposals, gts):
            boxes = torch.cat([props.to(gt.boxes.dtype), gt.boxes])
            matches, labels = self.matcher(box_iou(gt.boxes, boxes))
            positive, negative = subsample_labels(labels, self.batch_size_per_image, self.positive_fraction,
                                                  generator)
            idx = torch.cat([positive, negative])
            out.append(SampledRoIs(boxes[idx], (labels[idx] == 1).long(), matches[idx]))
        return out

    def losses(self, features: Sequence[torch.Tensor], sampled: Sequence[SampledRoIs],
               gts: Sequence[GroundTruth]) -> dict[str, torch.Tensor]:
        """``{"box_cls", "box_reg"}`` of the sampled RoIs."""
        logits, deltas = self(features, [s.boxes for s in sampled])
        labels = torch.cat([s.labels for s in sampled])
        cls = F.cross_entropy(logits.float(), labels)
        fg = labels == 1
        if not fg.any():
            return {"box_cls": cls, "box_reg": deltas.sum() * 0}
        targets = torch.cat([self.coder.encode(gt.boxes[s.person[s.labels == 1]], s.boxes[s.labels == 1])
                             for s, gt in zip(sampled, gts)])
        reg = F.smooth_l1_loss(deltas[fg, 4:].float(), targets, beta=self.beta, reduction="sum") / len(labels)
        return {"box_cls": cls, "box_reg": reg}

    # -- detections -----------------------------------------------------------------------------------
    @torch.no_grad()
    def detect(self, features: Sequence[torch.Tensor], proposals: Sequence[torch.Tensor],
               image_sizes: Sequence[tuple[int, int]]) -> list[Detections]:
        if not sum(len(p) for p in proposals):
            return [Detections(p.new_zeros((0, 4)), p.new_zeros(0), p.new_zeros(0, dtype=torch.long))
                    for p in proposals]
        logits, deltas = self(features, proposals)
        scores = logits.float().softmax(1)[:, 1]
        boxes = self.coder.decode(deltas[:, 4:].float(), torch.cat(list(proposals)).float())
        result, start = [], 0
        for props, size in zip(proposals, image_sizes):
            b, s = clip_boxes(boxes[start:start + len(props)], size), scores[start:start + len(props)]
            start += len(props)
            keep = (s >= self.score_thresh) & (b[:, 2] > b[:, 0]) & (b[:, 3] > b[:, 1])
            b, s = b[keep], s[keep]
            keep = nms(b, s, self.nms_thresh)[:self.detections_per_image]
            result.append(Detections(b[keep], s[keep], torch.ones(len(keep), dtype=torch.long, device=b.device)))
        return result
