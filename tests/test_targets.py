"""Target generators: CE2P edges, CorrPM joint heatmaps, part centres, hierarchy labels."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hparse.data.targets import (
    edge_map,
    gaussian_heatmaps,
    hierarchy_labels,
    joint_heatmaps,
    part_centre_heatmaps,
    part_centres,
)
from hparse.data.transforms import build_transforms
from hparse.labels import get_meta


def ce2p_generate_edge(label, edge_width=3):
    """CE2P's dataset/target_generation.py ``generate_edge``, verbatim up to the dtype."""
    import cv2
    h, w = label.shape
    edge = np.zeros(label.shape)
    edge_right = edge[1:h, :]
    edge_right[(label[1:h, :] != label[:h - 1, :]) & (label[1:h, :] != 255) & (label[:h - 1, :] != 255)] = 1
    edge_up = edge[:, :w - 1]
    edge_up[(label[:, :w - 1] != label[:, 1:w]) & (label[:, :w - 1] != 255) & (label[:, 1:w] != 255)] = 1
    edge_upright = edge[:h - 1, :w - 1]
    edge_upright[(label[:h - 1, :w - 1] != label[1:h, 1:w]) & (label[:h - 1, :w - 1] != 255)
                 & (label[1:h, 1:w] != 255)] = 1
    edge_bottomright = edge[:h - 1, 1:w]
    edge_bottomright[(label[:h - 1, 1:w] != label[1:h, :w - 1]) & (label[:h - 1, 1:w] != 255)
                     & (label[1:h, :w - 1] != 255)] = 1
    kernel = cv2.getStructuringElement(cv2.MORPH_RECT, (edge_width, edge_width))
    return cv2.dilate(edge, kernel)


# --- edges -------------------------------------------------------------------------------

def test_edge_map_hand_drawn_square():
    lab = np.zeros((7, 7), np.uint8)
    lab[2:5, 2:5] = 1  # 3x3 square of class 1
    raw = edge_map(lab, width=1)
    expected = np.array([
        [0, 0, 0, 0, 0, 0, 0],
        [0, 1, 1, 1, 1, 1, 0],   # "\" pairs mark their upper-left, "/" pairs their upper-right pixel
        [0, 1, 1, 1, 1, 1, 0],
        [0, 1, 1, 0, 1, 1, 0],   # horizontal pairs mark the left pixel (cols 1 and 4)
        [0, 1, 1, 1, 1, 0, 0],
        [0, 0, 1, 1, 1, 0, 0],   # vertical pairs mark the lower pixel
        [0, 0, 0, 0, 0, 0, 0],
    ], np.uint8)
    np.testing.assert_array_equal(raw, expected)
    assert raw.dtype == np.uint8
    both = edge_map(lab, width=1, sides="both")
    ring = np.zeros((7, 7), np.uint8)
    ring[1:6, 1:6] = 1
    ring[3, 3] = 0  # the square's centre touches no other class
    np.testing.assert_array_equal(both, ring)
    np.testing.assert_array_equal(edge_map(lab), ce2p_generate_edge(lab).astype(np.uint8))


def test_edge_map_matches_ce2p_code_on_random_labels():
    rng = np.random.default_rng(0)
    for width in (1, 3, 5):
        lab = rng.integers(0, 4, (30, 41)).astype(np.uint8)
        lab[rng.random(lab.shape) < 0.1] = 255
        np.testing.assert_array_equal(edge_map(lab, width=width), ce2p_generate_edge(lab, width))


def test_edge_map_skips_ignore_boundaries():
    lab = np.zeros((6, 9), np.uint8)
    lab[:, 3:6] = 255
    assert edge_map(lab).sum() == 0  # 0 | 255 | 0: no edge
    lab[:, 6:] = 1
    assert edge_map(lab, width=1).sum() == 0  # 0 | 255 | 1: the classes never touch
    lab[:, 3:6] = 0
    assert edge_map(lab, width=1)[:, 5].all() and edge_map(lab, width=1).sum() == 6 + 5


# --- joint heatmaps ------------------------------------------------------------------------

def test_joint_heatmaps_peak_window_and_missing():
    joints = np.array([[40, 20, 1], [np.nan, np.nan, 0], [10, 10, 0], [5000, 10, 1], [-3, 61, 1]], np.float32)
    hm, w = joint_heatmaps(joints, (64, 96), stride=4, sigma=2, window=3)
    assert hm.shape == (5, 16, 24) and hm.dtype == np.float32
    assert w.tolist() == [1, 0, 0, 0, 1]
    assert hm[0].max() == 1.0 and np.unravel_index(hm[0].argmax(), hm[0].shape) == (5, 10)
    np.testing.assert_allclose(hm[0, 5, 16], np.exp(-36 / 8), rtol=1e-6)  # dx = 6 = 3 sigma: inside
    assert hm[0, 5, 17] == 0 and hm[0, 5, 3] == 0  # beyond the window
    assert not hm[1:4].any()
    assert np.unravel_index(hm[4].argmax(), hm[4].shape) == (15, 0)  # y=61 -> cell 15; x=-3 -> -1 clipped
    hm7, _ = joint_heatmaps(joints[:1], (473, 473))  # CorrPM defaults: stride 4, sigma 7
    assert hm7.shape == (1, 119, 119) and hm7[0, 5, 10] == 1.0


