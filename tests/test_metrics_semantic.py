"""Semantic metrics: hand-computed confusion matrices, conventions, ATR F1, IPR, low resolution."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

from hparse.labels import get_meta
from hparse.metrics import (
    ConfusionMatrix,
    IPRMeter,
    isolated_pixel_rate,
    low_resolution,
    semantic_scores,
)

# rows = GT. tp = [3, 2, 1, 0], pos = [4, 3, 2, 0], res = [4, 4, 1, 0]; class 3 absent from both.
M4 = np.array([[3, 1, 0, 0],
               [1, 2, 0, 0],
               [0, 1, 1, 0],
               [0, 0, 0, 0]])
# tp = [2, 2, 0, 0], pos = [3, 3, 0, 0], res = [2, 3, 1, 0]; class 2 predicted only, class 3 absent.
M_PRED_ONLY = np.array([[2, 1, 0, 0],
                        [0, 2, 1, 0],
                        [0, 0, 0, 0],
                        [0, 0, 0, 0]])


def pixels_from_matrix(m):
    """(pred, gt) 1-D label arrays realising confusion matrix m."""
    g, p = np.nonzero(m)
    reps = m[g, p]
    return np.repeat(p, reps), np.repeat(g, reps)


def test_perfect_three_classes():
    gt = np.array([[0, 0, 1], [1, 2, 2]], dtype=np.uint8)
    cm = ConfusionMatrix(3).update(gt.copy(), gt)
    np.testing.assert_array_equal(cm.matrix, np.diag([2, 2, 2]))
    for conv in ("ce2p", "nan", "d2"):
        s = cm.scores(conv)
        assert (s.miou, s.mean_acc, s.pixel_acc, s.fg_acc, s.f1) == (1.0, 1.0, 1.0, 1.0, 1.0)
        np.testing.assert_array_equal(s.class_iou, [1, 1, 1])


def test_update_builds_matrix_rows_gt():
    pred, gt = pixels_from_matrix(M4)
    cm = ConfusionMatrix(4).update(pred, gt)
    np.testing.assert_array_equal(cm.matrix, M4)
    assert cm.matrix.dtype == np.int64
    # transposed input gives the transposed matrix: rows really are GT
    np.testing.assert_array_equal(ConfusionMatrix(4).update(gt, pred).matrix, M4.T)


@pytest.mark.parametrize("conv, miou, macc", [
    ("ce2p", (3 / 5 + 2 / 5 + 1 / 2 + 0) / 4, (3 / 4 + 2 / 3 + 1 / 2 + 0) / 4),  # 3/8, 23/48
    ("nan", (3 / 5 + 2 / 5 + 1 / 2) / 3, (3 / 4 + 2 / 3 + 1 / 2) / 3),          # 1/2, 23/36
    ("d2", (3 / 5 + 2 / 5 + 1 / 2) / 3, (3 / 4 + 2 / 3 + 1 / 2) / 3),
])
def test_class_absent_from_both(conv, miou, macc):
    s = semantic_scores(M4, conv)
    assert s.miou == pytest.approx(miou)
    assert s.mean_acc == pytest.approx(macc)
    assert s.pixel_acc == pytest.approx(6 / 9)
    np.testing.assert_allclose(s.class_iou[:3], [3 / 5, 2 / 5, 1 / 2])
    assert (s.class_iou[3] == 0) if conv == "ce2p" else math.isnan(s.class_iou[3])
    assert {"ce2p": 3 / 8, "nan": 1 / 2, "d2": 1 / 2}[conv] == pytest.approx(s.miou)
    assert {"ce2p": 23 / 48, "nan": 23 / 36, "d2": 23 / 36}[conv] == pytest.approx(s.mean_acc)


@pytest.mark.parametrize("conv, miou, macc", [
    ("ce2p", (2 / 3 + 1 / 2 + 0 + 0) / 4, (2 / 3 + 2 / 3 + 0 + 0) / 4),  # 7/24, 1/3
    ("nan", (2 / 3 + 1 / 2 + 0) / 3, (2 / 3 + 2 / 3) / 2),              # 7/18, 2/3
    ("d2", (2 / 3 + 1 / 2) / 2, (2 / 3 + 2 / 3) / 2),                    # 7/12, 2/3
])
def test_class_predicted_but_not_in_gt(conv, miou, macc):
    s = semantic_scores(M_PRED_ONLY, conv)
    assert s.miou == pytest.approx(miou)
    assert s.mean_acc == pytest.approx(macc)
    assert s.pixel_acc == pytest.approx(4 / 6)
    # the predicted-only class: IoU 0 for ce2p and nan, skipped (NaN) for d2
    assert (s.class_iou[2] == 0) if conv != "d2" else math.isnan(s.class_iou[2])


def test_conventions_all_differ():
    mious = {c: semantic_scores(M_PRED_ONLY, c).miou for c in ("ce2p", "nan", "d2")}
    assert mious == pytest.approx({"ce2p": 7 / 24, "nan": 7 / 18, "d2": 7 / 12})
    assert len({round(v, 9) for v in mious.values()}) == 3


def test_atr_f1_from_averaged_p_and_r():
    m = M4[:3, :3]  # tp = [3, 2, 1], pos = [4, 3, 2], res = [4, 4, 1]
    s = semantic_scores(m)
    # HHP naming (atr_quirk): "precision" = mean tp/pos, "recall" = mean tp/res
    assert s.mean_precision == pytest.approx((3 / 4 + 2 / 3 + 1 / 2) / 3)  # 23/36
    assert s.mean_recall == pytest.approx((3 / 4 + 2 / 4 + 1 / 1) / 3)     # 3/4
    assert s.f1 == pytest.approx(69 / 100)  # 2 * 23/36 * 3/4 / (23/36 + 3/4)
    np.testing.assert_allclose(s.class_f1, [6 / 8, 4 / 7, 2 / 3])
    assert s.class_f1.mean() == pytest.approx(167 / 252)
    assert abs(s.f1 - s.class_f1.mean()) > 0.02
    assert s.fg_acc == pytest.approx(3 / 5)
    assert s.pixel_acc == pytest.approx(6 / 9)
    # correctly named variant: swapped, same F1
    t = semantic_scores(m, atr_quirk=False)
    assert (t.mean_precision, t.mean_recall) == pytest.approx((3 / 4, 23 / 36))
    assert t.f1 == pytest.approx(69 / 100)
    np.testing.assert_allclose(t.class_precision, [3 / 4, 1 / 2, 1])
    np.testing.assert_allclose(t.class_recall, [3 / 4, 2 / 3, 1 / 2])


def test_atr_quirk_nan_when_class_never_predicted():
    s = semantic_scores(M4)  # class 3 never predicted
    assert math.isnan(s.mean_recall) and math.isnan(s.f1)
    assert s.mean_precision == pytest.approx(23 / 48)
    t = semantic_scores(M4, atr_quirk=False)
    assert t.mean_precision == pytest.approx((3 / 4 + 1 / 2 + 1 + 0) / 4)  # 9/16
    assert t.mean_recall == pytest.approx(23 / 48)
    assert t.f1 == pytest.approx(2 * (9 / 16) * (23 / 48) / (9 / 16 + 23 / 48))


def test_ignore_and_out_of_range_excluded():
    gt = np.array([0, 1, 2, 255, 255, 1, 0, 7], dtype=np.uint8)
    pred = np.array([0, 1, 2, 0, 9, 5, 200, 1], dtype=np.uint8)
    cm = ConfusionMatrix(3).update(pred, gt)
    np.testing.assert_array_equal(cm.matrix, np.diag([1, 1, 1]))
    assert cm.invalid_pred == 2  # pred 5 and 200 on valid GT; pred 9 on ignore does not count
    assert cm.invalid_gt == 1    # gt 7
    neg = ConfusionMatrix(3).update(np.array([-1, 0], dtype=np.int8), np.array([0, 0], dtype=np.int8))
    np.testing.assert_array_equal(neg.matrix, [[1, 0, 0], [0, 0, 0], [0, 0, 0]])
    assert neg.invalid_pred == 1


def test_update_with_torch_tensors_and_merge():
    pred, gt = pixels_from_matrix(M4)
    a = ConfusionMatrix(4).update(torch.from_numpy(pred).to(torch.uint8), torch.from_numpy(gt))
    np.testing.assert_array_equal(a.matrix, M4)
    b = ConfusionMatrix(4).update(pred.astype(np.int32), gt.astype(np.int16))
    a += b
    np.testing.assert_array_equal(a.matrix, 2 * M4)
    c = ConfusionMatrix.from_dict(json.loads(json.dumps(a.to_dict())))
    np.testing.assert_array_equal(c.matrix, 2 * M4)
    a.reset()
    assert a.matrix.sum() == 0
    with pytest.raises(ValueError):
        a.merge(ConfusionMatrix(3))


def test_shape_mismatch_and_dtype():
    cm = ConfusionMatrix(3)
    with pytest.raises(ValueError, match=r"\(2, 3\).*\(3, 2\)"):
        cm.update(np.zeros((2, 3), np.uint8), np.zeros((3, 2), np.uint8))
    with pytest.raises(TypeError):
        cm.update(np.zeros(3, np.float32), np.zeros(3, np.uint8))
    with pytest.raises(ValueError):
        semantic_scores(M4, "bogus")


def test_to_dict_and_table():
    s = semantic_scores(M4, "nan", class_names=["bg", "hat", "hair", "glove"])
    d = json.loads(json.dumps(s.to_dict(), allow_nan=False))
    assert d["miou"] == pytest.approx(0.5)
    assert d["per_class"]["glove"]["iou"] is None
    assert d["per_class"]["hat"]["gt_pixels"] == 3
    table = s.format_table()
    assert "glove" in table and "mIoU" in table and "50.00" in table and "F1" in table
    lip = semantic_scores(np.eye(20, dtype=np.int64), class_names=get_meta("lip"))
    assert lip.class_names[0] == "background" and lip.class_names[19] == "right-shoe"
    assert "right-shoe" in lip.format_table()
    with pytest.raises(ValueError):
        semantic_scores(M4, class_names=["a"])


# --------------------------------------------------------------------------- IPR


def test_ipr_four_colour_tiling_is_all_isolated():
    i, j = np.mgrid[:6, :8]
    tiling = (i % 2) * 2 + j % 2  # no 8-neighbour shares a label
    assert isolated_pixel_rate(tiling) == (48, 48)


def test_ipr_checkerboard_depends_on_connectivity():
    i, j = np.mgrid[:6, :6]
    board = (i + j) % 2  # diagonal neighbours share a label
    assert isolated_pixel_rate(board) == (0, 36)
    assert isolated_pixel_rate(board, connectivity=4) == (36, 36)


def test_ipr_uniform_and_stray_pixel():
    assert isolated_pixel_rate(np.zeros((5, 7), np.uint8)) == (0, 35)
    block = np.ones((10, 10), np.uint8)
    block[4, 4] = 3
    assert isolated_pixel_rate(block) == (1, 100)
    # background stray pixel inside foreground: excluded from both terms in foreground_only
    block[4, 4] = 0
    assert isolated_pixel_rate(block, foreground_only=True) == (0, 99)


def test_ipr_k_ignore_and_batch():
    a = np.zeros((8, 8), np.uint8)
    a[1, 1:4] = 2  # a 3-pixel component
    a[6, 6] = 1    # a 1-pixel component
    assert isolated_pixel_rate(a, k=1) == (1, 64)
    assert isolated_pixel_rate(a, k=2) == (1, 64)
    assert isolated_pixel_rate(a, k=3) == (4, 64)
    a[0, 0] = 255
    assert isolated_pixel_rate(a, ignore=255) == (1, 63)
    # two images stacked: components must not connect across images
    b = np.zeros((2, 3, 3), np.uint8)
    b[0, 2, 2] = b[1, 2, 2] = 1  # would touch if the batch axis were spatial
    assert isolated_pixel_rate(torch.from_numpy(b)) == (2, 18)


def test_ipr_meter_ratio_of_sums():
    meter = IPRMeter()
    one = np.ones((10, 10), np.uint8)
    one[0, 0] = 2
    meter.update(one)                          # 1 / 100
    meter.update(np.zeros((2, 5), np.uint8))   # 0 / 10
    assert (meter.count, meter.total) == (1, 110)
    assert meter.value == pytest.approx(1 / 110)  # not the mean of per-image rates (1/200)


# --------------------------------------------------------------------------- low resolution


def test_low_resolution_centre_pixel_and_pil():
    rng = np.random.default_rng(0)
    lab = rng.integers(0, 20, (256, 256), dtype=np.uint8)
    low = low_resolution(lab, 16)
    assert low.shape == (16, 16)
    np.testing.assert_array_equal(low, lab[8::16, 8::16])
    for shape in [(256, 256), (100, 70), (37, 61)]:
        lab = rng.integers(0, 20, shape, dtype=np.uint8)
        h, w = shape[0] // 16, shape[1] // 16
        pil = np.asarray(Image.fromarray(lab).resize((w, h), Image.NEAREST))
        np.testing.assert_array_equal(low_resolution(lab, 16), pil)
    t = low_resolution(torch.from_numpy(lab)[None], 16)
    assert isinstance(t, torch.Tensor) and t.shape == (1, 2, 3)
    np.testing.assert_array_equal(t[0].numpy(), low_resolution(lab, 16))
    with pytest.raises(ValueError):
        low_resolution(np.zeros((8, 8), np.uint8), 16)


def test_person_iou_is_any_part_against_any_part_with_ignored_pixels_left_out():
    from hparse.metrics.semantic import person_iou

    truth = np.array([[0, 3, 3, 255], [0, 0, 5, 255]])
    pred = np.array([[1, 2, 0, 7], [0, 0, 9, 7]])     # other part ids count as person too
    assert person_iou(pred, truth) == 2 / 4          # ours {(0,0),(0,1),(1,2)}, theirs {(0,1),(0,2),(1,2)}
    assert person_iou(np.zeros((2, 4), np.uint8), np.zeros((2, 4), np.uint8)) == 0.0
