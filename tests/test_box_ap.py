"""The ``box`` evaluator: COCO box AP equal to pycocotools' COCOeval (bbox) number for number on generated
detections, and the evaluator's plumbing (ground truth from ``human_ids``, GT as prediction = 1)."""

from __future__ import annotations

import contextlib
import io
import math

import numpy as np
import pytest

from hparse.evaluation import build_evaluators
from hparse.evaluation.box import STATS, ImageBoxes, box_ap, ground_truth_boxes
from hparse.labels import get_meta
from hparse.structures import PersonInstances


def _scene(rng, n_images: int = 12):
    """Ground truth of every size class, noisy detections around it (duplicates, misses, false alarms,
    tied scores), an image without people and one without detections."""
    preds, gts = [], []
    for i in range(n_images):
        g = rng.integers(0 if i == 0 else 1, 7)
        xy = rng.uniform(0, 300, (g, 2))
        wh = rng.choice([8.0, 20.0, 50.0, 120.0], (g, 2)) * rng.uniform(0.7, 1.3, (g, 2))
        boxes = np.concatenate([xy, xy + wh], 1).round(1)
        areas = (wh[:, 0] * wh[:, 1] * rng.uniform(0.5, 1.0, g)).round(1)       # mask areas below the box's
        gts.append(ImageBoxes(boxes, areas=areas))
        if i == 1:
            preds.append(None)
            continue
        dets = [b + rng.normal(0, 0.08, 4) * np.r_[b[2:] - b[:2], b[2:] - b[:2]] for b in boxes for _ in
                range(rng.integers(0, 3))]
        junk = rng.uniform(0, 300, (rng.integers(0, 5), 2))
        dets += [np.r_[p, p + rng.uniform(5, 100, 2)] for p in junk]
        d = np.array(dets, np.float64).reshape(-1, 4).round(2)
        scores = rng.choice([0.9, 0.5, 0.3], len(d)) if i % 3 == 0 else rng.uniform(0, 1, len(d)).round(3)
        preds.append(ImageBoxes(d, scores))
    return preds, gts


def _cocoeval(preds, gts, max_dets=(1, 10, 100)):
    pytest.importorskip("pycocotools")
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    def xywh(b):
        return [float(b[0]), float(b[1]), float(b[2] - b[0]), float(b[3] - b[1])]

    images = [{"id": i + 1} for i in range(len(gts))]
    anns = [{"image_id": i + 1, "category_id": 1, "bbox": xywh(b), "area": float(a), "iscrowd": 0}
            for i, g in enumerate(gts) for b, a in zip(g.boxes, g.areas)]
    for k, a in enumerate(anns):
        a["id"] = k + 1
    results = [{"image_id": i + 1, "category_id": 1, "bbox": xywh(b), "score": float(s)}
               for i, p in enumerate(preds) if p is not None for b, s in zip(p.boxes, p.scores)]
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = {"images": images, "annotations": anns, "categories": [{"id": 1, "name": "person"}]}
        gt.createIndex()
        ev = COCOeval(gt, gt.loadRes(results), "bbox")
        ev.params.maxDets = list(max_dets)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_box_ap_equals_pycocotools(seed):
    preds, gts = _scene(np.random.default_rng(seed))
    ev = _cocoeval(preds, gts)
    res = box_ap(preds, gts)
    ours = [res.stats[name] for name, *_ in STATS]
    theirs = [math.nan if v == -1 else v for v in ev.stats]
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-12)
    np.testing.assert_allclose(res.precision, ev.eval["precision"][:, :, 0], atol=1e-12)
    np.testing.assert_allclose(res.recall, ev.eval["recall"][:, 0], atol=1e-12)


def test_box_ap_with_many_detections_per_image_cuts_like_coco():
    rng = np.random.default_rng(5)
    boxes = np.concatenate([rng.uniform(0, 400, (30, 2)), rng.uniform(0, 400, (30, 2)) + 60], 1)
    gts = [ImageBoxes(boxes[:, [0, 1, 2, 3]].clip(min=0), areas=None)]
    gts[0].areas = (gts[0].boxes[:, 2] - gts[0].boxes[:, 0]) * (gts[0].boxes[:, 3] - gts[0].boxes[:, 1])
    dets = np.concatenate([gts[0].boxes + rng.normal(0, 3, (30, 4)) for _ in range(5)])
    preds = [ImageBoxes(dets, rng.uniform(0, 1, len(dets)))]          # 150 detections: cut to 100, 10, 1
    ev = _cocoeval(preds, gts)
    res = box_ap(preds, gts)
    np.testing.assert_allclose([res.stats[n] for n, *_ in STATS], ev.stats, atol=1e-12)


def test_ground_truth_as_prediction_scores_one_and_undefined_ranges_are_nan():
    human = np.zeros((200, 300), np.uint8)
    human[10:150, 20:120] = 1        # large
    human[160:190, 200:240] = 2      # medium
    human[0:5, 290:296] = 4          # small; id 3 absent
    gt = ground_truth_boxes(human)
    np.testing.assert_array_equal(gt.boxes, [[20, 10, 120, 150], [200, 160, 240, 190], [290, 0, 296, 5]])
    np.testing.assert_array_equal(gt.areas, [14000, 1200, 30])
    res = box_ap([ImageBoxes(gt.boxes, np.array([0.9, 0.8, 0.7]))], [gt])
    assert all(res.stats[k] == pytest.approx(1.0) for k in ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR100"))
    assert res.stats["AR1"] == pytest.approx(1 / 3)
    only_large = box_ap([None], [ImageBoxes(np.array([[0, 0, 200, 200.0]]))])
    assert only_large.stats["AP"] == 0 and math.isnan(only_large.stats["APs"])


def test_box_evaluator_reads_instances_and_human_ids():
    human = np.zeros((120, 160), np.uint8)
    human[10:110, 10:60] = 1
    human[20:100, 90:150] = 2
    label = (human > 0).astype(np.uint8) * 3
    sample = {"id": "a", "image": np.zeros((120, 160, 3), np.uint8), "label": label, "human_ids": human}
    people = PersonInstances.from_person_labels([np.where(human == k, label, 0) for k in (1, 2)], [0.9, 0.2])
    (ev,) = build_evaluators([{"type": "box", "gt_area": "box"}], get_meta("ccp15"))
    ev.process([sample, sample], [{"instances": people}, {}])
    res = ev.evaluate()
    assert res.num_gt == 4 and res.num_dets == 2
    assert res.summary()["AP50"] == pytest.approx(0.5, abs=0.02)       # half the people found, at top scores
    assert "AP @IoU=0.50:0.95" in res.format_table() and res.to_dict()["metric"] == "box_ap"
