"""AIParsing: module shapes, parameter counts and PGEC cost against the paper, RoI targets, scoring, paste and
painting, ground truth through the challenge-folder writer, training steps and ``hparse train`` of the CPU config."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

import hparse.data.detection  # noqa: F401  (registers the detection steps until hparse.data.transforms does)
from hparse import config as C
from hparse.data.detection import detection_collate
from hparse.data.readers import build_reader
from hparse.data.targets import edge_map
from hparse.data.transforms import build_transforms
from hparse.engine.evaluate_instances import evaluate_instance_folder
from hparse.errors import ConfigError
from hparse.evaluation import build_evaluators
from hparse.labels import get_meta
from hparse.models import build_model
from hparse.models.aiparsing import PGEC, AIParsing, AIParsingHead, GatherExcite, ParsingIoUHead
from hparse.models.complexity import count_params
from hparse.models.detection import (
    Detections,
    GroundTruth,
    edge_targets,
    paste_parsings,
    person_part_targets,
    roi_miou,
    zero_padding,
)
from hparse.structures import PersonInstances

CCP15 = get_meta("ccp15")
# a tiny AIParsing for fast tests: every stage of the paper's model at toy widths
TINY = {"type": "aiparsing", "backbone": {"name": "resnet18", "width": 0.25, "freeze_at": 0},
        "fpn": {"out_channels": 32, "levels": ["p3", "p4", "p5"]},
        "fcos": {"num_convs": 1, "gn_groups": 8, "detections_test": 10},
        "roi_size": 8, "context_ch": 32, "head_convs": 2, "head_ch": 32, "parsing_size": 16, "iou_conv_ch": 16,
        "iou_fc_ch": 16, "rois_per_image": 4}
PAPER_PARAMS, LIGHT_PARAMS = 50.2e6, 28.5e6     # Table IX


# -- synthetic ccp-multi-like scenes --------------------------------------------------------------------------
PART_ROWS = ((0.0, 0.18, 2), (0.18, 0.55, 4), (0.55, 0.9, 8), (0.9, 1.0, 10))    # hair, upper-clothes, pants, shoes
COLOURS = {2: (40, 30, 20), 4: (200, 40, 40), 8: (40, 60, 200), 10: (20, 20, 20)}


def make_scene(rng, size=(96, 96), people=3) -> dict:
    """Upright people (hair / upper clothes / pants / shoes bands, each its own colour) over a noisy
    background, later people in front; everyone keeps some pixels."""
    h, w = size
    image = (rng.normal(150, 20, (h, w, 3))).clip(0, 255).astype(np.uint8)
    label, human = np.zeros((h, w), np.uint8), np.zeros((h, w), np.uint8)
    for k in range(1, people + 1):
        ph = int(rng.integers(h * 0.45, h * 0.9))
        pw = max(6, ph // 3)
        y0, x0 = int(rng.integers(0, h - ph)), int(rng.integers(0, w - pw))
        for a, b, cls in PART_ROWS:
            ys = slice(y0 + int(a * ph), y0 + int(b * ph))
            label[ys, x0:x0 + pw], human[ys, x0:x0 + pw] = cls, k
            image[ys, x0:x0 + pw] = COLOURS[cls]
    ids = [k for k in range(1, people + 1) if (human == k).sum() >= 30]
    lut = np.zeros(256, np.uint8)
    lut[ids] = np.arange(1, len(ids) + 1)
    human = lut[human]
    label[human == 0] = 0
    return {"image": image, "label": label, "human_ids": human}


def write_dataset(root: Path, counts=(("train", 4), ("val", 2)), size=(96, 96), seed=0) -> Path:
    """A CIHP-layout dataset in ccp15 labels (as ``hparse data compose`` writes)."""
    rng = np.random.default_rng(seed)
    folders = {"train": "Training", "val": "Validation"}
    for split, n in counts:
        d = root / folders[split]
        for sub in ("Images", "Category_ids", "Human_ids"):
            (d / sub).mkdir(parents=True, exist_ok=True)
        ids = [f"{split}_{i:04d}" for i in range(n)]
        for i in ids:
            s = make_scene(rng, size)
            Image.fromarray(s["image"]).save(d / "Images" / f"{i}.jpg", quality=95)
            Image.fromarray(s["label"]).save(d / "Category_ids" / f"{i}.png")
            Image.fromarray(s["human_ids"]).save(d / "Human_ids" / f"{i}.png")
        (d / f"{split}_id.txt").write_text("".join(f"{i}\n" for i in ids))
    (root / "meta.json").write_text(json.dumps({"label_set": "ccp15"}))
    return root


def training_batch(samples: list[dict], short_sides=(80, 96)) -> dict:
    steps = [{"type": "RandomShortSide", "choices": list(short_sides)}, {"type": "HFlip", "p": 0.5},
             {"type": "PersonBoxes"}, {"type": "ToTensor"}]
    tf = build_transforms(steps, CCP15)
    rng = np.random.default_rng(0)
    return detection_collate([tf({**s, "id": str(i), "meta": {}}, rng) for i, s in enumerate(samples)])


def tiny_model(**changes) -> AIParsing:
    torch.manual_seed(0)
    return build_model({**TINY, **changes}, CCP15)


# -- modules -------------------------------------------------------------------------------------------------------

def test_gather_excite_pgec_and_head_shapes():
    x = torch.randn(3, 16, 32, 32)
    assert GatherExcite(16, 5, upsample=False)(x).shape == x.shape                  # GE_H: 32 -> 1
    unit = GatherExcite(16, 2)
    assert unit.gather(x).shape == (3, 16, 8, 8) and unit(x).shape == x.shape       # GE_4: 32 -> 8 -> 32
    pgec = PGEC(16, 24, roi_size=32)
    assert pgec(x).shape == (3, 24, 32, 32) and pgec.fuse[0].in_channels == 5 * 16
    assert [len([m for m in u.gather if isinstance(m, torch.nn.Conv2d)]) for u in pgec.units] == [5, 2, 3, 4]
    assert all(m.groups == 16 for u in pgec.units for m in u.gather if isinstance(m, torch.nn.Conv2d))
    with pytest.raises(ConfigError, match="do not gather"):
        PGEC(16, 24, roi_size=32, global_depth=4)
    head = AIParsingHead(16, 15, roi_size=32, context_ch=24, ch=20, num_convs=4, parsing_size=128)
    out = head(x)
    assert out["features"].shape == (3, 20, 32, 32)
    assert out["parsing"].shape == (3, 15, 128, 128) and out["edge"].shape == (3, 2, 128, 128)
    assert isinstance(head.convs[-2], torch.nn.GroupNorm) and head.convs[-3].bias is None   # GN on the last conv
    assert sum(isinstance(m, torch.nn.Conv2d) for m in head.convs) == 4
    assert head.relation(torch.randn(2, 24, 32, 32)).shape == (2, 24, 32, 32)       # the non-local block
    assert ParsingIoUHead(20, 15, 8, 12)(out["features"], out["parsing"]).shape == (3,)
    bare = AIParsingHead(16, 15, roi_size=32, context="conv", context_ch=24, ch=20, nonlocal_block=False,
                         gn=False, edge=False, parsing_size=64)
    assert set(bare(x)) == {"features", "parsing"}
    assert not any(isinstance(m, torch.nn.GroupNorm) for m in bare.modules())
    for kind in ("psp", "aspp"):
        assert AIParsingHead(16, 15, 32, kind, 24, ch=20, parsing_size=64)(x)["parsing"].shape == (3, 15, 64, 64)


def test_parameter_counts_match_the_paper():
    cihp = get_meta("cihp")
    full = build_model({"type": "aiparsing"}, cihp)
    assert count_params(full) == pytest.approx(50.42e6, rel=1e-3)                 # the spec's faithful build
    assert count_params(full) == pytest.approx(PAPER_PARAMS, rel=0.02)
    assert count_params(full.roi_head) + count_params(full.iou_head) == pytest.approx(18.31e6, rel=1e-3)
    cfg = C.load_config("aiparsing_light_r50_cihp")
    light = build_model({**cfg["model"], "norm": "bn"}, cihp)
    assert count_params(light) == pytest.approx(28.76e6, rel=1e-3)
    assert count_params(light) == pytest.approx(LIGHT_PARAMS, rel=0.02)
    cpu = build_model(C.load_config("aiparsing_cpu_ccpmulti")["model"], CCP15)
    assert count_params(cpu) == pytest.approx(4.06e6, rel=2e-3)


def test_cost_of_the_cpu_variant_detector_and_rois():
    from hparse.models.complexity import count_macs

    cpu = build_model(C.load_config("aiparsing_cpu_ccpmulti")["model"], CCP15)
    assert count_macs(cpu, (1, 3, 512, 512)) / 1e9 == pytest.approx(3.56, abs=0.01)   # the network: the detector
    assert cpu.roi_head_macs() / 1e9 == pytest.approx(0.23, abs=0.005)                  # spec: 8 RoIs = 1.84 G


def test_detection_backbone_options_keep_the_resnet_names():
    from hparse.models.backbones import build_backbone

    plain, caffe = build_backbone("resnet50"), build_backbone("resnet50", stride_in_1x1=True)
    assert list(plain.state_dict()) == list(caffe.state_dict())
    assert caffe.layer2[0].conv1.stride == (2, 2) and caffe.layer2[0].conv2.stride == (1, 1)
    assert plain.layer2[0].conv1.stride == (1, 1) and plain.layer2[0].conv2.stride == (2, 2)
    x101 = build_backbone("resnet101", groups=32, width_per_group=8)
    assert count_params(x101) == 86_742_336 and x101.layer1[0].conv2.groups == 32
    assert x101.layer1[0].conv2.out_channels == 256 and list(x101.state_dict())[:5] == list(plain.state_dict())[:5]
    frozen = build_backbone("resnet18", width=0.25, freeze_at=2).train()
    assert not any(p.requires_grad for p in [*frozen.conv1.parameters(), *frozen.layer1.parameters()])
    assert all(p.requires_grad for p in frozen.layer2.parameters())
    assert not frozen.bn1.training and not frozen.layer1[0].bn1.training and frozen.layer2[0].bn1.training
    stats = build_backbone("resnet18", width=0.25, norm_eval=True).train()
    assert not any(m.training for m in stats.modules() if isinstance(m, torch.nn.BatchNorm2d))
    assert all(p.requires_grad for p in stats.parameters())                  # affine still trained
    with pytest.raises(ValueError, match="Bottleneck"):
        build_backbone("resnet18", groups=32)


@pytest.mark.parametrize("roi, spec, paper", [(14, 1.32, 1.2), (32, 6.92, 6.4), (48, 15.56, 14.5)])
def test_pgec_multiply_adds_match_table_v(roi, spec, paper):
    from hparse.models.complexity import count_macs

    macs = count_macs(PGEC(256, 512, roi_size=roi), (1, 256, roi, roi)) / 1e9
    assert macs == pytest.approx(spec, abs=0.01)
    # within 10 % of the paper's one-decimal figure (of any value that rounds to it)
    assert 0.9 * (paper - 0.05) <= macs <= 1.1 * (paper + 0.05)


# -- RoI targets ---------------------------------------------------------------------------------------------------

def test_person_part_targets_keep_the_matched_person_only():
    label = torch.zeros(20, 20, dtype=torch.uint8)
    human = torch.zeros(20, 20, dtype=torch.uint8)
    label[2:12, 2:8], human[2:12, 2:8] = 4, 1
    label[6:16, 5:12], human[6:16, 5:12] = 8, 2                 # person 2 in front of person 1
    label[3, 3] = 255
    gt = GroundTruth(torch.tensor([[2.0, 2, 8, 12], [5, 6, 12, 16]]), torch.tensor([1, 2]), label, human)
    t = person_part_targets(gt, torch.tensor([[2.0, 2, 8, 12], [-2, 6, 12, 16]]), torch.tensor([0, 1]), (10, 6))
    assert t.shape == (2, 10, 6) and t.dtype == torch.long
    expected = torch.where(human[2:12, 2:8] == 1, label[2:12, 2:8], 0).long()
    expected[1, 1] = 255                                        # ignore kept
    assert torch.equal(t[0], expected)
    assert (t[1][:, 0] == 255).all() and set(t[1].unique().tolist()) <= {0, 8, 255}   # outside the image: ignore
    clipped = person_part_targets(gt, torch.tensor([[-2.0, 6, 12, 16]]), torch.tensor([1]), (10, 6), True)
    mine = torch.where(human == 2, label, 0).long()
    assert torch.equal(clipped[0], mine[6:16, 1:12:2])           # the box clipped to x >= 0, stretched


def test_edge_targets_equal_the_ce2p_rule_and_ignore():
    rng = np.random.default_rng(0)
    labels = np.kron(rng.integers(0, 5, (3, 4, 4)), np.ones((1, 4, 4), np.int64))     # blocky maps
    got = edge_targets(torch.from_numpy(labels), width=3)
    for lab, e in zip(labels, got):
        np.testing.assert_array_equal(e.numpy(), edge_map(lab.astype(np.uint8), width=3))
    labels[0, :2] = 255
    got = edge_targets(torch.from_numpy(labels))
    assert (got[0, :2] == 255).all()
    np.testing.assert_array_equal(got[0, 2:].numpy(), edge_map(labels[0].astype(np.uint8), width=3)[2:])


def test_roi_miou_target():
    t = torch.tensor([[[0, 0, 1, 1], [0, 0, 1, 1], [2, 2, 2, 255]]])
    assert roi_miou(t.clamp(max=2), t, 3).tolist() == [1.0]                       # perfect RoI
    pred = torch.tensor([[[0, 0, 1, 1], [0, 1, 1, 1], [2, 2, 0, 0]]])
    # class 0: inter 3, union 5; class 1: 4 / 5; class 2: 2 / 3; class 3 absent from both: skipped
    assert roi_miou(pred, t, 4).item() == pytest.approx((3 / 5 + 4 / 5 + 2 / 3) / 3)


# -- scoring, paste, painting ----------------------------------------------------------------------------------------

def test_score_is_sqrt_of_detection_times_clamped_miou():
    det = torch.tensor([0.64, 0.5, 0.9])
    score, quality = AIParsing.score(det, torch.tensor([0.25, -0.3, 1.7]))
    assert score.tolist() == pytest.approx([0.4, 0.0, math.sqrt(0.9)]) and not torch.isnan(score).any()
    assert quality.tolist() == pytest.approx([0.25, 0.0, 1.0])
    assert torch.equal(AIParsing.score(det, None)[0], det)


def test_paste_with_one_cell_pad_grows_the_box_by_one_roi_cell():
    probs = torch.zeros(1, 4, 8, 8)
    probs[:, 3] = 1.0
    box = torch.tensor([[10.0, 10, 26, 26]])                     # 2 px per RoI cell
    plain = paste_parsings(probs, box, (40, 40), pad=0)[0]
    ys, xs = np.nonzero(plain.numpy())
    assert (ys.min(), ys.max(), xs.min(), xs.max()) == (10, 25, 10, 25)
    padded = paste_parsings(probs, box, (40, 40), pad=1)[0]
    ys, xs = np.nonzero(padded.numpy())
    assert 8 <= ys.min() < 10 and 25 < ys.max() <= 27 and 8 <= xs.min() < 10 and 25 < xs.max() <= 27
    assert set(padded.unique().tolist()) == {0, 3}
    halves = torch.zeros(1, 4, 8, 8)
    halves[:, 1, :, :4], halves[:, 2, :, 4:] = 1.0, 1.0
    for pad in (0, 1):
        row = paste_parsings(halves, box, (40, 40), pad=pad)[0, 18].numpy()
        assert row[10:18].tolist() == [1] * 8 and row[18:26].tolist() == [2] * 8   # the boundary does not move


def _patched_heads(model: AIParsing, rois: dict[tuple, tuple[torch.Tensor, float]]):
    """``parse_rois`` answering one-hot logits (and a predicted mIoU) per known box."""
    def parse_rois(features, boxes):
        maps = [rois[tuple(b.tolist())] for b in boxes[0]]
        logits = torch.stack([10 * torch.nn.functional.one_hot(m, model.num_classes).permute(2, 0, 1).float()
                              for m, _ in maps])
        return {"parsing": logits, "miou": torch.tensor([q for _, q in maps])}
    model.parse_rois = parse_rois


def parse_people(model, det: Detections, size) -> PersonInstances:
    """The model's inference step after detection, on patched heads (no features needed)."""
    heads = lambda rois: model.roi_outputs({"features": {}}, 0, det.boxes[rois])  # noqa: E731
    return model.people(size, det.boxes, det.scores, heads)


