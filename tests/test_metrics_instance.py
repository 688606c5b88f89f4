"""Instance metrics: CIHP AP^r (part_ap), MHP AP^p / PCP (person_ap), COCO human mask AP (mask_ap).

Besides hand-computed cases, the vectorised metrics are compared with loop-by-loop ports of the
official scripts' logic (reference notes B.4 / B.5) on random scenes with tied scores, and
mask_ap with pycocotools when it is installed.
"""

from __future__ import annotations

import contextlib
import io
import shutil
import warnings

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from hparse.metrics import mask_ap, part_ap, person_ap, voc_ap
from hparse.structures import PartInstances, PersonInstances

T9 = np.round(np.arange(1, 10) * 0.1, 1)


# --------------------------------------------------------------------------- helpers


def cihp_gt(label: np.ndarray, human: np.ndarray) -> PartInstances:
    """CIHP ground truth from a class map and a person map: inst_id = (human_id - 1) * 20 + class_id."""
    ids = np.where(label > 0, (human.astype(np.int64) - 1) * 20 + label, 0)
    u = np.unique(ids[ids > 0])
    rows = np.stack([u, (u - 1) % 20 + 1, (u - 1) // 20 + 1], 1)
    return PartInstances.from_cihp(ids.astype(np.uint8), rows)


def person_labels(label, human):
    return [np.where(human == k, label, 0).astype(np.uint8) for k in range(1, int(human.max()) + 1)]


def random_scene(rng, h=24, w=32, n=4, num_classes=6):
    """Class map + person map with up to n blocky people (later people painted over earlier ones)."""
    label, human = np.zeros((h, w), np.uint8), np.zeros((h, w), np.uint8)
    for k in range(1, n + 1):
        y0, x0 = rng.integers(0, h - 6), rng.integers(0, w - 6)
        hh, ww = rng.integers(4, 11, 2)
        cut = y0 + rng.integers(1, hh)
        ys, xs = slice(y0, y0 + hh), slice(x0, x0 + ww)
        block = np.zeros((h, w), np.uint8)
        block[ys, xs] = rng.integers(1, num_classes)
        block[cut:y0 + hh, xs] = rng.integers(1, num_classes)
        fg = block > 0
        label[fg], human[fg] = block[fg], k
    present = np.unique(human[human > 0])                 # renumber people that kept pixels
    lut = np.zeros(256, np.uint8)
    lut[present] = np.arange(1, len(present) + 1)
    return label, lut[human]


def random_prediction(rng, people, num_classes, h, w) -> PersonInstances:
    """Perturbed copies of the GT people (shifts, class noise, duplicates, junk) with tied scores."""
    out = []
    for p in people:
        for _ in range(rng.integers(0, 3)):               # 0, 1 or 2 copies: misses and duplicates
            q = np.roll(p, (rng.integers(-2, 3), rng.integers(-2, 3)), (0, 1))
            noise = (rng.random(q.shape) < 0.15) & (q > 0)
            q[noise] = rng.integers(1, num_classes, noise.sum())
            out.append(q)
    for _ in range(rng.integers(0, 2)):                   # junk person
        q = np.zeros((h, w), np.uint8)
        y, x = rng.integers(0, h - 5), rng.integers(0, w - 5)
        q[y:y + 5, x:x + 5] = rng.integers(1, num_classes)
        out.append(q)
    scores = rng.choice([0.2, 0.5, 0.5, 0.7, 0.9], len(out))
    return PersonInstances.from_person_labels(out, scores=scores, image_size=(h, w))


def random_dataset(seed, n_images=6, num_classes=6, h=24, w=32):
    rng = np.random.default_rng(seed)
    scenes = [random_scene(rng, h, w, num_classes=num_classes) for _ in range(n_images)]
    gt_people = [person_labels(lab, hum) for lab, hum in scenes]
    preds = [random_prediction(rng, people, num_classes, h, w) for people in gt_people]
    return scenes, gt_people, preds


# --------------------------------------------------------------------------- official-logic references


def ref_voc_ap(rec, prec):
    mrec = np.concatenate(([0.], rec, [1.]))
    mpre = np.concatenate(([0.], prec, [0.]))
    for i in range(mpre.size - 1, 0, -1):
        mpre[i - 1] = np.maximum(mpre[i - 1], mpre[i])
    i = np.where(mrec[1:] != mrec[:-1])[0]
    return np.sum((mrec[i + 1] - mrec[i]) * mpre[i + 1])


def ref_cihp_ap(preds, gts, num_classes, thresholds, one_to_one=False):
    """Loop port of test_inst_part_ap.py (one_to_one adds a VOC 'det' flag). -> (T, C-1) AP, gt counts."""
    aps = np.zeros((len(thresholds), num_classes - 1))
    counts = np.zeros(num_classes - 1, int)
    for c in range(1, num_classes):
        gt_count, scores, best, keys = 0, [], [], []
        for n, (pred, gt) in enumerate(zip(preds, gts)):
            if pred is None:
                continue
            gcls = dict(zip(gt.instance_ids.tolist(), gt.classes.tolist()))
            gids = [i for i in np.unique(gt.ids) if i != 0 and gcls[i] == c]
            gmasks = [gt.ids == i for i in gids]
            pcls = dict(zip(pred.instance_ids.tolist(), zip(pred.classes.tolist(), pred.scores.tolist())))
            pids = [i for i in np.unique(pred.ids) if i != 0 and pcls[i][0] == c]
            gt_count += len(gmasks)
            if not pids:
                continue
            for i in pids:
                pm = pred.ids == i
                scores.append(pcls[i][1])
                if not gmasks:
                    best.append(-1.0)
                    keys.append(None)
                    continue
                ious = [(pm & g).sum() / (g.sum() + pm.sum() - (pm & g).sum()) for g in gmasks]
                best.append(max(ious))
                keys.append((n, int(np.argmax(ious))))
        counts[c - 1] = gt_count
        idx = np.argsort(np.array(scores))[::-1]
        for ti, t in enumerate(thresholds):
            det, tp, fp = set(), [], []
            for d in idx:
                hit = best[d] > t
                if hit and one_to_one:
                    hit = keys[d] not in det
                    det.add(keys[d])
                tp.append(int(hit))
                fp.append(int(not hit))
            tp, fp = np.cumsum(np.array(tp, float)), np.cumsum(np.array(fp, float))
            with np.errstate(divide="ignore", invalid="ignore"):
                rec = tp / float(gt_count)
            prec = tp / np.maximum(tp + fp, np.finfo(np.float64).eps)
            aps[ti, c - 1] = ref_voc_ap(rec, prec)
    return aps, counts


def fast_hist(a, b, n):
    k = (a >= 0) & (a < n)
    return np.bincount(n * a[k].astype(int) + b[k], minlength=n ** 2).reshape(n, n)


def ref_mhp(preds, gts, num_classes, thresholds, background="include"):
    """Loop port of eval_mhp.py / Parsing R-CNN eval_parsing_ap -> (ap (T,), pcp (T,))."""
    lo = 0 if background == "include" else 1
    gts = [[g for g in people if (g > 0).any()] for people in gts]
    npos = sum(len(g) for g in gts)
    dets = [(n, s, p) for n, pred in enumerate(preds) for s, p in zip(pred.scores, pred.full_parsings())]
    order = np.argsort(-np.array([d[1] for d in dets], np.float64))
    aps, pcps = [], []
    for t in thresholds:
        matched = [[False] * len(g) for g in gts]
        tp, fp, pcp_list = np.zeros(len(dets)), np.zeros(len(dets)), []
        for d, j in enumerate(order):
            n, _, p = dets[j]
            ovmax, jmax, best_iou = -np.inf, -1, None
            for i, g in enumerate(gts[n]):
                hist = fast_hist(g.reshape(-1), p.reshape(-1).astype(int), num_classes).astype(float)
                with np.errstate(divide="ignore", invalid="ignore"):
                    iu = np.diag(hist) / (hist.sum(1) + hist.sum(0) - np.diag(hist))
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    mean = np.nanmean(iu[lo:])
                if mean > ovmax:
                    ovmax, jmax, best_iou = mean, i, iu
            if ovmax > t:
                if not matched[n][jmax]:
                    tp[d] = 1
                    matched[n][jmax] = True
                    n_parts = len(set(np.unique(gts[n][jmax]).tolist()) - {0})
                    hits = np.sum(best_iou[1:] > t)
                    pcp_list.append(hits / n_parts if n_parts else 0.0)
                else:
                    fp[d] = 1
            else:
                fp[d] = 1
        tp, fp = np.cumsum(tp), np.cumsum(fp)
        rec = tp / float(npos)
        prec = tp / np.maximum(tp + fp, np.finfo(np.float64).eps)
        aps.append(ref_voc_ap(rec, prec))
        pcps.append(np.mean(pcp_list + [0.0] * (npos - len(pcp_list))))
    return np.array(aps), np.array(pcps)


# --------------------------------------------------------------------------- voc_ap


def test_voc_ap_matches_loop_and_does_not_clip_recall():
    rng = np.random.default_rng(0)
    for _ in range(20):
        rec = np.sort(rng.random(7)) * 1.5
        prec = rng.random(7)
        assert voc_ap(rec, prec) == pytest.approx(ref_voc_ap(rec, prec), abs=1e-15)
    assert voc_ap([1.0, 2.0], [1.0, 1.0]) == 2.0      # recall 2 -> area 2 (no clipping, as the scripts)
    assert voc_ap([], []) == 0.0


# --------------------------------------------------------------------------- part_ap


def rect_ids(h, w, rects):
    """ids map with rects [(id, y0, y1, x0, x1)]."""
    ids = np.zeros((h, w), np.uint8)
    for i, y0, y1, x0, x1 in rects:
        ids[y0:y1, x0:x1] = i
    return ids


def test_part_ap_gt_as_prediction_is_one():
    scenes, _, _ = random_dataset(1, n_images=5)
    gts = [cihp_gt(lab, hum) for lab, hum in scenes]
    preds = [g.relabel() for g in gts]                   # CIHP prediction format: ids 1..K, score 1
    for one in (False, True):
        r = part_ap(preds, gts, 6, one_to_one=one)
        has_gt = r.gt_counts > 0
        assert has_gt.all()
        np.testing.assert_array_equal(r.class_ap, 1.0)
        np.testing.assert_array_equal(r.class_recall, 1.0)
        assert r.summary() == {"APr50": 1.0, "APr60": 1.0, "APr70": 1.0, "APr_vol": 1.0}
        assert r.num_images == 5 and r.map.shape == (9,) and r.class_ap.shape == (9, 5)
    assert "APr_vol" in r.format_table() and r.to_dict()["APr50"] == 1.0


def test_part_ap_hand_computed_two_gt_three_preds():
    # one image 10x20, class 1: GT A = rows 0-3 x cols 0-9, GT B = rows 6-9 x cols 0-9 (40 px each).
    # P1 (0.9) = A exactly (IoU 1); P2 (0.8) elsewhere (IoU 0, FP); P3 (0.7) = rows 6-9 x cols 0-5
    # (24 px inside B: IoU 24/40 = 0.6 -- strict >, so FP at t = 0.6).
    # t <= 0.5: TP FP TP -> rec .5 .5 1, prec 1 .5 2/3 -> AP = .5 * 1 + .5 * 2/3 = 5/6.
    # t >= 0.6: TP FP FP -> AP = .5.  AP_vol = (5 * 5/6 + 4 * .5) / 9.
    gt = PartInstances(rect_ids(10, 20, [(1, 0, 4, 0, 10), (2, 6, 10, 0, 10)]), [1, 1], [1, 1])
    pred = PartInstances(rect_ids(10, 20, [(1, 0, 4, 0, 10), (2, 0, 4, 12, 20), (3, 6, 10, 0, 6)]),
                         [1, 1, 1], [0.9, 0.8, 0.7])
    r = part_ap([pred], [gt], 2)
    expected = np.array([5 / 6] * 5 + [0.5] * 4)
    np.testing.assert_allclose(r.class_ap[:, 0], expected, atol=1e-12)
    np.testing.assert_allclose(r.map, expected, atol=1e-12)
    assert r.ap_vol == pytest.approx((5 * 5 / 6 + 4 * 0.5) / 9, abs=1e-12)
    np.testing.assert_allclose(r.class_recall[:, 0], [1.0] * 5 + [0.5] * 4)
    assert r.gt_counts.tolist() == [2] and r.pred_counts.tolist() == [3]
    # one-to-one changes nothing here (every GT is hit at most once)
    np.testing.assert_allclose(part_ap([pred], [gt], 2, one_to_one=True).class_ap, r.class_ap, atol=1e-12)


def test_part_ap_duplicates_are_tp_recall_exceeds_one():
    # one GT (4x4 = 16 px, class 1); the prediction splits it into two instances of class 1:
    # F1 (0.9) = 12 px (IoU .75), F2 (0.8) = 4 px (IoU .25). Official (no one-to-one):
    #   t = .1, .2: both TP -> rec 1, 2; prec 1, 1 -> VOC area = 2 (!), recall 2
    #   t = .3 ... .7: TP FP -> AP 1;   t = .8, .9: FP FP -> AP 0
    # one-to-one: F2's best GT is taken -> FP: AP 1 for t <= .7.
    gt = PartInstances(rect_ids(6, 6, [(1, 0, 4, 0, 4)]), [1], [1])
    pred = PartInstances(rect_ids(6, 6, [(1, 0, 3, 0, 4), (2, 3, 4, 0, 4)]), [1, 1], [0.9, 0.8])
    r = part_ap([pred], [gt], 2)
    np.testing.assert_allclose(r.class_ap[:, 0], [2, 2, 1, 1, 1, 1, 1, 0, 0], atol=1e-12)
    np.testing.assert_allclose(r.class_recall[:, 0], [2, 2, 1, 1, 1, 1, 1, 0, 0])
    o = part_ap([pred], [gt], 2, one_to_one=True)
    np.testing.assert_allclose(o.class_ap[:, 0], [1, 1, 1, 1, 1, 1, 1, 0, 0], atol=1e-12)
    np.testing.assert_allclose(o.class_recall[:, 0], [1, 1, 1, 1, 1, 1, 1, 0, 0])
    # duplicate with a higher score than a genuine match: 2 GT (A, B), preds A (.9), A-fragment (.8), B (.7)
    gt2 = PartInstances(rect_ids(10, 10, [(1, 0, 4, 0, 10), (2, 6, 10, 0, 10)]), [1, 1], [1, 1])
    pred2 = PartInstances(rect_ids(10, 10, [(1, 0, 3, 0, 10), (2, 3, 4, 0, 10), (3, 6, 10, 0, 10)]),
                          [1, 1, 1], [0.9, 0.8, 0.7])          # IoUs .75, .25, 1
    r2 = part_ap([pred2], [gt2], 2, thresholds=[0.2])
    o2 = part_ap([pred2], [gt2], 2, thresholds=[0.2], one_to_one=True)
    assert r2.class_ap[0, 0] == pytest.approx(1.5) and r2.class_recall[0, 0] == pytest.approx(1.5)
    assert o2.class_ap[0, 0] == pytest.approx(0.5 + 0.5 * 2 / 3)  # TP FP TP
    assert o2.class_ap[0, 0] < r2.class_ap[0, 0]


def test_part_ap_tie_order_is_the_scripts():
    # equal scores: the script orders by np.argsort(scores)[::-1], i.e. for a short list the LATER
    # prediction first. id 1 = TP, id 2 = FP (elsewhere): FP then TP -> prec 0, .5 -> AP .5.
    assert np.argsort(np.array([0.5, 0.5]))[::-1].tolist() == [1, 0]
    gt = PartInstances(rect_ids(6, 6, [(1, 0, 3, 0, 3)]), [1], [1])
    tp_first = PartInstances(rect_ids(6, 6, [(1, 0, 3, 0, 3), (2, 4, 6, 4, 6)]), [1, 1], [0.5, 0.5])
    fp_first = PartInstances(rect_ids(6, 6, [(2, 0, 3, 0, 3), (1, 4, 6, 4, 6)]), [1, 1], [0.5, 0.5])
    np.testing.assert_allclose(part_ap([tp_first], [gt], 2).class_ap[:, 0], 0.5)
    np.testing.assert_allclose(part_ap([fp_first], [gt], 2).class_ap[:, 0], 1.0)


def test_part_ap_missing_prediction_excludes_gt():
    gt1 = PartInstances(rect_ids(6, 6, [(1, 0, 3, 0, 3)]), [1], [1])
    gt2 = PartInstances(rect_ids(6, 6, [(1, 3, 6, 3, 6)]), [1], [1])
    r = part_ap([gt1, None], [gt1, gt2], 2)
    assert r.gt_counts.tolist() == [1] and r.num_images == 1
    np.testing.assert_array_equal(r.class_ap, 1.0)
    empty = PartInstances(np.zeros((6, 6), np.uint8), [], [])   # a prediction file with no instance
    r = part_ap([gt1, empty], [gt1, gt2], 2)
    assert r.gt_counts.tolist() == [2] and r.num_images == 2
    np.testing.assert_array_equal(r.class_ap, 0.5)              # recall stops at .5
    np.testing.assert_array_equal(r.class_recall, 0.5)


def test_part_ap_prediction_without_gt_of_its_class_is_fp():
    # image 1: GT class 1 and 2; image 2: GT class 1 only. Predictions = GT, plus in image 2 a class-2
    # instance with a higher score: class 2 -> FP (.95) then TP (1.0) -> AP .5; class 1 -> 1.
    g1 = PartInstances(rect_ids(6, 6, [(1, 0, 3, 0, 3), (2, 3, 6, 3, 6)]), [1, 2], [1, 1])
    g2 = PartInstances(rect_ids(6, 6, [(1, 0, 3, 0, 3)]), [1], [1])
    p2 = PartInstances(rect_ids(6, 6, [(1, 0, 3, 0, 3), (2, 4, 6, 0, 2)]), [1, 2], [1.0, 1.0])
    p2.scores[1] = 1.5
    r = part_ap([g1, p2], [g1, g2], 3)
    np.testing.assert_allclose(r.class_ap[:, 0], 1.0)
    np.testing.assert_allclose(r.class_ap[:, 1], 0.5)
    # a class with predictions but no GT at all: NaN, left out of mAP (the script would give NaN)
    r = part_ap([p2], [g2], 3)
    assert np.isnan(r.class_ap[:, 1]).all() and r.gt_counts.tolist() == [1, 0]
    np.testing.assert_allclose(r.map, 1.0)


@pytest.mark.parametrize("one_to_one", [False, True])
def test_part_ap_matches_script_port_on_random_scenes(one_to_one):
    scenes, _, preds = random_dataset(7, n_images=8)
    gts = [cihp_gt(lab, hum) for lab, hum in scenes]
    parts = [p.to_part_instances() for p in preds]
    parts[3] = None                                            # one image without a prediction file
    r = part_ap(parts, gts, 6, one_to_one=one_to_one)
    ref, counts = ref_cihp_ap(parts, gts, 6, T9, one_to_one=one_to_one)
    np.testing.assert_array_equal(r.gt_counts, counts)
    assert (counts > 0).all()
    np.testing.assert_allclose(r.class_ap, ref, rtol=0, atol=1e-12)
    assert 0 < r.ap_vol < 1
    if not one_to_one:
        assert r.ap_vol >= part_ap(parts, gts, 6, one_to_one=True).ap_vol


def test_to_part_instances_feed_part_ap():
    # GT people as predictions -> their part instances reproduce the CIHP GT exactly -> AP 1
    scenes, gt_people, _ = random_dataset(3, n_images=4)
    gts = [cihp_gt(lab, hum) for lab, hum in scenes]
    preds = [PersonInstances.from_person_labels(people, scores=np.linspace(1, 0.5, len(people)))
             .to_part_instances() for people in gt_people]
    for p, g in zip(preds, gts):
        assert p.ids.dtype == np.uint8 and (p.lookup()[1] > 0).all()
        np.testing.assert_array_equal(p.class_map(), g.class_map())
    np.testing.assert_array_equal(part_ap(preds, gts, 6).class_ap, 1.0)


# --------------------------------------------------------------------------- person_ap


def test_person_ap_gt_as_prediction_is_one():
    _, gt_people, _ = random_dataset(2, n_images=5)
    preds = [PersonInstances.from_person_labels(p) for p in gt_people]
    for bg in ("include", "exclude"):
        r = person_ap(preds, gt_people, 6, background=bg)
        np.testing.assert_array_equal(r.ap, 1.0)
        np.testing.assert_array_equal(r.pcp, 1.0)
        np.testing.assert_array_equal(r.recall, 1.0)
        assert r.summary() == {"APp50": 1.0, "APp_vol": 1.0, "PCP50": 1.0}
    assert r.npos == sum(len(p) for p in gt_people)
    assert "PCP50" in r.format_table() and r.to_dict()["APp_vol"] == 1.0


def block_person(h, w, y0, y1, x0, x1, cls=1):
    a = np.zeros((h, w), np.uint8)
    a[y0:y1, x0:x1] = cls
    return a


def test_person_ap_duplicate_is_fp():
    # 2 GT persons A, B; predictions A (.9), copy of A (.8), B (.7): TP FP TP at every t
    # -> rec .5 .5 1, prec 1 .5 2/3 -> AP = .5 + .5 * 2/3; PCP = 1 (both GT matched perfectly)
    a, b = block_person(20, 20, 0, 8, 0, 8), block_person(20, 20, 10, 18, 10, 18, 2)
    pred = PersonInstances.from_person_labels([a, a, b], scores=[0.9, 0.8, 0.7])
    r = person_ap([pred], [[a, b]], 3)
    np.testing.assert_allclose(r.ap, 0.5 + 0.5 * 2 / 3, atol=1e-12)
    np.testing.assert_allclose(r.pcp, 1.0)
    np.testing.assert_allclose(r.recall, 1.0)


def test_person_ap_no_retry_of_second_best_gt():
    # A = rows 0-9, B = rows 10-19 (20x10 image, class 1). P1 (.9) = A; P2 (.8) = A + half of B.
    # P2's scores: vs A mean(bg 250/300, cls 100/150) = .75, vs B mean(bg 200/350, cls 50/150) = .452.
    # At t = .4 its best GT (A) is taken -> FP, though B would pass: TP FP -> AP .5.
    a, b = block_person(20, 10, 0, 10, 0, 10), block_person(20, 10, 10, 20, 0, 10)
    p2 = a.copy()
    p2[10:15] = 1
    pred = PersonInstances.from_person_labels([a, p2], scores=[0.9, 0.8])
    r = person_ap([pred], [[a, b]], 2, thresholds=[0.4])
    assert r.ap[0] == pytest.approx(0.5) and r.recall[0] == pytest.approx(0.5)
    assert r.pcp[0] == pytest.approx(0.5)                      # A: PCP 1; B unmatched: 0


def test_person_ap_background_inflation():
    # GT: a 10x10 person of class 1 in a 100x100 image. Prediction: same pixels, class 1 on 60 of
    # them and class 2 on 40: IoU_bg = 1, IoU_1 = .6, IoU_2 = 0. include: mean(1, .6, 0) = .533 > .5
    # -> TP (PCP50 = 1/1); exclude: mean(.6, 0) = .3 -> FP at .5.
    gt = block_person(100, 100, 10, 20, 10, 20)
    pr = gt.copy()
    pr[16:20, 10:20] = 2
    pred = PersonInstances.from_person_labels([pr])
    inc = person_ap([pred], [[gt]], 20)
    exc = person_ap([pred], [[gt]], 20, background="exclude")
    assert inc.summary()["APp50"] == 1.0 and inc.summary()["PCP50"] == 1.0
    assert exc.summary()["APp50"] == 0.0 and exc.summary()["PCP50"] == 0.0
    np.testing.assert_array_equal(inc.ap, [1, 1, 1, 1, 1, 0, 0, 0, 0])     # .533 > t up to .5
    np.testing.assert_array_equal(exc.ap, [1, 1, 0, 0, 0, 0, 0, 0, 0])     # .3 > t up to .2


def test_person_ap_ties_empty_gt_and_score_thresh():
    a, b = block_person(12, 12, 0, 6, 0, 6), block_person(12, 12, 6, 12, 6, 12)
    junk = block_person(12, 12, 0, 3, 8, 12)
    # equal scores: np.argsort(-s) keeps the array order for a short list -> junk (FP) first -> AP .5
    # (at t = .5 only: junk's background-inflated score vs a is mean(96/144, 0) = .33)
    assert np.argsort(-np.array([0.5, 0.5])).tolist() == [0, 1]
    r = person_ap([PersonInstances.from_person_labels([junk, a], scores=[0.5, 0.5])], [[a]], 2, thresholds=[0.5])
    np.testing.assert_allclose(r.ap, 0.5)
    r = person_ap([PersonInstances.from_person_labels([a, junk], scores=[0.5, 0.5])], [[a]], 2, thresholds=[0.5])
    np.testing.assert_allclose(r.ap, 1.0)
    r = person_ap([PersonInstances.from_person_labels([junk, a], scores=[0.5, 0.5])], [[a]], 2, thresholds=[0.3])
    np.testing.assert_allclose(r.ap, 1.0)                   # .33 > .3: junk takes a (TP), a itself is FP
    # empty GT persons are skipped; an image without predictions still counts its GT
    empty = np.zeros((12, 12), np.uint8)
    r = person_ap([PersonInstances.from_person_labels([a]), None], [[a, empty], [b]], 2)
    assert r.npos == 2
    np.testing.assert_allclose(r.ap, 0.5)
    np.testing.assert_allclose(r.pcp, 0.5)
    # score_thresh skips low-scoring predictions (neither TP nor FP)
    pred = PersonInstances.from_person_labels([a, b], scores=[0.9, 0.0005])
    np.testing.assert_allclose(person_ap([pred], [[a, b]], 2).ap, 1.0)
    r = person_ap([pred], [[a, b]], 2, score_thresh=0.001)
    np.testing.assert_allclose(r.ap, 0.5)
    assert r.num_preds == 1
    pred = PersonInstances.from_person_labels([a, junk], scores=[0.9, 0.0005])
    np.testing.assert_allclose(person_ap([pred], [[a]], 2, score_thresh=0.001).ap, 1.0)
    # predictions in an image without GT are FP
    r = person_ap([PersonInstances.from_person_labels([a], [0.5]), PersonInstances.from_person_labels([b], [0.95])],
                  [[a], []], 2)
    np.testing.assert_allclose(r.ap, 0.5)


@pytest.mark.parametrize("background,overlap", [("include", False), ("exclude", False), ("include", True)])
def test_person_ap_matches_script_port_on_random_scenes(background, overlap):
    _, gt_people, preds = random_dataset(11, n_images=8)
    if overlap:   # MHP-style ground truth: persons may overlap (several layers in _class_iou_matrix)
        gt_people = [people + [np.roll(q, (2, 3), (0, 1)) for q in people[:2]] for people in gt_people]
    r = person_ap(preds, gt_people, 6, background=background)
    ap, pcp = ref_mhp(preds, gt_people, 6, T9, background)
    np.testing.assert_allclose(r.ap, ap, rtol=0, atol=1e-12)
    np.testing.assert_allclose(r.pcp, pcp, rtol=0, atol=1e-12)
    assert 0 < r.ap_vol < 1 and r.num_preds == sum(len(p) for p in preds)


# --------------------------------------------------------------------------- mask_ap


def test_mask_ap_gt_as_prediction_and_hand_cases():
    _, gt_people, _ = random_dataset(4, n_images=4)
    preds = [PersonInstances.from_person_labels(p) for p in gt_people]
    r = mask_ap(preds, [np.stack(p) > 0 for p in gt_people])
    assert r.summary() == {"APh": 1.0, "APh50": 1.0, "APh75": 1.0}
    np.testing.assert_array_equal(r.recall, 1.0)
    a, b = block_person(10, 10, 0, 5, 0, 5), block_person(10, 10, 5, 10, 5, 10)
    # 2 GT, 1 perfect detection: precision 1 up to recall .5 -> 51 of the 101 recall points
    r = mask_ap([PersonInstances.from_person_labels([a])], [np.stack([a, b]) > 0])
    assert r.ap == pytest.approx(51 / 101, abs=1e-12)
    # a duplicate is an FP (one-to-one): a (.9), a (.8), b (.7) -> precision envelope 1 to recall .5,
    # then 2/3 -> (51 + 50 * 2/3) / 101
    r = mask_ap([PersonInstances.from_person_labels([a, a, b], [0.9, 0.8, 0.7])], [np.stack([a, b]) > 0])
    assert r.ap == pytest.approx((51 + 50 * 2 / 3) / 101, abs=1e-12)
    # IoU .6 detection: a hit at t <= .6 (COCO uses >=), a miss above -> AP = 3/10 of perfect
    c = a.copy()
    c[3:5] = 0                                            # 15 of a's 25 pixels: IoU .6
    r = mask_ap([PersonInstances.from_person_labels([c])], [a[None] > 0])
    # (a single TP has COCO precision 1 / (1 + eps), hence approx)
    np.testing.assert_allclose(r.ap_per_threshold, [1, 1, 1, 0, 0, 0, 0, 0, 0, 0], atol=1e-12)
    assert r.summary()["APh50"] == pytest.approx(1.0) and r.summary()["APh75"] == 0.0
    assert "APh" in r.format_table()


def test_mask_ap_matches_pycocotools():
    mask_utils = pytest.importorskip("pycocotools.mask")
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    _, gt_people, preds = random_dataset(5, n_images=8)
    preds[2] = PersonInstances(image_size=(24, 32))          # an image without detections
    gts = [np.stack(p) > 0 if p else np.zeros((0, 24, 32), bool) for p in gt_people]
    images, anns, dets = [], [], []

    def rle(m):
        return mask_utils.encode(np.asfortranarray(m.astype(np.uint8)))

    for n, (pred, g) in enumerate(zip(preds, gts), 1):
        images.append({"id": n, "height": 24, "width": 32})
        for m in g:
            if m.any():
                anns.append({"id": len(anns) + 1, "image_id": n, "category_id": 1, "iscrowd": 0,
                             "segmentation": rle(m), "area": float(m.sum()),
                             "bbox": list(mask_utils.toBbox(rle(m)))})
        for s, m in zip(pred.scores, pred.human_masks()):
            dets.append({"image_id": n, "category_id": 1, "segmentation": rle(m), "score": float(s)})
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = {"images": images, "annotations": anns, "categories": [{"id": 1, "name": "person"}]}
        coco.createIndex()
        ev = COCOeval(coco, coco.loadRes(dets), "segm")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    r = mask_ap(preds, gts)
    assert r.ap == pytest.approx(ev.stats[0], abs=1e-12)
    assert r.summary()["APh50"] == pytest.approx(ev.stats[1], abs=1e-12)
    assert r.summary()["APh75"] == pytest.approx(ev.stats[2], abs=1e-12)
    np.testing.assert_allclose(r.precision, ev.eval["precision"][:, :, 0, 0, 2], atol=1e-12)
    assert 0 < r.ap < 1


# --------------------------------------------------------------------------- real CIHP samples


def test_cihp_samples_through_the_reader(cihp_samples_root, tmp_path):
    """Real CIHP labels: people = connected foreground components (the samples ship no Human_ids), written
    in the CIHP layout with Instance_ids = (human_id - 1) * 20 + class_id, read back by the CIHP reader."""
    from hparse.data.readers import build_reader

    root = tmp_path / "cihp"
    for sub in ("Images", "Category_ids", "Human_ids", "Instance_ids"):
        (root / sub).mkdir(parents=True)
    for img in sorted((cihp_samples_root / "Images").glob("*.jpg")):
        shutil.copy(img, root / "Images" / img.name)
        shutil.copy(cihp_samples_root / "Category_ids" / f"{img.stem}.png", root / "Category_ids")
        label = np.asarray(Image.open(cihp_samples_root / "Category_ids" / f"{img.stem}.png"))
        comp, n = ndimage.label(label > 0, structure=np.ones((3, 3)))
        sizes = np.bincount(comp.ravel())[1:]
        rank = np.zeros(n + 1, np.uint8)                   # 11 largest components -> people 1..11, rest -> 12
        rank[1 + np.argsort(-sizes, kind="stable")] = np.minimum(np.arange(1, n + 1), 12)
        human = rank[comp]
        inst = np.where(label > 0, (human.astype(np.int64) - 1) * 20 + label, 0).astype(np.uint8)
        Image.fromarray(human).save(root / "Human_ids" / f"{img.stem}.png")
        Image.fromarray(inst).save(root / "Instance_ids" / f"{img.stem}.png")
        u = np.unique(inst[inst > 0])
        (root / "Instance_ids" / f"{img.stem}.txt").write_text(
            "".join(f"{i} {(i - 1) % 20 + 1} {(i - 1) // 20 + 1}\n" for i in u))
    reader = build_reader("cihp", root, "val")
    assert len(reader) == 5
    gts, people, preds, persons = [], [], [], []
    for sample in reader:
        rows = sample["instances"]
        np.testing.assert_array_equal(rows[:, 0], (rows[:, 2] - 1) * 20 + rows[:, 1])   # the CIHP relation
        gt = PartInstances.from_cihp(sample["instance_ids"], rows)
        np.testing.assert_array_equal(gt.class_map(), sample["label"])
        gts.append(gt)
        people.append(sample["person_labels"])
        inst = PersonInstances.from_person_labels(sample["person_labels"])
        persons.append(inst)
        parts = inst.to_part_instances()
        assert parts.ids.dtype == np.uint8 and (parts.lookup()[1] > 0).all()
        preds.append(parts)
        # the same partition as the GT instances, with contiguous ids
        np.testing.assert_array_equal(parts.class_map(), sample["label"])
        np.testing.assert_array_equal(np.unique(parts.ids[sample["label"] > 0], return_counts=True)[1].size,
                                      len(np.unique(sample["instance_ids"][sample["label"] > 0])))
    r = part_ap(preds, gts, 20)
    has_gt = r.gt_counts > 0
    assert has_gt.sum() >= 5
    np.testing.assert_array_equal(r.class_ap[:, has_gt], 1.0)
    assert r.summary()["APr_vol"] == 1.0
    np.testing.assert_array_equal(part_ap([g.relabel() for g in gts], gts, 20).class_ap[:, has_gt], 1.0)
    p = person_ap(persons, people, 20)
    assert p.summary() == {"APp50": 1.0, "APp_vol": 1.0, "PCP50": 1.0}
    np.testing.assert_array_equal(p.pcp, 1.0)
    m = mask_ap(persons, [np.stack(x) > 0 for x in people])
    assert m.summary() == {"APh": 1.0, "APh50": 1.0, "APh75": 1.0}
