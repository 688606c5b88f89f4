"""PersonInstances / PartInstances: pasting, painting order, part-instance derivation, CIHP ground truth."""

from __future__ import annotations

import numpy as np
import pytest

from hparse.structures import PartInstances, PersonInstances


def two_people():
    """6x8 image; person 0 (score .4) covers columns 0-4, person 1 (score .9) columns 3-7: they overlap
    on columns 3-4. Person 0: class 1 on rows 0-2, class 2 on rows 3-5; person 1: class 2 / class 5."""
    p = np.zeros((2, 6, 8), np.uint8)
    p[0, :3, :5], p[0, 3:, :5] = 1, 2
    p[1, :3, 3:], p[1, 3:, 3:] = 2, 5
    return PersonInstances(image_size=(6, 8), boxes=np.array([[0, 0, 5, 6], [3, 0, 8, 6]], np.float32),
                           scores=np.array([0.4, 0.9], np.float32), parsings=p)


# --------------------------------------------------------------------------- full_parsings / masks


def test_full_parsings_pastes_roi_nearest():
    roi = np.array([[[1, 2], [3, 4]]], np.uint8)
    inst = PersonInstances(image_size=(6, 6), boxes=np.array([[1, 1, 5, 5]], np.float32),
                           scores=np.ones(1, np.float32), roi_parsings=roi)
    full = inst.full_parsings()
    expected = np.zeros((6, 6), np.uint8)
    expected[1:3, 1:3], expected[1:3, 3:5], expected[3:5, 1:3], expected[3:5, 3:5] = 1, 2, 3, 4
    assert full.shape == (1, 6, 6) and full.dtype == np.uint8
    np.testing.assert_array_equal(full[0], expected)
    np.testing.assert_array_equal(inst.human_masks()[0], expected > 0)


def test_full_parsings_box_outside_image_and_fractional():
    # box x in [-2, 2): pixel columns 0 and 1 (centres .5, 1.5) take RoI cells floor((x + .5 + 2) / 4 * 4) = 2, 3
    roi = np.array([[[1, 2, 3, 4]]], np.uint8)
    inst = PersonInstances(image_size=(3, 5), boxes=np.array([[-2.0, 0.6, 2.0, 2.4]], np.float32),
                           scores=np.ones(1), roi_parsings=roi)
    full = inst.full_parsings()[0]
    # rows: centres .5 (< .6, outside), 1.5 (inside), 2.5 (>= 2.4, outside)
    expected = np.zeros((3, 5), np.uint8)
    expected[1, :2] = [3, 4]
    np.testing.assert_array_equal(full, expected)


def test_full_parsings_prefers_parsings_and_checks():
    inst = two_people()
    assert inst.full_parsings() is inst.parsings or np.array_equal(inst.full_parsings(), inst.parsings)
    assert PersonInstances(image_size=(4, 5)).full_parsings().shape == (0, 4, 5)
    with pytest.raises(ValueError, match="neither"):
        PersonInstances(image_size=(4, 5), boxes=np.zeros((1, 4)), scores=np.ones(1)).full_parsings()
    with pytest.raises(ValueError, match="shape"):
        PersonInstances(image_size=(4, 5), scores=np.ones(1), parsings=np.zeros((1, 4, 4), np.uint8)).full_parsings()


# --------------------------------------------------------------------------- to_semantic


def test_to_semantic_highest_score_wins():
    inst = two_people()
    sem = inst.to_semantic()
    assert sem.dtype == np.uint8 and sem.shape == (6, 8)
    np.testing.assert_array_equal(sem[:3, :3], 1)      # only person 0
    np.testing.assert_array_equal(sem[:3, 3:5], 2)     # overlap: person 1 (0.9) wins over person 0 (1)
    np.testing.assert_array_equal(sem[3:, 3:5], 5)
    # swap the scores: person 0 now wins the overlap, whatever the order in the arrays
    inst.scores = np.array([0.95, 0.9])
    sem = inst.to_semantic()
    np.testing.assert_array_equal(sem[:3, 3:5], 1)
    np.testing.assert_array_equal(sem[3:, 3:5], 2)
    np.testing.assert_array_equal(sem[3:, 5:], 5)


