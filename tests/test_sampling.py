"""Repeat-factor sampling (``train.repeat_factor_threshold``): LVIS's per-image repeat factors and the sampler
that draws them with a fixed epoch length."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from hparse.data.dataset import EpochSampler, repeat_factors
from hparse.engine.trainer import Trainer
from hparse.errors import DataError

from .test_engine import make_folder_dataset, tiny_config


def test_repeat_factor_of_an_image_is_its_rarest_class():
    present = np.array([[1, 1, 1], [1, 0, 1], [1, 0, 0], [1, 0, 0]], bool)  # class 1 in 1/4, class 2 in 2/4
    r = repeat_factors(present, threshold=0.5)
    np.testing.assert_allclose(r, [np.sqrt(0.5 / 0.25), 1.0, 1.0, 1.0])
    np.testing.assert_allclose(repeat_factors(present, threshold=1.0), [2.0, np.sqrt(2), 1.0, 1.0])
    assert repeat_factors(np.zeros((2, 3), bool), 0.5).tolist() == [1.0, 1.0]  # no labelled class: once


def test_sampler_repeats_images_by_their_factors_with_a_fixed_epoch_length():
    s = EpochSampler(4, seed=1, repeats=[1.0, 2.5, 1.0, 1.0])
    assert s.epoch_length == 6
    counts = []
    for epoch in range(300):
        s.set_epoch(epoch)
        order = s.order()
        assert len(order) == 6 and set(order) <= {0, 1, 2, 3}
        counts.append(np.bincount(order, minlength=4))
    mean = np.mean(counts, 0)
    assert 2.2 < mean[1] < 2.8 and all(0.8 < m < 1.2 for m in mean[[0, 2, 3]])
    s.set_epoch(7)
    first = s.order()
    s.set_epoch(7, start=2)
    assert list(s) == first[2:]  # the same epoch again, resumed part-way
    with pytest.raises(DataError, match="repeat factors"):
        EpochSampler(3, repeats=[1.0, 0.5, 1.0])


def test_trainer_draws_images_with_rare_classes_more_often(tmp_path):
    root = make_folder_dataset(tmp_path / "data")
    label = np.array(Image.open(root / "labels" / "000.png"))
    label[30:40, 0:2] = 3  # a class only image 000 holds (1 image of 8)
    Image.fromarray(label).save(root / "labels" / "000.png")
    plain = Trainer(tiny_config(root), tmp_path / "plain", device="cpu", progress=False)
    assert plain.iters_per_epoch == 4 and plain.sampler.repeats is None
    rfs = Trainer(tiny_config(root, repeat_factor_threshold=1.0, max_steps=1), tmp_path / "rfs", device="cpu",
                  progress=False)
    np.testing.assert_allclose(rfs.sampler.repeats, [np.sqrt(8)] + [1.0] * 7)
    assert rfs.sampler.epoch_length == 10 and rfs.iters_per_epoch == 5
    rfs.train()
    assert rfs.step == 1
