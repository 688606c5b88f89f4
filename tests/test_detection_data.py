"""The detection data step: random short side with a size cap, person boxes after augmentation, padded batches."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import hparse.data.detection  # noqa: F401  (registers the detection steps until hparse.data.transforms does)
from hparse.data.detection import (
    RandomShortSide,
    build_collate,
    detection_collate,
    person_boxes,
    short_side_size,
)
from hparse.data.transforms import build_transforms
from hparse.errors import ConfigError


def _sample(h: int = 60, w: int = 90) -> dict:
    human = np.zeros((h, w), np.uint8)
    human[5:40, 10:30] = 1
    human[20:58, 50:85] = 3                       # ids need not be contiguous
    label = np.where(human == 1, 2, np.where(human == 3, 7, 0)).astype(np.uint8)
    label[0, 0] = 255
    image = np.zeros((h, w, 3), np.uint8)
    image[..., 0] = human * 60
    return {"id": "s", "image": image, "label": label, "human_ids": human,
            "person_labels": [np.where(human == k, label, 0) for k in (1, 2, 3)], "meta": {}}


def test_short_side_size_caps_the_long_side():
    assert short_side_size(600, 800, 800) == (800, 1067)
    assert short_side_size(600, 1200, 800, max_size=1333) == (666, 1333)        # 1600 > 1333: short side cut
    assert short_side_size(512, 512, 384, max_size=512) == (384, 384)
    assert short_side_size(1000, 500, 800, max_size=1333) == (1333, 666)          # portrait: the height is capped


def test_random_short_side_draws_from_range_or_choices_and_moves_every_map():
    rng = np.random.default_rng(0)
    ranged = RandomShortSide(range=[40, 44], max_size=100)
    shorts = {min(ranged(_sample(), rng)["image"].shape[:2]) for _ in range(40)}
    assert shorts == {40, 41, 42, 43, 44}
    chosen = RandomShortSide(choices=[30, 120], max_size=150)
    sizes = {chosen(_sample(), rng)["image"].shape[:2] for _ in range(20)}
    assert sizes == {(30, 45), (100, 150)}                                    # 120 would make the long side 180
    out = chosen(_sample(), np.random.default_rng(3))
    for key in ("label", "human_ids"):
        assert out[key].shape == out["image"].shape[:2]
    assert all(p.shape == out["image"].shape[:2] for p in out["person_labels"])
    with pytest.raises(ConfigError, match="exactly one"):
        RandomShortSide(range=[1, 2], choices=[3])


def test_person_boxes_follow_the_augmented_ids():
    boxes, ids = person_boxes(_sample()["human_ids"])
    np.testing.assert_array_equal(boxes, [[10, 5, 30, 40], [50, 20, 85, 58]])
    np.testing.assert_array_equal(ids, [1, 3])
    steps = [{"type": "RandomShortSide", "choices": [120]}, {"type": "HFlip", "p": 1.0}, {"type": "PersonBoxes"},
             {"type": "ToTensor"}]
    out = build_transforms(steps, "ccp15")(_sample(), np.random.default_rng(0))
    assert "person_labels" not in out and out["boxes"].dtype == torch.float32
    human = out["human_ids"].numpy()
    for box, k in zip(out["boxes"].numpy(), out["person_ids"].tolist()):
        ys, xs = np.nonzero(human == k)
        np.testing.assert_array_equal(box, [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
    assert out["boxes"][0, 0] > out["boxes"][1, 0]                             # flipped: person 1 now on the right
    empty = _sample()
    empty["human_ids"] = np.where(empty["human_ids"] == 3, 0, empty["human_ids"]).astype(np.uint8)
    assert build_transforms([{"type": "PersonBoxes"}], "ccp15")(empty)["person_ids"].tolist() == [1]


def test_detection_collate_pads_to_a_multiple_and_keeps_sizes_and_lists():
    tf = build_transforms([{"type": "PersonBoxes"}, {"type": "ToTensor"}], "ccp15")
    a, b = tf(_sample(60, 90)), tf(_sample(70, 40))
    b["boxes"], b["person_ids"] = b["boxes"][:1], b["person_ids"][:1]
    batch = detection_collate([a, b], size_divisibility=32)
    assert batch["image"].shape == (2, 3, 96, 96) and batch["image_sizes"] == [(60, 90), (70, 40)]
    assert torch.equal(batch["image"][0, :, :60, :90], a["image"]) and batch["image"][1, :, :, 40:].abs().sum() == 0
    assert batch["label"].dtype == torch.uint8 and batch["label"].shape == (2, 96, 96)
    assert batch["label"][1, 70:].eq(255).all() and batch["label"][1, :, 40:].eq(255).all()
    assert batch["human_ids"][1, 70:].eq(0).all() and batch["label"][0, 0, 0] == 255
    assert [len(x) for x in batch["boxes"]] == [2, 1] and [len(x) for x in batch["person_ids"]] == [2, 1]
    assert batch["id"] == ["s", "s"] and build_collate("detection", 64)([a, b])["image"].shape[-2:] == (128, 128)
    with pytest.raises(ConfigError, match="unknown collate"):
        build_collate("nope")
