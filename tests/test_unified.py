"""The unified top-down framework (Qin et al., BMVC'19; instance-parsers spec 2.2 / 2.3): anchors, RPN and Fast
R-CNN sampling, RoI targets, all-level max RoI pooling, head shapes of every fusion, parameter counts against the
spec, person masks (``PersonInstances.masks``) through the evaluator, the writer's pieces and the predictor, training
steps and a small overfit."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from hparse import config as C
from hparse.data.detection import person_boxes
from hparse.data.readers import build_reader
from hparse.engine.inference import InstancePredictor
from hparse.errors import ConfigError
from hparse.evaluation import build_evaluators
from hparse.io import instance_outputs as io
from hparse.labels import get_meta
from hparse.models import build_model
from hparse.models.complexity import count_params
from hparse.models.detection import RPN, FastRCNN, GroundTruth, person_mask_targets, person_part_targets
from hparse.models.detection.rpn import cell_anchors, level_anchors
from hparse.models.unified import FUSIONS, AttentionHead, ParsingHead, UnifiedParser
from hparse.ops import box_iou, max_roi_align, roi_align
from hparse.structures import PersonInstances

from .test_aiparsing import CCP15, composed_ccp_step, make_scene, training_batch, write_dataset

RATIOS = (0.5, 1.0, 2.0)
# a tiny unified model for the 96 px scenes: every stage of the paper's model at toy widths; the RPN off P2 with
# anchors of 16-128 px (the scenes' people are about 14-30 px wide and 43-86 px tall)
TINY = {"type": "unified", "backbone": {"name": "resnet18", "width": 0.25, "freeze_at": 0},
        "fpn": {"out_channels": 32, "levels": ["p2", "p3", "p4", "p5", "p6"], "p6_mode": "maxpool"},
        "rpn_levels": ["p3", "p4", "p5", "p6"], "anchor_sizes": [16, 32, 64, 128],
        "rpn": {"batch_size_per_image": 64, "pre_nms_top_n_train": 300, "post_nms_top_n_train": 100,
                "pre_nms_top_n_test": 100, "post_nms_top_n_test": 50},
        "box": {"fc_dim": 32, "batch_size_per_image": 32, "detections_per_image": 10},
        "attention_size": 7, "attention_ch": 16, "attention_convs": 1, "parsing_roi_size": 14, "parsing_ch": 16,
        "parsing_convs": 2, "max_parsing_rois": 8}
LOSSES = {"rpn_cls", "rpn_box", "box_cls", "box_reg", "ce_parsing", "attention"}


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Toy models gain nothing from threads, and oversubscribed cores slow them down by orders of magnitude."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def tiny_model(**changes) -> UnifiedParser:
    torch.manual_seed(0)
    return build_model({**TINY, **changes}, CCP15)


# -- anchors and the RPN -------------------------------------------------------------------------------------------

def test_level_anchors_count_centres_areas_and_cell_major_order():
    a = level_anchors((3, 5), 16, 32.0, RATIOS)
    assert a.shape == (3 * 5 * len(RATIOS), 4)
    first = a[:3]
    assert torch.equal(first, cell_anchors(32.0, RATIOS))
    assert torch.allclose((first[:, :2] + first[:, 2:]) / 2, torch.zeros(3, 2), atol=1e-5)      # centred on (0, 0)
    w, h = first[:, 2] - first[:, 0], first[:, 3] - first[:, 1]
    assert torch.allclose(w * h, torch.full((3,), 32.0 ** 2)) and torch.allclose(h / w, torch.tensor(RATIOS))
    assert torch.allclose(a[3:6], first + torch.tensor([16.0, 0, 16, 0]))            # the next cell: +stride in x
    assert torch.allclose(a[5 * 3:5 * 3 + 3], first + torch.tensor([0.0, 16, 0, 16]))  # the next row: +stride in y
    assert torch.allclose(a[-3:], first + torch.tensor([64.0, 32, 64, 32]))          # the last cell (4, 2)


def test_rpn_anchors_match_the_head_outputs_per_level_and_in_order():
    torch.manual_seed(0)
    rpn = RPN(8, (8, 16, 32), (16, 32, 64))
    torch.nn.init.normal_(rpn.head.objectness.weight)     # outputs that tell the anchors apart
    torch.nn.init.normal_(rpn.head.deltas.weight)
    features = [torch.randn(2, 8, 12, 10), torch.randn(2, 8, 6, 5), torch.randn(2, 8, 3, 3)]
    out = rpn(features)
    maps, deltas = rpn.head(features)
    for f, anchors, obj, d, obj_map, d_map, stride in zip(features, out["anchors"], out["objectness"],
                                                           out["deltas"], maps, deltas, rpn.strides):
        h, w = f.shape[-2:]
        assert anchors.shape == (h * w * 3, 4) and obj.shape == (2, h * w * 3) and d.shape == (2, h * w * 3, 4)
        y, x, k = h - 1, 1, 2                               # anchor k of cell (y, x): head channel k there
        i = (y * w + x) * 3 + k
        centre = (anchors[i, :2] + anchors[i, 2:]) / 2
        assert torch.allclose(centre, torch.tensor([x * stride, y * stride], dtype=torch.float32))
        assert obj[1, i] == obj_map[1, k, y, x]
        assert torch.equal(d[1, i], d_map[1, 4 * k:4 * k + 4, y, x])


def _anchors(size=(128, 128), strides=(8, 16, 32), sizes=(16, 32, 64)) -> torch.Tensor:
    return torch.cat([level_anchors((size[0] // s, size[1] // s), s, a, RATIOS) for s, a in zip(strides, sizes)])


def test_rpn_sampling_counts_thresholds_and_low_quality_matches():
    anchors = _anchors()
    # 16 px and 32 px squares 1 px off an anchor (IoU 0.78 and 0.88), and a 6x10 box that no anchor fits
    gt = torch.tensor([[x, 9.0, x + 16, 25] for x in (9, 41, 73, 105)] + [[x, 65.0, x + 32, 97] for x in (1, 33, 65)]
                      + [[9.0, 41, 25, 57], [41, 41, 57, 57], [101, 113, 107, 123]])
    iou = box_iou(gt, anchors)
    best, owner = iou.max(0)
    assert iou[-1].max() < 0.7 and (iou[:-1].max(1).values >= 0.7).all()
    torch.manual_seed(0)
    pos, neg, matches = RPN(8, (8, 16, 32), (16, 32, 64), batch_size_per_image=512).sample_anchors(anchors, gt)
    assert torch.equal(matches, owner)
    assert len(pos) <= 256 and not set(pos.tolist()) & set(neg.tolist())
    gt_best = (iou == iou.max(1, keepdim=True).values).any(0)     # some ground truth's best anchor
    assert set(torch.nonzero(gt_best).flatten().tolist()) <= set(pos.tolist())   # all positive, ...
    assert (best[pos] < 0.7).any()                                               # ... the 6x10 box's below 0.7
    assert ((best[pos] >= 0.7) | gt_best[pos]).all() and (best[neg] < 0.3).all()
    assert len(pos) + len(neg) == 512
    pos, neg, _ = RPN(8, (8, 16, 32), (16, 32, 64), batch_size_per_image=16).sample_anchors(anchors, gt)
    assert len(pos) == 8 and len(neg) == 8                        # 50 % positives when there are more
    assert ((best[pos] >= 0.7) | gt_best[pos]).all() and (best[neg] < 0.3).all()


# -- Fast R-CNN sampling --------------------------------------------------------------------------------------------

def _gt(boxes, size=(128, 128)) -> GroundTruth:
    h, w = size
    return GroundTruth(torch.tensor(boxes, dtype=torch.float32), torch.arange(1, len(boxes) + 1),
                       torch.zeros(h, w, dtype=torch.uint8), torch.zeros(h, w, dtype=torch.uint8))


def _jittered(boxes: torch.Tensor, n: int, scale: float, generator: torch.Generator) -> torch.Tensor:
    wh = (boxes[:, 2:] - boxes[:, :2]).repeat(1, 2)
    base = boxes.repeat(n, 1)
    return base + scale * torch.randn(base.shape, generator=generator) * wh.repeat(n, 1)


def test_fast_rcnn_sampling_counts_and_labels():
    g = torch.Generator().manual_seed(0)
    gt = _gt([[10.0, 10, 40, 100], [70, 20, 110, 90]])
    rng = torch.rand(300, 2, generator=g) * 100
    clutter = torch.cat([rng, rng + 5 + torch.rand(300, 2, generator=g) * 20], 1)      # mostly background
    box = FastRCNN(8, [1 / 4, 1 / 8, 1 / 16, 1 / 32], fc_dim=16, batch_size_per_image=32, positive_fraction=0.25)
    many = torch.cat([_jittered(gt.boxes, 20, 0.03, g), clutter])
    (s,) = box.sample([many], [gt], generator=g)
    iou = box_iou(gt.boxes, s.boxes)
    best, owner = iou.max(0)
    assert len(s.boxes) == 32 and int(s.labels.sum()) == 8             # 512 at 1:3 in the paper; here 32
    assert torch.equal(s.labels == 1, best >= 0.5)
    assert torch.equal(s.person[s.labels == 1], owner[s.labels == 1])
    assert torch.equal(s.positives()[0], s.boxes[s.labels == 1])
    few = torch.cat([_jittered(gt.boxes[:1], 2, 0.02, g), clutter])    # 2 + 2 ground truths: all positives kept
    (s,) = box.sample([few], [gt], generator=g)
    fg = s.boxes[s.labels == 1]
    assert len(s.boxes) == 32 and len(fg) == 4
    for b in gt.boxes:                                                  # the ground-truth boxes are appended
        assert (fg == b).all(1).any()
    assert torch.equal(s.labels == 1, box_iou(gt.boxes, s.boxes).max(0).values >= 0.5)


# -- RoI targets -------------------------------------------------------------------------------------------------

def _two_people():
    label = torch.zeros(20, 30, dtype=torch.uint8)
    human = torch.zeros(20, 30, dtype=torch.uint8)
    label[2:10, 3:10], label[10:14, 3:10], human[2:14, 3:10] = 4, 8, 1
    label[5:18, 8:20], human[5:18, 8:20] = 2, 2                # person 2 in front of person 1
    label[3, 4] = 255                                           # an ignore pixel on person 1
    return GroundTruth(torch.tensor([[3.0, 2, 10, 14], [8, 5, 20, 18]]), torch.tensor([1, 2]), label, human)


def test_attention_targets_are_the_matched_persons_mask():
    gt = _two_people()
    mask = person_mask_targets(gt, gt.boxes, torch.tensor([0, 1]), (12, 7))
    assert mask.shape == (2, 12, 7) and mask.dtype == torch.long
    crop = gt.human_ids[2:14, 3:10]
    expected = (crop == 1).long()
    expected[1, 1] = 255                                        # ignore where the label is
    assert torch.equal(mask[0], expected)
    assert (crop == 2).any() and (mask[0][crop == 2] == 0).all()                 # the other person: 0
    other = person_mask_targets(gt, torch.tensor([[8.0, 5, 20, 18]]), torch.tensor([1]), (13, 12))
    assert torch.equal(other[0], (gt.human_ids[5:18, 8:20] == 2).long())
    outside = person_mask_targets(gt, torch.tensor([[-4.0, 2, 10, 14]]), torch.tensor([0]), (12, 14))
    assert (outside[0, :, :4] == 255).all()                    # outside the image: ignore
    assert torch.equal(outside[0, :, 4:7], torch.zeros(12, 3, dtype=torch.long))  # background
    assert torch.equal(outside[0, :, 7:], mask[0])


def test_parsing_targets_are_the_matched_persons_parts_only():
    gt = _two_people()
    parts = person_part_targets(gt, gt.boxes[[0, 0]], torch.tensor([0, 1]), (12, 7))   # both people in box 0
    crop, owner = gt.label[2:14, 3:10].long(), gt.human_ids[2:14, 3:10]
    expected = torch.where(owner == 1, crop, 0)
    expected[1, 1] = 255
    assert torch.equal(parts[0], expected) and set(parts[0].unique().tolist()) == {0, 4, 8, 255}
    assert torch.equal(parts[1], torch.where((owner == 2) | (crop == 255), crop, 0))        # ignore stays ignore
    assert set(parts[1].unique().tolist()) == {0, 2, 255}


# -- RoI pooling and heads -------------------------------------------------------------------------------------------

def test_max_roi_align_is_the_elementwise_max_of_every_level():
    torch.manual_seed(0)
    levels = [torch.randn(2, 4, 32, 32, requires_grad=True), torch.randn(2, 4, 16, 16, requires_grad=True),
              torch.randn(2, 4, 8, 8, requires_grad=True)]
    scales = [1 / 4, 1 / 8, 1 / 16]
    rois = torch.tensor([[0, 3.0, 5, 60, 90], [1, 10, 10, 30, 20], [0, 0, 0, 127, 127], [1, 50, 40, 51, 41]])
    got = max_roi_align(levels, rois, 7, scales, 2, False)
    per_level = torch.stack([roi_align(f, rois, 7, s, 2, False) for f, s in zip(levels, scales)])
    assert got.shape == (4, 4, 7, 7) and torch.equal(got, per_level.amax(0))
    assert len(per_level.argmax(0).unique()) == 3             # every level wins somewhere
    got.sum().backward()
    assert all(f.grad.abs().sum() > 0 for f in levels)
    with pytest.raises(ValueError, match="scales"):
        max_roi_align(levels, rois, 7, scales[:2])


@pytest.mark.parametrize("fusion", FUSIONS)
def test_head_shapes_of_every_fusion(fusion):
    torch.manual_seed(0)
    attention = AttentionHead(8, ch=6, num_convs=2)
    head = ParsingHead(8, num_classes=5, ch=12, num_convs=2, fusion=fusion, attention_ch=6)
    logit, feature = attention(torch.randn(3, 8, 14, 14))
    assert logit.shape == (3, 1, 28, 28) and feature.shape == (3, 6, 28, 28)
    assert head.up.in_channels == 12 + {"concat_after_conv4": 1, "concat_after_conv4_trans": 6}.get(fusion, 0)
    rois = torch.randn(3, 8, 28, 28)
    a = logit.sigmoid()
    out = head(rois, a, feature)
    assert out.shape == (3, 5, 56, 56)
    if fusion != "none":                                        # the attention changes the parsing
        assert not torch.allclose(out, head(rois, torch.zeros_like(a), torch.zeros_like(feature)))
    if fusion.startswith("dot"):                                # F + F * A: A = 0 is the plain head
        plain = ParsingHead(8, 5, 12, 2, "none")
        plain.load_state_dict(head.state_dict())
        assert torch.allclose(head(rois, torch.zeros_like(a)), plain(rois), atol=1e-6)


def test_model_heads_per_fusion_and_none_has_no_attention():
    rois = [torch.tensor([[8.0, 8, 40, 90], [30, 20, 60, 80]])]
    for fusion in FUSIONS:
        model = tiny_model(fusion=fusion).eval()
        features = model.network(torch.randn(1, 3, 96, 96))["features"]
        out = model.parse_rois(features, rois)
        assert out["parsing"].shape == (2, CCP15.num_classes, 28, 28)
        assert (model.attention is None) == (fusion == "none") == ("attention" not in out)
        if fusion != "none":
            assert out["attention"].shape == (2, 1, 14, 14)
    none = tiny_model(fusion="none").train()
    assert not any("attention" in name for name, _ in none.named_parameters())
    assert set(none(training_batch([make_scene(np.random.default_rng(0))]))) == LOSSES - {"attention"}


def test_the_attention_map_is_not_detached():
    model = tiny_model(attention_weight=0.0).train()           # no L_a: the attention learns from L_p alone
    losses = model(training_batch([make_scene(np.random.default_rng(0))]))
    assert set(losses) == LOSSES - {"attention"}
    sum(losses.values()).backward()
    grad = model.attention.logit.weight.grad
    assert grad is not None and grad.abs().sum() > 0


# -- parameter counts ------------------------------------------------------------------------------------------------

def test_parameter_counts_match_the_spec():
    cihp = get_meta("cihp")
    full = build_model({"type": "unified"}, cihp)
    assert cihp.num_classes == 20 and count_params(full) == 65_597_294                     # spec: 65.60M
    parts = {"R101": full.body.backbone, "FPN": full.body.fpn, "RPN": full.rpn, "box head": full.box,
             "attention": full.attention, "parsing": full.parsing}
    spec = {"R101": 42.50, "FPN": 3.34, "RPN": 0.59, "box head": 13.91, "attention": 2.62, "parsing": 2.63}
    assert {k: round(count_params(m) / 1e6, 2) for k, m in parts.items()} == spec
    del full, parts
    r50 = build_model({"type": "unified", "backbone": {"name": "resnet50"}}, cihp)
    assert count_params(r50) == 46_605_166 and count_params(r50) == pytest.approx(46.61e6, abs=0.01e6)
    cfg = C.load_config("unified_cpu_ccpmulti")
    cpu = build_model(cfg["model"], CCP15, loss=cfg["loss"])
    assert count_params(cpu) == pytest.approx(4.07e6, abs=0.01e6)


# -- person masks ----------------------------------------------------------------------------------------------------

def test_person_instances_masks_are_used_resized_and_selected():
    parsings = np.zeros((2, 4, 6), np.uint8)
    parsings[0, :2, :3] = 3
    masks = np.zeros((2, 4, 6), bool)
    masks[0, :3, :4], masks[1, 2:, 3:] = True, True             # person 1: a mask but an empty parsing
    p = PersonInstances((4, 6), boxes=np.zeros((2, 4), np.float32), scores=np.array([0.9, 0.5]), parsings=parsings,
                        masks=masks)
    assert np.array_equal(p.human_masks(), masks)
    assert np.array_equal(replace(p, masks=None).human_masks(), parsings > 0)
    big = p.rescaled((4, 6), (8, 12))
    assert big.masks.shape == (2, 8, 12) and big.masks.dtype == bool
    assert np.array_equal(big.masks, masks.repeat(2, 1).repeat(2, 2))
    assert np.array_equal(p.select([1]).masks, masks[1:]) and np.array_equal(p.select([False, True]).masks, masks[1:])
    assert replace(p, masks=None).select([1]).masks is None
    humans = io.human_instances(p)
    assert humans.scores.tolist() == [0.9, 0.5]                 # the person with an empty parsing has an id
    expected = np.zeros((4, 6), np.uint8)
    expected[masks[1]], expected[masks[0]] = 2, 1               # the higher score painted last
    assert np.array_equal(humans.ids, expected)
    assert len(io.human_instances(replace(p, masks=None)).scores) == 1


def _patched_heads(model: UnifiedParser, boxes: torch.Tensor, parts: torch.Tensor, masks: torch.Tensor) -> None:
    """``parse_rois`` answering one-hot parsing logits and +-10 attention logits of each known box."""
    def parse_rois(features, per_image):
        pick = [int(torch.nonzero((boxes == b).all(1))[0]) for b in per_image[0]]
        parsing = 10 * torch.nn.functional.one_hot(parts[pick], model.num_classes).permute(0, 3, 1, 2).float()
        return {"parsing": parsing, "attention": torch.where(masks[pick] == 1, 10.0, -10.0)[:, None]}
    model.parse_rois = parse_rois


def test_ground_truth_as_prediction_scores_one_with_masks(tmp_path):
    root = write_dataset(tmp_path / "data", counts=(("val", 3),), size=(120, 120))
    reader = build_reader("cihp", root, "val", label_set="ccp15")
    model = build_model({**TINY, "attention_size": 64, "parsing_roi_size": 128}, CCP15).eval()   # 128 / 256 maps
    evaluators = {k: build_evaluators(["instance"], CCP15)[0] for k in ("gt", "cut parsings", "cut masks")}
    for sample in reader:
        boxes, ids = (torch.from_numpy(a) for a in person_boxes(sample["human_ids"]))
        gt = GroundTruth(boxes, ids, torch.tensor(sample["label"]), torch.tensor(sample["human_ids"]))
        person = torch.arange(len(boxes))
        _patched_heads(model, boxes, person_part_targets(gt, boxes, person, 256).clamp(max=14),
                       person_mask_targets(gt, boxes, person, 128))
        people = model.people(sample["label"].shape, boxes, torch.ones(len(boxes)),
                              lambda rois, boxes=boxes: model.roi_outputs({"features": {}}, 0, boxes[rois]))
        assert np.array_equal(people.masks, sample["human_ids"][None] == ids.numpy()[:, None, None])
        half = np.arange(120)[None, :, None] < (people.boxes[:, 1] + people.boxes[:, 3])[:, None, None] / 2
        outputs = {"gt": people, "cut parsings": replace(people, parsings=people.parsings * half),
                   "cut masks": replace(people, masks=people.masks & half)}
        for k, ev in evaluators.items():
            ev.process([sample], [{"instances": outputs[k]}])
    scores = {k: ev.evaluate().summary() for k, ev in evaluators.items()}
    assert scores["gt"]["APp_vol"] == pytest.approx(1.0) and scores["gt"]["APp50"] == pytest.approx(1.0)
    assert scores["gt"]["APh"] == pytest.approx(1.0) and scores["gt"]["PCP50"] == pytest.approx(1.0)
    assert scores["cut parsings"]["APh"] == pytest.approx(1.0) and scores["cut parsings"]["APp_vol"] < 0.9
    assert scores["cut masks"]["APh"] < 0.5 and scores["cut masks"]["APp_vol"] == pytest.approx(1.0)


# -- training --------------------------------------------------------------------------------------------------------

def test_one_training_step_on_two_composed_ccp_images(ccp_root, tmp_path):
    model, batch = composed_ccp_step(ccp_root, tmp_path, "unified_cpu_ccpmulti")
    losses = model(batch)
    assert set(losses) == LOSSES and all(torch.isfinite(v) for v in losses.values()), losses
    sum(losses.values()).backward()
    body = model.body.backbone
    assert body.conv1.weight.grad is None and body.layer1[0].conv1.weight.grad is None              # frozen
    for p in (body.layer2[0].downsample[0].weight, model.rpn.head.objectness.weight, model.box.bbox_pred.weight,
              model.attention.logit.weight, model.parsing.logits.weight):
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0   # (zero-init blocks)


def test_overfitting_four_scenes_then_inference_and_flip_tta():
    rng = np.random.default_rng(2)
    scenes = [make_scene(rng) for _ in range(4)]
    batch = training_batch(scenes, short_sides=(96,))
    model = tiny_model().train()
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    history = []
    for _ in range(50):
        losses = model(batch)
        optimizer.zero_grad()
        sum(losses.values()).backward()
        optimizer.step()
        history.append({k: float(v.detach()) for k, v in losses.items()})
    assert set(history[0]) == LOSSES
    first = {k: np.mean([h[k] for h in history[:5]]) for k in LOSSES}
    last = {k: np.mean([h[k] for h in history[-5:]]) for k in LOSSES}
    assert all(last[k] < 0.7 * first[k] for k in LOSSES), (first, last)
    model.eval()
    with torch.no_grad():
        people = model({"image": batch["image"], "image_sizes": batch["image_sizes"]})
    assert [p.image_size for p in people] == batch["image_sizes"]
    for p in people:
        assert isinstance(p, PersonInstances) and 0 < len(p) <= 10
        assert p.masks.shape == (len(p), *p.image_size) and p.masks.dtype == bool and p.masks.any()
    image = make_scene(np.random.default_rng(2), (80, 112))["image"]
    plain = InstancePredictor(model, long_side=96).predict([image])[0]
    flipped = InstancePredictor(model, long_side=96, flip=True).predict([image])[0]
    for got in (plain, flipped):
        assert len(got) and got.image_size == (80, 112) and got.masks.shape == (len(got), 80, 112)
        assert got.masks.dtype == bool and got.masks.any()
    assert np.array_equal(plain.boxes, flipped.boxes) and np.array_equal(plain.scores, flipped.scores)  # base boxes


# -- config errors ---------------------------------------------------------------------------------------------------

def test_config_errors():
    with pytest.raises(ConfigError, match="fusion must be one of " + ", ".join(FUSIONS)):
        tiny_model(fusion="concat_after_conv5")
    with pytest.raises(ConfigError, match=r"attention map \(28x28\) must match the parsing RoIs \(14x14\)"):
        tiny_model(attention_size=14)
    with pytest.raises(ConfigError, match="FPN level.* p7 not built"):
        tiny_model(rpn_levels=["p3", "p4", "p5", "p7"])
    assert tiny_model(fusion="none", attention_size=14).attention is None      # no attention: no size to match