def test_to_semantic_threshold_and_ties():
    inst = two_people()
    sem = inst.to_semantic(score_thresh=0.5)               # person 0 (0.4) left out
    np.testing.assert_array_equal(sem[:, :3], 0)
    np.testing.assert_array_equal(sem[:3, 3:], 2)
    assert (inst.to_semantic(score_thresh=0.9) == sem).all()  # >= keeps a score equal to the threshold
    assert not inst.to_semantic(score_thresh=0.91).any()
    inst.scores = np.array([0.5, 0.5])                     # tie: the higher index paints last
    np.testing.assert_array_equal(inst.to_semantic()[:3, 3:5], 2)
    np.testing.assert_array_equal(inst.to_semantic()[3:, 3:5], 5)


# --------------------------------------------------------------------------- to_part_instances


def test_to_part_instances_ownership_ids_and_scores():
    inst = two_people()
    inst.part_scores = np.tile(np.linspace(0.1, 0.6, 6), (2, 1))   # class c -> 0.1 * (c + 1)
    parts = inst.to_part_instances()
    # person 1 (0.9) first: classes 2, 5 -> ids 1, 2; then person 0: classes 1, 2 -> ids 3, 4
    np.testing.assert_array_equal(parts.instance_ids, [1, 2, 3, 4])
    np.testing.assert_array_equal(parts.classes, [2, 5, 1, 2])
    np.testing.assert_allclose(parts.scores, [0.9, 0.9, 0.4, 0.4], rtol=1e-6)
    assert parts.ids.dtype == np.uint8
    expected = np.zeros((6, 8), np.uint8)
    expected[:3, 3:], expected[3:, 3:] = 1, 2
    expected[:3, :3], expected[3:, :3] = 3, 4
    np.testing.assert_array_equal(parts.ids, expected)
    np.testing.assert_array_equal(parts.class_map(), inst.to_semantic())
    part = inst.to_part_instances(score="part")
    np.testing.assert_allclose(part.scores, [0.9 * 0.3, 0.9 * 0.6, 0.4 * 0.2, 0.4 * 0.3], rtol=1e-6)
    with pytest.raises(ValueError, match="part_scores"):
        two_people().to_part_instances(score="part")


def test_to_part_instances_drops_covered_parts_and_people():
    inst = two_people()
    inst.parsings[0, :3, :5] = 0
    inst.parsings[0, :3, 3:5] = 7      # person 0's class 7 lies entirely under person 1
    inst.parsings = np.concatenate([inst.parsings, inst.parsings[1:2]])   # person 2: fully covered by person 1
    inst.scores = np.array([0.4, 0.9, 0.3])
    inst.boxes = np.zeros((3, 4), np.float32)
    parts = inst.to_part_instances()
    assert 7 not in parts.classes
    _, areas = parts.lookup()
    assert (areas > 0).all()
    np.testing.assert_array_equal(np.unique(parts.ids)[1:], np.arange(1, len(parts) + 1))
    np.testing.assert_array_equal(parts.classes, [2, 5, 2])


def test_to_part_instances_overflow():
    h, w, n = 4, 4 * 130, 130
    p = np.zeros((n, h, w), np.uint8)
    for k in range(n):
        p[k, :2, 4 * k:4 * k + 4], p[k, 2:, 4 * k:4 * k + 4] = 1, 2      # 2 parts each: 260 instances
    scores = np.linspace(0.01, 0.99, n)
    inst = PersonInstances(image_size=(h, w), boxes=np.zeros((n, 4)), scores=scores, parsings=p)
    with pytest.raises(ValueError, match="255"):
        inst.to_part_instances(overflow="raise")
    parts = inst.to_part_instances()
    assert len(parts) == 255 and parts.ids.dtype == np.uint8 and parts.ids.max() == 255
    assert parts.scores.min() >= scores[2] - 1e-12          # the 5 lowest-scoring instances (persons 0-2) go
    _, areas = parts.lookup()
    assert (areas == 8).all()
    assert not parts.ids[:, :8].any()                        # persons 0 and 1 entirely dropped
    # person 2's two instances tie at its score: the lower id (class 1) is kept, class 2 dropped
    assert parts.ids[:2, 8:12].all() and not parts.ids[2:, 8:12].any()