def test_people_are_painted_in_ascending_score_order():
    model = tiny_model().eval()
    a, b = (2.0, 2.0, 34.0, 34.0), (18.0, 18.0, 50.0, 50.0)
    size = model.roi_head.parsing_size
    for miou_a, miou_b, winner in ((0.9, 0.2, 4), (0.1, 0.8, 8)):
        _patched_heads(model, {a: (torch.full((size, size), 4), miou_a), b: (torch.full((size, size), 8), miou_b)})
        det = Detections(torch.tensor([a, b]), torch.tensor([0.6, 0.6]), torch.tensor([1, 1]))
        people = parse_people(model, det, (56, 56))
        assert people.scores.dtype == np.float64 and people.parsings.shape == (2, 56, 56)
        assert people.scores.tolist() == pytest.approx([math.sqrt(0.6 * miou_a), math.sqrt(0.6 * miou_b)])
        sem = people.to_semantic()
        assert sem[25, 25] == winner and sem[5, 5] == 4 and sem[45, 45] == 8


def test_ground_truth_as_prediction_through_the_challenge_folders_scores_one(tmp_path):
    root = write_dataset(tmp_path / "data", counts=(("val", 3),), size=(120, 120))
    reader = build_reader("cihp", root, "val", label_set="ccp15")
    model = tiny_model(parsing_size=128).eval()
    (writer,) = build_evaluators([{"type": "challenge_folders", "out": str(tmp_path / "pred")}], CCP15)
    for sample in reader:
        gt = GroundTruth(*_boxes_ids(sample), torch.tensor(sample["label"]), torch.tensor(sample["human_ids"]))
        boxes = gt.boxes.clone()
        maps = person_part_targets(gt, boxes, torch.arange(len(boxes)), 128)
        _patched_heads(model, {tuple(b.tolist()): (m.clamp(max=14), 1.0) for b, m in zip(boxes, maps)})
        people = parse_people(model, Detections(boxes, torch.ones(len(boxes)), torch.ones(len(boxes))),
                              sample["label"].shape)
        writer.process([sample], [{"instances": people}])
    scores = evaluate_instance_folder(tmp_path / "pred", reader, progress=False).summary()
    assert scores["APp_vol"] == pytest.approx(1.0) and scores["APp50"] == pytest.approx(1.0)
    assert scores["PCP50"] == pytest.approx(1.0)