def test_gaussian_heatmaps_window_misses_map():
    hm, w = gaussian_heatmaps(np.array([[-100.0, 8.0]]), [True], (32, 32), stride=4, sigma=1, window=3)
    assert w[0] == 0 and not hm.any()


# --- part centres -------------------------------------------------------------------------

def test_part_centre_heatmaps_rectangle_and_absent():
    lab = np.zeros((40, 60), np.uint8)
    lab[8:17, 20:41] = 3  # 9 x 21 rectangle: centroid (30, 12)
    lab[0, 0] = 255
    np.testing.assert_allclose(part_centres(lab, 5)[2], [30, 12])
    hm, w = part_centre_heatmaps(lab, 5, stride=1, sigma=2)
    assert hm.shape == (4, 40, 60) and w.tolist() == [0, 0, 1, 0]
    assert hm[2].max() == 1.0 and np.unravel_index(hm[2].argmax(), hm[2].shape) == (12, 30)
    assert not hm[[0, 1, 3]].any()
    hm4, _ = part_centre_heatmaps(lab, 5, stride=4, sigma=2)
    assert hm4.shape == (4, 10, 15) and np.unravel_index(hm4[2].argmax(), hm4[2].shape) == (3, 8)


def test_part_centre_distance_lies_inside_mask():
    lab = np.zeros((50, 50), np.uint8)
    lab[5:45, 5:12] = 1
    lab[38:45, 5:45] = 1  # an L: the centroid falls outside it
    cx, cy = part_centres(lab, 2, "centroid")[0]
    assert lab[round(cy), round(cx)] == 0
    x, y = part_centres(lab, 2, "distance")[0]
    assert lab[int(y), int(x)] == 1
    _, w = part_centre_heatmaps(lab, 2, method="distance")
    assert w.tolist() == [1]
    with pytest.raises(ValueError):
        part_centres(lab, 2, "median")


# --- hierarchy ----------------------------------------------------------------------------------

def test_hierarchy_labels_lip():
    lab = np.array([[0, 1, 5, 9, 14, 19, 255], [10, 12, 13, 8, 6, 2, 0]], np.uint8)
    h = hierarchy_labels(lab, get_meta("lip"))
    np.testing.assert_array_equal(h[1], lab)
    np.testing.assert_array_equal(h[2], [[0, 1, 1, 2, 1, 2, 255], [2, 2, 1, 2, 1, 1, 0]])
    np.testing.assert_array_equal(h[3], [[0, 1, 1, 1, 1, 1, 255], [1, 1, 1, 1, 1, 1, 0]])
    assert hierarchy_labels(lab[:1, 3:4] * 0 + 10, "cihp")[2].item() == 1  # CIHP 10 = torso-skin: upper


# --- as transform steps ---------------------------------------------------------------------------

def test_target_steps_in_a_pipeline():
    rng = np.random.default_rng(0)
    lab = np.kron(rng.integers(0, 20, (6, 8)), np.ones((16, 16), np.int64)).astype(np.uint8)
    joints = np.c_[rng.uniform(0, 127, 16), rng.uniform(0, 95, 16), np.ones(16)].astype(np.float32)
    s = {"id": "a", "image": np.zeros((96, 128, 3), np.uint8), "label": lab, "joints": joints, "meta": {}}
    pipe = build_transforms([
        {"type": "RandomAffine", "size": [64, 64]}, {"type": "HFlip", "p": 0.5},
        {"type": "EdgeTarget"}, {"type": "JointHeatmapTarget", "sigma": 2},
        {"type": "PartCentreTarget", "sigma": 2}, {"type": "HierarchyTarget"}, {"type": "ToTensor"},
    ], "lip")
    out = pipe(s, rng)
    # ToTensor: CHW float32, values kept in 0..255 (the model normalises)
    assert out["image"].shape == (3, 64, 64) and out["image"].dtype == torch.float32 and not out["image"].any()
    assert out["edge"].shape == (64, 64) and out["edge"].dtype == torch.int64
    assert out["joint_heatmaps"].shape == (16, 16, 16) and out["joint_weights"].shape == (16,)
    assert out["part_heatmaps"].shape == (19, 16, 16) and out["part_heatmaps"].dtype == torch.float32
    assert out["label_l2"].dtype == torch.int64 and set(out["label_l3"].unique().tolist()) <= {0, 1, 255}
    lab_np = out["label"].numpy()
    np.testing.assert_array_equal(out["edge"].numpy(), edge_map(lab_np.astype(np.uint8)))
