"""Dense CRF post-processing (``hparse.ops.crf``, ``eval.crf``: MMAN Table 4's "+CRF" row)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hparse import config as C
from hparse.engine.inference import make_predictor
from hparse.labels import get_meta
from hparse.models import build_model
from hparse.ops.crf import DenseCRF


def halves(wrong_block: bool = True):
    """A photo of two colour halves, probabilities 0.7 for the right class, one 4x4 block flipped."""
    img = np.zeros((64, 64, 3), np.uint8)
    img[:, 32:] = 200
    truth = np.zeros((64, 64), np.int64)
    truth[:, 32:] = 1
    p = np.where(np.arange(2)[:, None, None] == truth, 0.7, 0.3).astype(np.float32)
    if wrong_block:
        p[:, 10:14, 10:14] = p[::-1, 10:14, 10:14]
    return torch.from_numpy(p), img, truth


def test_crf_cleans_a_wrong_block_and_keeps_the_colour_edge():
    p, img, truth = halves()
    assert (p.argmax(0).numpy() != truth).sum() == 16
    q = DenseCRF()(p, img)
    torch.testing.assert_close(q.sum(0), torch.ones(64, 64))
    np.testing.assert_array_equal(q.argmax(0).numpy(), truth)   # block absorbed, edge at column 32 kept


def test_crf_follows_the_photo_not_just_the_neighbours():
    """Without the colour term (bilateral weight 0) smoothing crosses the edge more: the probability of the
    right class just beside the edge is lower than with it."""
    p, img, truth = halves(wrong_block=False)
    p[:, :, 30:34] = 0.5                                            # undecided along the edge
    with_colour = DenseCRF()(p, img)
    without = DenseCRF(bilateral_weight=0.0, gaussian_weight=7.0)(p, img)
    assert with_colour[1, :, 32].mean() > without[1, :, 32].mean() + 0.02
    np.testing.assert_array_equal(DenseCRF(iters=0)(p, img).numpy(), p.numpy())   # no iteration: unchanged
    with pytest.raises(ValueError, match="differ"):
        DenseCRF()(p, img[:32])
    with pytest.raises(ValueError, match="odd"):
        DenseCRF(window=4)


def test_eval_crf_refines_the_predictor_labels():
    cfg = C.load_config("mman_light_ccp_crf")
    assert cfg["eval"]["crf"]["iters"] == 5 and C.load_config("mman_light_ccp")["eval"]["crf"] is None
    assert cfg["model"]["variant"] == C.load_config("mman_r101_lip_crf")["model"]["variant"] == "baseline"
    meta = get_meta("ccp15")
    torch.manual_seed(0)
    model = build_model({**cfg["model"], "backbone": {"name": "resnet18", "width": 0.125, "output_stride": 16},
                         "decoder_channels": [16, 16, 8, 8], "skip_channels": [16, 16, 8, 8]}, meta)
    img = np.random.default_rng(0).integers(0, 255, (48, 40, 3), dtype=np.uint8)
    with_crf = make_predictor(model, {**cfg["eval"], "long_side": 64}, "cpu")
    plain = make_predictor(model, {**cfg["eval"], "long_side": 64, "crf": None}, "cpu")
    label, probs = with_crf.predict([img], return_probs=True)[0]
    np.testing.assert_array_equal(probs.argmax(0), label)
    grid = plain.network_scores([img])[0]
    assert cfg["eval"]["average"] == "probs"     # the grid holds probabilities already
    expected = DenseCRF()(grid.resized((48, 40)), img).argmax(0).numpy()
    assert (label == expected).mean() > 0.99     # an untrained network: near-ties may differ by rounding
    with pytest.raises(ValueError, match="probs_at"):
        with_crf.predict([img], return_probs=True, probs_at="network")