def _boxes_ids(sample):
    from hparse.data.detection import person_boxes

    boxes, ids = person_boxes(sample["human_ids"])
    return torch.from_numpy(boxes), torch.from_numpy(ids)


# -- training ------------------------------------------------------------------------------------------------------

def _step(model, batch, optimizer=None):
    losses = model(batch)
    total = sum(losses.values())
    if optimizer is not None:
        optimizer.zero_grad()
        total.backward()
        optimizer.step()
    return {k: float(v.detach()) for k, v in losses.items()}


def test_one_training_step_on_two_scenes_and_inference():
    rng = np.random.default_rng(1)
    model = tiny_model(backbone={"name": "resnet18", "width": 0.25, "freeze_at": 2}).train()
    batch = training_batch([make_scene(rng), make_scene(rng, (80, 112))])
    losses = model(batch)
    assert set(losses) == {"fcos_cls", "fcos_box", "fcos_ctr", "ce_parsing", "balanced_edge_ce_edge",
                           "lovasz_parsing", "miou_score"}
    assert all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    body = model.body.backbone
    assert body.layer1[0].conv1.weight.grad is None and body.conv1.weight.grad is None          # frozen
    for p in (body.layer3[0].downsample[0].weight, model.fcos.head.cls_logits.weight, model.roi_head.parsing.weight,
              model.roi_head.edge.weight, model.iou_head.score.weight):
        assert p.grad is not None and p.grad.abs().sum() > 0
    model.eval()
    with torch.no_grad():
        people = model({"image": batch["image"], "image_sizes": batch["image_sizes"]})
    assert [p.image_size for p in people] == batch["image_sizes"]
    with pytest.raises(ConfigError, match="detection collate"):
        model({"image": [batch["image"][0]]})