def test_no_people_give_empty_part_instances_in_both_score_modes():
    # an image without person boxes (top-down): no part_scores, yet part scoring must not fail
    empty = PersonInstances(image_size=(3, 5), boxes=np.zeros((0, 4)), scores=np.zeros(0),
                            parsings=np.zeros((0, 3, 5), np.uint8))
    for mode in ("person", "part"):
        parts = empty.to_part_instances(score=mode)
        assert len(parts) == 0 and parts.ids.shape == (3, 5) and not parts.ids.any()


def test_select_and_from_person_labels():
    a = np.zeros((5, 6), np.uint8)
    a[1:3, 2:5] = 3
    b = np.zeros((5, 6), np.uint8)
    inst = PersonInstances.from_person_labels([a, b], scores=[0.2, 0.7])
    np.testing.assert_array_equal(inst.boxes, [[2, 1, 5, 3], [0, 0, 0, 0]])
    assert inst.image_size == (5, 6) and inst.parsings.dtype == np.uint8
    assert len(PersonInstances.from_person_labels([a, b])) == 2
    with pytest.raises(ValueError, match="scores"):
        PersonInstances.from_person_labels([a, b], scores=[1.0])
    assert PersonInstances.from_person_labels([], image_size=(5, 6)).full_parsings().shape == (0, 5, 6)
    inst.part_scores = np.array([[0.1, 0.2], [0.3, 0.4]])
    s = inst.select(np.array([False, True]))
    assert len(s) == 1 and s.scores[0] == 0.7 and s.scores.dtype == np.float64
    assert s.part_scores.tolist() == [[0.3, 0.4]]
    s = inst.select([1, 0])
    np.testing.assert_array_equal(s.parsings[1], a)
    assert s.roi_parsings is None and s.quality is None
    assert len(inst.select(0)) == 1


# --------------------------------------------------------------------------- PartInstances


def test_part_instances_from_cihp_sparse_ids():
    ids = np.zeros((4, 4), np.uint8)
    ids[0, :2], ids[1, :2], ids[2:, 2:] = 2, 22, 35           # (h - 1) * 20 + c: (1, 2), (2, 2), (2, 15)
    rows = np.array([[35, 15, 2], [2, 2, 1], [22, 2, 2], [41, 1, 3]])   # unsorted; 41 has no pixel
    gt = PartInstances.from_cihp(ids, rows)
    np.testing.assert_array_equal(gt.instance_ids, [2, 22, 35, 41])
    np.testing.assert_array_equal(gt.classes, [2, 2, 15, 1])
    np.testing.assert_array_equal(gt.scores, 1.0)
    masks = gt.masks()
    assert masks.shape == (4, 4, 4) and masks.dtype == bool
    np.testing.assert_array_equal(masks[2], ids == 35)
    assert not masks[3].any()
    np.testing.assert_array_equal(gt.lookup()[1], [2, 2, 4, 0])
    cm = gt.class_map()
    assert cm[0, 0] == 2 and cm[3, 3] == 15 and cm[3, 0] == 0
    r = gt.relabel()
    np.testing.assert_array_equal(r.instance_ids, [1, 2, 3])
    np.testing.assert_array_equal(r.classes, [2, 2, 15])
    assert r.ids.dtype == np.uint8 and r.ids[0, 0] == 1 and r.ids[1, 0] == 2 and r.ids[3, 3] == 3
    assert len(gt.relabel(drop_empty=False)) == 4
    with pytest.raises(ValueError, match="not in the rows"):
        PartInstances.from_cihp(ids, rows[:2])


def test_part_instances_validation():
    ids = np.array([[0, 1], [2, 2]], np.uint8)
    p = PartInstances(ids, [3, 4], [0.5, 0.6])             # positional, ids 1..K
    np.testing.assert_array_equal(p.instance_ids, [1, 2])
    assert len(p) == 2 and p.image_size == (2, 2)
    with pytest.raises(ValueError, match="duplicate"):
        PartInstances(ids, [3, 4], [0.5, 0.6], instance_ids=[2, 2])
    with pytest.raises(ValueError, match="scores"):
        PartInstances(ids, [3, 4], [0.5])
    with pytest.raises(ValueError, match="without a class"):
        PartInstances(ids, [3], [0.5]).lookup()
    with pytest.raises(ValueError, match="integer"):
        PartInstances(ids.astype(float), [3, 4], [0.5, 0.6])
