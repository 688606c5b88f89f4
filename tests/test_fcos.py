"""FCOS (targets, head, losses, detections) and the IoU matcher / sampler, on hand-made boxes."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from hparse.models.detection import (
    FCOS,
    FCOSHead,
    FCOSOutputs,
    Matcher,
    assign_targets,
    centerness_targets,
    default_size_ranges,
    subsample_labels,
)
from hparse.models.detection.fcos import level_points
from hparse.ops import iou_loss, sigmoid_focal_loss

INF = float("inf")


def _assign(points, strides, ranges, boxes, radius=1.5):
    return assign_targets(torch.tensor(points, dtype=torch.float32), torch.tensor(strides),
                          torch.tensor(ranges, dtype=torch.float32), torch.tensor(boxes, dtype=torch.float32),
                          radius=radius)


def test_points_and_default_ranges():
    pts = level_points([(2, 3)], [8])[0]
    assert pts.tolist() == [[4, 4], [12, 4], [20, 4], [4, 12], [12, 12], [20, 12]]
    assert default_size_ranges([8, 16, 32, 64, 128]) == [(-1, 64), (64, 128), (128, 256), (256, 512), (512, INF)]
    assert default_size_ranges([8, 16, 32]) == [(-1, 64), (64, 128), (128, INF)]


def test_level_is_chosen_by_the_size_range_both_ends_included():
    p3, p4 = (-1, 64), (64, 128)
    labels, dist, _ = _assign([(20, 20), (20, 20), (100, 100), (100, 100)], [8, 16, 8, 16], [p3, p4, p3, p4],
                              [[0, 0, 40, 40], [0, 0, 200, 200]])
    assert labels.tolist() == [1, 0, 0, 1]
    assert dist[0].tolist() == [20, 20, 20, 20] and dist[3].tolist() == [100, 100, 100, 100]
    labels, *_ = _assign([(64, 64), (64, 64)], [8, 16], [p3, p4], [[0, 0, 128, 128]])     # max distance 64: both
    assert labels.tolist() == [1, 1]


def test_centre_sampling_radius_clipped_to_the_box():
    box = [[0, 0, 100, 100]]
    wide = [(-1, INF)] * 3
    labels, *_ = _assign([(40, 50), (30, 50), (62, 50)], [8] * 3, wide, box)     # centre region [38, 62]
    assert labels.tolist() == [1, 0, 0]                                           # strictly inside
    labels, *_ = _assign([(40, 50), (30, 50), (62, 50)], [8] * 3, wide, box, radius=0)
    assert labels.tolist() == [1, 1, 1]
    labels, *_ = _assign([(8, 8), (12, 5)], [16, 16], [(-1, INF)] * 2, [[0, 0, 10, 10]])   # reach 24 > box
    assert labels.tolist() == [1, 0]


def test_ambiguous_points_take_the_smallest_box_first_on_ties():
    wide = [(-1, INF)] * 2
    labels, dist, matched = _assign([(50, 50), (30, 30)], [8, 8], wide,
                                    [[0, 0, 100, 100], [40, 40, 60, 60]], radius=0)
    assert labels.tolist() == [1, 1] and matched.tolist() == [1, 0]
    assert dist[0].tolist() == [10, 10, 10, 10]
    _, _, matched = _assign([(50, 50)], [8], wide[:1], [[0, 0, 100, 100], [20, 20, 120, 120]], radius=0)
    assert matched.tolist() == [0]                                                # equal areas: the first box
    labels, _, _ = _assign([(50, 50)], [8], wide[:1], torch.zeros((0, 4)).tolist())
    assert labels.tolist() == [0]


def test_centerness_values():
    c = centerness_targets(torch.tensor([[30.0, 20, 70, 20], [10, 10, 10, 10], [1, 5, 99, 5]]))
    assert c.tolist() == pytest.approx([math.sqrt(30 / 70), 1.0, math.sqrt(1 / 99)])


def _outputs(fcos: FCOS, sizes=((4, 4),), batch=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    logits = [torch.randn(batch, 1, h, w, generator=g) for h, w in sizes]
    dist = [torch.rand(batch, 4, h, w, generator=g) * 20 + 1 for h, w in sizes]
    ctr = [torch.randn(batch, 1, h, w, generator=g) for h, w in sizes]
    return FCOSOutputs(logits, dist, ctr, level_points(sizes, fcos.strides))


def test_loss_normalisation():
    fcos = FCOS(8, [8], num_convs=1, gn_groups=4, size_ranges=[(-1, INF)], center_sampling_radius=0)
    out = _outputs(fcos)
    boxes = [torch.tensor([[0.0, 0, 20, 20]]), torch.tensor([[8.0, 8, 32, 32], [0, 0, 10, 30]])]
    losses = fcos.losses(out, boxes)
    targets = fcos.targets(out, boxes)
    labels = torch.stack([t[0] for t in targets])
    reg = torch.stack([t[1] for t in targets])
    pos = labels > 0
    num_pos = int(pos.sum())
    assert num_pos > 2
    logits, dist, ctr = out.flat()
    focal = sigmoid_focal_loss(logits[..., 0], pos.float(), 0.25, 2.0, "sum")
    assert losses["fcos_cls"].item() == pytest.approx(focal.item() / (num_pos + 2), rel=1e-6)
    w = centerness_targets(reg[pos])
    manual = (w * -torch.log(_ltrb_iou(dist[pos], reg[pos]))).sum() / w.sum()
    assert losses["fcos_box"].item() == pytest.approx(manual.item(), rel=1e-5)
    assert losses["fcos_box"].item() == pytest.approx(iou_loss(dist[pos], reg[pos], w).item(), rel=1e-6)
    bce = F.binary_cross_entropy_with_logits(ctr[pos], w, reduction="sum") / num_pos
    assert losses["fcos_ctr"].item() == pytest.approx(bce.item(), rel=1e-6)
    none = fcos.losses(out, [torch.zeros((0, 4)), torch.zeros((0, 4))])
    assert none["fcos_box"].item() == 0 and none["fcos_ctr"].item() == 0
    assert none["fcos_cls"].item() == pytest.approx(
        sigmoid_focal_loss(logits[..., 0], torch.zeros_like(logits[..., 0]), 0.25, 2.0, "sum").item() / 2, rel=1e-6)
    giou = FCOS(8, [8], num_convs=1, gn_groups=4, size_ranges=[(-1, INF)], box_loss="giou")
    assert torch.isfinite(giou.losses(out, boxes)["fcos_box"])


def _ltrb_iou(p, t):
    pa, ta = (p[:, 0] + p[:, 2]) * (p[:, 1] + p[:, 3]), (t[:, 0] + t[:, 2]) * (t[:, 1] + t[:, 3])
    inter = (torch.min(p[:, 0], t[:, 0]) + torch.min(p[:, 2], t[:, 2])) * (torch.min(p[:, 1], t[:, 1])
                                                                         + torch.min(p[:, 3], t[:, 3]))
    return (inter + 1) / (pa + ta - inter + 1)


def test_head_shapes_init_and_scales():
    torch.manual_seed(0)
    head = FCOSHead(16, num_levels=2, num_convs=2, gn_groups=8)
    feats = [torch.randn(2, 16, 8, 10), torch.randn(2, 16, 4, 5)]
    logits, dist, ctr = head(feats)
    assert [t.shape for t in logits] == [(2, 1, 8, 10), (2, 1, 4, 5)]
    assert [t.shape for t in dist] == [(2, 4, 8, 10), (2, 4, 4, 5)] and all((d > 0).all() for d in dist)
    assert [t.shape for t in ctr] == [(2, 1, 8, 10), (2, 1, 4, 5)]
    assert head.cls_logits.bias.item() == pytest.approx(-math.log(99))
    assert len(head.scales) == 2 and head.scales[0].scale.item() == 1.0
    with torch.no_grad():
        head.scales[1].scale.fill_(0.0)
    assert torch.equal(head(feats)[1][1], torch.ones(2, 4, 4, 5))                # exp(0 * x)
    assert sum(isinstance(m, torch.nn.GroupNorm) for m in head.cls_tower) == 2


def test_detections_threshold_decode_clip_nms_and_cap():
    fcos = FCOS(8, [8], num_convs=1, gn_groups=4, score_thresh=0.3, nms_thresh=0.6, detections_test=2).eval()
    logits = torch.full((1, 1, 2, 3), -10.0)
    logits[0, 0, 0, 0], logits[0, 0, 0, 1], logits[0, 0, 1, 2] = 3.0, 2.0, 1.0     # cells (4,4), (12,4), (20,12)
    dist = torch.full((1, 4, 2, 3), 4.0)
    dist[0, :, 0, 0] = torch.tensor([10.0, 10, 10, 10])                          # (-6, -6, 14, 14): clipped
    dist[0, :, 0, 1] = torch.tensor([18.0, 10, 2, 10])                           # (-6, -6, 14, 14): a duplicate
    ctr = torch.zeros((1, 1, 2, 3))
    out = FCOSOutputs([logits], [dist], [ctr], level_points([(2, 3)], [8]))
    (det,) = fcos.detect(out, [(16, 24)])
    p = torch.sigmoid(torch.tensor([3.0, 1.0]))
    assert det.scores.tolist() == pytest.approx((p * 0.5).tolist())               # x sigmoid(0) centerness
    assert det.boxes.tolist() == [[0, 0, 14, 14], [16, 8, 24, 16]]
    assert det.classes.tolist() == [1, 1]
    (few,) = fcos.detect(out, [(16, 24)], max_per_image=1)
    assert len(few.boxes) == 1
    fcos.score_thresh = 0.99
    assert len(fcos.detect(out, [(16, 24)])[0].boxes) == 0


def test_matcher_thresholds_and_low_quality_matches():
    iou = torch.tensor([[0.9, 0.45, 0.2, 0.0], [0.1, 0.55, 0.35, 0.0]])
    matches, labels = Matcher(0.5, 0.5)(iou)
    assert matches[:3].tolist() == [0, 1, 1] and labels.tolist() == [1, 1, 0, 0]
    _, labels = Matcher(0.7, 0.3)(iou)
    assert labels.tolist() == [1, -1, -1, 0]
    _, labels = Matcher(0.7, 0.3, allow_low_quality_matches=True)(iou)
    assert labels.tolist() == [1, 1, -1, 0]                                    # gt 1's best proposal, not IoU 0
    matches, labels = Matcher(0.5)(torch.zeros((0, 3)))
    assert labels.tolist() == [0, 0, 0]


def test_subsample_labels_counts():
    labels = torch.tensor([1] * 10 + [0] * 50 + [-1] * 5, dtype=torch.int8)
    g = torch.Generator().manual_seed(0)
    pos, neg = subsample_labels(labels, 16, 0.25, g)
    assert len(pos) == 4 and len(neg) == 12 and (labels[pos] == 1).all() and (labels[neg] == 0).all()
    pos, neg = subsample_labels(labels, 16, 1.0, g)                             # too few positives: all of them,
    assert len(pos) == 10 and len(set(pos.tolist())) == 10 and len(neg) == 6    # the rest filled with negatives
    pos, neg = subsample_labels(labels, 16, 0.5, g)
    assert len(pos) == 8 and len(neg) == 8