def test_padding_becomes_the_mean_pixel():
    x = torch.ones(2, 3, 4, 6)
    out = zero_padding(x, [(4, 6), (2, 3)])
    assert out[0].sum() == 72 and out[1, :, :2, :3].sum() == 18 and out[1].sum() == 18


def composed_ccp_step(ccp_root, tmp_path, config: str):
    """``(model in training mode, batch)``: the config's model and a training batch of two ccp-multi images
    composed from real CCP people."""
    from hparse.data.compose import compose_dataset

    compose_dataset("ccp", ccp_root, tmp_path / "multi", splits=("train",), label_set="ccp15", count=2,
                    progress=False)
    reader = build_reader("cihp", tmp_path / "multi", "train", label_set="ccp15")
    cfg = C.load_config(config)
    tf = build_transforms(cfg["data"]["train_transforms"], reader.meta)
    batch = detection_collate([tf(reader[i], np.random.default_rng(i)) for i in range(2)])
    torch.manual_seed(0)
    return build_model(cfg["model"], reader.meta, loss=cfg["loss"]).train(), batch


def test_one_training_step_on_two_composed_ccp_images(ccp_root, tmp_path):
    model, batch = composed_ccp_step(ccp_root, tmp_path, "aiparsing_cpu_ccpmulti")
    losses = model(batch)
    assert len(losses) == 7 and all(torch.isfinite(v) for v in losses.values()), losses
    sum(losses.values()).backward()


