"""RoI plumbing of top-down parsers: proposals to sampled RoIs, their per-person targets, and RoI maps back
into the image.

- :func:`sample_positive_rois`: per image the proposals plus the ground-truth boxes (appended, so every
  person has a RoI), matched to the people by IoU (:class:`~.matcher.Matcher`), at most ``per_image``
  foreground RoIs drawn at random (AIParsing: IoU >= 0.5, 16 per image).
- :func:`person_part_targets`: the matched person's part map -- the image's ``label`` where ``human_ids`` is
  that person, background elsewhere, ignore (255) where the label is ignore -- cropped to each RoI and
  nearest-resized (``ops.crop_and_resize_labels``: cells outside the image are 255). ``clip_to_image=True``
  crops the box clipped to the image instead, stretched over the whole target (the AIParsing / Parsing
  R-CNN code's crop, which RoIAlign does not share).
- :func:`edge_targets`: CE2P's boundary rule on RoI label maps in torch (``hparse.data.targets.edge_map``
  with ``sides="ce2p"``: a pixel differing from its lower, right, lower-right or lower-left neighbour,
  pairs with an ignore pixel skipped, then a ``width x width`` dilation); ignore where the label is.
- :func:`person_mask_targets`: the matched person's binary mask cropped and resized the same way.
- :func:`paste_parsings` / :func:`paste_masks`: Mask R-CNN's paste: RoI probabilities padded by ``pad`` zero
  cells, the box grown by the same share, resized bilinearly into the box, argmaxed (parsings) or
  thresholded at 0.5 (foreground masks) (``ops.paste_roi_maps``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from ...ops import box_iou, clip_boxes, crop_and_resize_labels, paste_roi_maps
from ...ops.edges import ALL, CE2P_EDGE_PAIRS
from .inputs import IGNORE, GroundTruth
from .matcher import Matcher, subsample_labels


def rois_of(boxes: Sequence[torch.Tensor]) -> torch.Tensor:
    """Per-image boxes -> (R, 5) ``[image index, x1, y1, x2, y2]`` (``ops.roi_align``'s RoIs)."""
    index = [torch.full((len(b), 1), float(i), device=b.device, dtype=b.dtype) for i, b in enumerate(boxes)]
    return torch.cat([torch.cat(index), torch.cat(list(boxes))], 1)


def sample_positive_rois(proposals: Sequence[torch.Tensor], gts: Sequence[GroundTruth], matcher: Matcher,
                         per_image: int, generator: torch.Generator | None = None
                         ) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per image ``(boxes (n, 4), person index (n,))`` of the sampled foreground RoIs (module docstring)."""
    out = []
    for props, gt in zip(proposals, gts):
        boxes = torch.cat([props.to(gt.boxes.dtype), gt.boxes])
        matches, labels = matcher(box_iou(gt.boxes, boxes))
        positive, _ = subsample_labels(labels, per_image, 1.0, generator)
        out.append((boxes[positive], matches[positive]))
    return out


def person_part_targets(gt: GroundTruth, boxes: torch.Tensor, person: torch.Tensor, size: int | Sequence[int],
                        clip_to_image: bool = False) -> torch.Tensor:
    """(n, h, w) long part targets of the people ``person`` (indices into ``gt``) over ``boxes``."""
    n = len(boxes)
    if clip_to_image:
        boxes = clip_boxes(boxes, gt.label.shape[-2:])
    label = crop_and_resize_labels(gt.label.expand(n, *gt.label.shape), boxes, size, fill=IGNORE).long()
    owner = crop_and_resize_labels(gt.human_ids.expand(n, *gt.human_ids.shape), boxes, size, fill=0).long()
    mine = owner == gt.person_ids[person][:, None, None]
    return torch.where(mine | (label == IGNORE), label, torch.zeros_like(label))


def person_mask_targets(gt: GroundTruth, boxes: torch.Tensor, person: torch.Tensor, size: int | Sequence[int]
                        ) -> torch.Tensor:
    """(n, h, w) long foreground targets of the people ``person`` over ``boxes``: 1 on the person's pixels, 0
    elsewhere, ignore (255) outside the image and where the label is ignore."""
    n = len(boxes)
    label = crop_and_resize_labels(gt.label.expand(n, *gt.label.shape), boxes, size, fill=IGNORE).long()
    owner = crop_and_resize_labels(gt.human_ids.expand(n, *gt.human_ids.shape), boxes, size, fill=0).long()
    mine = (owner == gt.person_ids[person][:, None, None]).long()
    return mine.masked_fill(label == IGNORE, IGNORE)


def edge_targets(labels: torch.Tensor, width: int = 3, ignore: int = IGNORE) -> torch.Tensor:
    """(R, h, w) part labels -> (R, h, w) long boundary targets: 1 on edges, 0 elsewhere, ``ignore`` where the
    label is ignore (module docstring)."""
    edge = torch.zeros(labels.shape, dtype=torch.bool, device=labels.device)
    for a, b in CE2P_EDGE_PAIRS:  # the first axis is the RoI
        la, lb = labels[(ALL, *a)], labels[(ALL, *b)]
        edge[(ALL, *a)] |= (la != lb) & (la != ignore) & (lb != ignore)
    if width > 1:
        edge = F.max_pool2d(edge[:, None].float(), width, stride=1, padding=width // 2)[:, 0] > 0
    return edge.long().masked_fill(labels == ignore, ignore)


def expand_boxes(boxes: torch.Tensor, scale_x: float, scale_y: float) -> torch.Tensor:
    """Boxes grown about their centres by ``scale_x`` / ``scale_y``."""
    cx, cy = (boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2
    hw, hh = (boxes[:, 2] - boxes[:, 0]) * scale_x / 2, (boxes[:, 3] - boxes[:, 1]) * scale_y / 2
    return torch.stack((cx - hw, cy - hh, cx + hw, cy + hh), 1)


def _padded(maps: torch.Tensor, boxes: torch.Tensor, pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    """RoI maps with ``pad`` zero cells around them and the boxes grown by the same share."""
    if not pad:
        return maps, boxes
    h, w = maps.shape[-2:]
    return F.pad(maps, (pad, pad, pad, pad)), expand_boxes(boxes, (w + 2 * pad) / w, (h + 2 * pad) / h)


def paste_parsings(probs: torch.Tensor, boxes: torch.Tensor, image_size: Sequence[int], pad: int = 1) -> torch.Tensor:
    """(N, C, h, w) RoI probabilities -> (N, H, W) uint8 part labels in the image (0 outside each box)."""
    return paste_roi_maps(*_padded(probs, boxes, pad), image_size, argmax=True)


def paste_masks(probs: torch.Tensor, boxes: torch.Tensor, image_size: Sequence[int], pad: int = 1,
                threshold: float = 0.5) -> torch.Tensor:
    """(N, 1, h, w) RoI foreground probabilities -> (N, H, W) bool masks in the image (Mask R-CNN's paste)."""
    return paste_roi_maps(*_padded(probs, boxes, pad), image_size)[:, 0] > threshold


def roi_miou(pred: torch.Tensor, target: torch.Tensor, num_classes: int, ignore: int = IGNORE) -> torch.Tensor:
    """Per RoI, the mean IoU of the label maps ``pred`` and ``target`` (R, h, w) over the classes present in
    either (background included; ``ignore`` pixels left out), from one confusion matrix per RoI: (R,) float."""
    r, c = len(pred), num_classes
    valid = target != ignore
    roi = torch.arange(r, device=pred.device)[:, None, None].expand_as(target)
    cells = (roi * c + target.clamp(max=c - 1)) * c + pred
    confusion = torch.bincount(cells[valid], minlength=r * c * c).reshape(r, c, c).float()
    inter = confusion.diagonal(dim1=1, dim2=2)
    union = confusion.sum(1) + confusion.sum(2) - inter
    present = union > 0
    ious = torch.where(present, inter / union.clamp(min=1), torch.zeros_like(inter))
    return ious.sum(1) / present.sum(1).clamp(min=1)
