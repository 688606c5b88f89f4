"""Issue #21: three AP^p edge cases checked against ports of the official scripts' logic on the same inputs
(MHP ``eval_mhp.py`` ``eval_seg_ap`` and Parsing R-CNN ``parsing_eval.py`` ``eval_parsing_ap``):

* scores keep float64 from the prediction files to the ranking (the scripts read them with ``float()``), so
  near-equal scores are not turned into ties that rank differently;
* ``score_thresh``: every prediction is sorted first and low scores are skipped afterwards (Parsing R-CNN),
  which orders tied predictions as the script does;
* ground-truth pixels of value 255 (ignore) inside a person are left out of that person's confusion matrix,
  prediction included (both scripts' ``fast_hist``), not counted as background.

Each case also checks that the old behaviour gives another number, so the test would catch a regression.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from hparse.io import instance_outputs as io
from hparse.metrics import person_ap
from hparse.structures import PersonInstances

from .test_metrics_instance import T9, random_dataset

# ------------------------------------------------------------------------------- the official logic, ported

def fast_hist(a, b, n):
    k = (a >= 0) & (a < n)                       # GT values outside 0..n-1 (255) drop the pixel
    return np.bincount(n * a[k].astype(int) + b[k], minlength=n ** 2).reshape(n, n)


def cal_one_mean_iou(pred, gt, n):
    hist = fast_hist(gt, pred, n).astype(float)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.diag(hist) / (hist.sum(1) + hist.sum(0) - np.diag(hist))


def ref_voc_ap(rec, prec):
    mrec, mpre = np.concatenate(([0.], rec, [1.])), np.concatenate(([0.], prec, [0.]))
    for i in range(mpre.size - 1, 0, -1):
        mpre[i - 1] = max(mpre[i - 1], mpre[i])
    i = np.where(mrec[1:] != mrec[:-1])[0]
    return np.sum((mrec[i + 1] - mrec[i]) * mpre[i + 1])


def ref_eval_parsing_ap(dets, gts, nb_class, thresholds=T9, score_thresh=None):
    """``dets``: (image index, score as the script reads it, HxW parsing) in the file order; ``gts``: per
    image, the GT person maps. The loop of ``eval_parsing_ap`` (``eval_seg_ap`` without ``score_thresh``)."""
    confidence = np.array([d[1] for d in dets])
    sorted_ind = np.argsort(-confidence)
    sorted_scores = confidence[sorted_ind]
    npos = sum(len(g) for g in gts)
    aps, pcps = [], []
    for t in thresholds:
        det = [[False] * len(g) for g in gts]
        tp, fp, pcp_list = np.zeros(len(dets)), np.zeros(len(dets)), []
        for d in range(len(dets)):
            if score_thresh is not None and sorted_scores[d] < score_thresh:
                continue
            n, _, mask_pred = dets[sorted_ind[d]]
            ovmax, jmax = -np.inf, -1
            for i, mask_gt in enumerate(gts[n]):
                seg_iou = cal_one_mean_iou(mask_pred.reshape(-1), mask_gt.reshape(-1), nb_class)
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", RuntimeWarning)
                    mean_seg_iou = np.nanmean(seg_iou)
                if mean_seg_iou > ovmax:
                    ovmax, seg_iou_max, jmax, mask_gt_u = mean_seg_iou, seg_iou, i, np.unique(mask_gt)
            if ovmax > t and not det[n][jmax]:
                tp[d], det[n][jmax] = 1., True
                pcp_d = len(mask_gt_u[np.logical_and(mask_gt_u > 0, mask_gt_u < nb_class)])
                pcp_n = float(np.sum(seg_iou_max[1:] > t))
                pcp_list.append(pcp_n / pcp_d if pcp_d > 0 else 0.0)
            else:
                fp[d] = 1.
        tp, fp = np.cumsum(tp), np.cumsum(fp)
        aps.append(ref_voc_ap(tp / float(npos), tp / np.maximum(tp + fp, np.finfo(np.float64).eps)))
        pcps.append(np.mean(pcp_list + [0.0] * (npos - len(pcp_list))))
    return np.array(aps), np.array(pcps)


def dets_of(preds: list[PersonInstances]) -> list:
    return [(n, float(s), p) for n, pred in enumerate(preds) for s, p in zip(pred.scores, pred.full_parsings())]


def assert_same(got, ref_ap, ref_pcp):
    np.testing.assert_allclose(got.ap, ref_ap, rtol=0, atol=1e-12)
    np.testing.assert_allclose(got.pcp, ref_pcp, rtol=0, atol=1e-12)


# ---------------------------------------------------------------------------------------------------- cases

def test_scores_read_from_files_keep_float64(tmp_path):
    """Two images; the wrong person of image 0 scores 0.3, the right one of image 1 0.30000001: in float32
    they tie and image 0's comes first (AP 0.5); read as the script reads them, image 1's ranks first (AP 1)."""
    gt = np.zeros((8, 8), np.uint8)
    gt[2:6, 2:6] = 1
    wrong = np.zeros((8, 8), np.uint8)
    wrong[0:2, 6:8] = 2
    scenes = [(wrong, "0.3"), (gt, "0.30000001")]
    for k, (parsing, score) in enumerate(scenes):
        io.write_label_png(tmp_path / io.PERSONS / f"im{k}_1.png", parsing)
        (tmp_path / io.PERSONS / f"im{k}.txt").write_text(f"{score}\n")
    preds = [io.read_person_parsing(tmp_path, f"im{k}") for k in range(2)]
    gts = [[], [gt]]
    assert preds[1].scores[0] > preds[0].scores[0] and preds[1].scores.dtype == np.float64
    official = ref_eval_parsing_ap([(k, float(s), p) for k, (p, s) in enumerate(scenes)], gts, 3)
    got = person_ap(preds, gts, 3)
    assert_same(got, *official)
    assert got.summary()["APp50"] == 1.0
    rounded = [PersonInstances.from_person_labels([p], scores=np.float32([float(s)])) for p, s in scenes]
    rounded = [PersonInstances(r.image_size, r.boxes, np.float32(r.scores), r.parsings) for r in rounded]
    assert person_ap(rounded, gts, 3).summary()["APp50"] == 0.5          # what float32 made of it


@pytest.mark.parametrize("seed", [0, 3, 7])
def test_score_thresh_sorts_first_then_skips(seed):
    scenes, gt_people, preds = random_dataset(seed, n_images=8)
    official = ref_eval_parsing_ap(dets_of(preds), gt_people, 6, score_thresh=0.5)
    assert_same(person_ap(preds, gt_people, 6, score_thresh=0.5), *official)
    filtered_first = [p.select(p.scores >= 0.5) for p in preds]          # the former order
    old = person_ap(filtered_first, gt_people, 6)
    kept = np.concatenate([p.scores for p in preds]) >= 0.5
    conf = np.concatenate([p.scores for p in preds])
    order = np.argsort(-conf)
    assert not np.array_equal(order[kept[order]], np.flatnonzero(kept)[np.argsort(-conf[kept])])
    assert seed != 0 or not np.allclose(old.ap, official[0], atol=1e-12)  # seed 0: the former AP differs


@pytest.mark.parametrize("seed", [1, 2])
def test_ignore_pixels_inside_a_person_are_dropped(seed):
    scenes, gt_people, preds = random_dataset(seed, n_images=6)
    rng = np.random.default_rng(seed)
    with_ignore = []
    for people in gt_people:
        marked = []
        for g in people:
            g = g.copy()
            g[(g > 0) & (rng.random(g.shape) < 0.3)] = 255                 # ignore pixels inside the person
            marked.append(g)
        with_ignore.append(marked)
    official = ref_eval_parsing_ap(dets_of(preds), with_ignore, 6)
    got = person_ap(preds, with_ignore, 6)
    assert_same(got, *official)
    as_background = [[np.where(g == 255, 0, g) for g in people] for people in with_ignore]
    old = person_ap(preds, as_background, 6)
    assert not (np.allclose(old.ap, got.ap) and np.allclose(old.pcp, got.pcp))


def test_ignore_only_person_and_other_out_of_range_values():
    """A GT person of ignore pixels only still counts (the script's ``sum(mask > 0)``) and is scored as the
    script scores it (only background left: mean IoU 1, PCP 0); a value neither a class nor 255 is refused."""
    g = np.zeros((6, 6), np.uint8)
    g[1:3, 1:3] = 255
    p = PersonInstances.from_person_labels([np.where(g > 0, 1, 0).astype(np.uint8)], scores=[0.9])
    official = ref_eval_parsing_ap(dets_of([p]), [[g]], 3)
    got = person_ap([p], [[g]], 3)
    assert got.npos == 1
    assert_same(got, *official)
    with pytest.raises(ValueError, match="class 7"):
        person_ap([p], [[np.where(g > 0, 7, 0).astype(np.uint8)]], 3)