def test_overfitting_four_scenes_drives_every_loss_down():
    rng = np.random.default_rng(2)
    batch = training_batch([make_scene(rng) for _ in range(4)], short_sides=(96,))
    model = tiny_model(rois_per_image=8).train()
    untrained_iou_head = copy.deepcopy(model.iou_head)
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    history = [_step(model, batch, optimizer) for _ in range(60)]
    first = {k: np.mean([h[k] for h in history[:5]]) for k in history[0]}
    last = {k: np.mean([h[k] for h in history[-5:]]) for k in history[0]}
    moving = {"miou_score"}          # its target is the mIoU of the current parsing, which rises as it learns
    assert all(last[k] < first[k] for k in first if k not in moving), (first, last)
    with torch.no_grad():            # against the final parsing, the trained mIoU score beats the untrained one
        torch.manual_seed(0)
        trained = _step(model, batch)["miou_score"]
        model.iou_head = untrained_iou_head
        torch.manual_seed(0)
        assert trained < _step(model, batch)["miou_score"]


# -- hparse train --------------------------------------------------------------------------------------------------

def test_hparse_train_cpu_config_validates_with_instance_and_box(tmp_path):
    from typer.testing import CliRunner

    from hparse.cli import app

    root = write_dataset(tmp_path / "ccp-multi", size=(128, 128))
    steps = [{"type": "RandomShortSide", "choices": [128, 160], "max_size": 160}, {"type": "HFlip", "p": 0.5},
             {"type": "PersonBoxes"}, {"type": "ToTensor"}]
    overrides = [f"data.root={root}", "train.batch_size=2", "train.epochs=1", "train.workers=0",
                 "train.warmup_iters=0", "eval.long_side=160", f"data.train_transforms={yaml.safe_dump(steps)}",
                 "model.rois_per_image=4", "model.fcos.detections_test=5"]
    out = tmp_path / "run"
    res = CliRunner().invoke(app, ["train", "aiparsing_cpu_ccpmulti", *overrides, "--out", str(out)])
    assert res.exit_code == 0, res.output
    (record,) = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert record["step"] == 2
    for key in ("instance/APp_vol", "instance/PCP50", "instance/miou", "box/AP", "box/AP50", "box/AR100"):
        assert key in record
    assert (out / "best.pt").is_file()
