"""Instance test-time augmentation (instance-parsers spec 2.1.4 item 8): boxes from the base pass, per-RoI
probabilities and qualities averaged over scales and flips on those boxes, left/right classes swapped back."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from hparse import config as C
from hparse.engine.inference import InstancePredictor, make_predictor
from hparse.errors import HParseError
from hparse.labels import get_meta
from hparse.models import build_model
from hparse.models.detection import Detections

from .test_aiparsing import TINY, make_scene

CIHP = get_meta("cihp")   # flip pairs (14, 15), (16, 17), (18, 19)
LEFT_ARM, RIGHT_ARM = 14, 15


def tiny_model():
    """A tiny untrained AIParsing in CIHP labels that detects (every location passes the score threshold)."""
    torch.manual_seed(0)
    return build_model({**TINY, "fcos": {**TINY["fcos"], "score_thresh": 0.0}}, CIHP).eval()


def images():
    """Two scenes of different sizes (the second is padded in the batch, its width below the batch's)."""
    rng = np.random.default_rng(0)
    return [make_scene(rng, (96, 96))["image"], make_scene(rng, (96, 60))["image"]]


def record(model, name: str) -> list:
    """Wrap ``model.<name>`` to record its arguments."""
    calls, original = [], getattr(model, name)

    def wrapper(*args):
        calls.append(args)
        return original(*args)
    setattr(model, name, wrapper)
    return calls


def fixed_detections(model, boxes: torch.Tensor, scores: torch.Tensor) -> None:
    model.detect = lambda outputs, sizes: [Detections(boxes, scores, torch.ones(len(boxes))) for _ in sizes]


def test_one_pass_is_the_models_own_inference():
    model, ims = tiny_model(), images()
    predictor = InstancePredictor(model, long_side=96)
    x, sizes = predictor.resizer.batch(ims)
    with torch.no_grad():
        plain = [model.postprocess(r, s, im.shape[:2])
                 for r, s, im in zip(model({"image": x, "image_sizes": sizes}), sizes, ims)]
    for got, want in zip(predictor.predict(ims), plain):
        assert len(want) > 0 and got.image_size == want.image_size
        for key in ("boxes", "scores", "parsings", "quality"):
            assert np.array_equal(getattr(got, key), getattr(want, key)), key


def test_passes_parse_the_base_boxes_scaled_and_mirrored():
    model, ims = tiny_model(), images()
    assert model.roi_offset == 0                                # ResNet features: plain scaling and mirroring
    model.roi_offset = off = 3.0                                # a model whose features sample 3 px right / below
    calls = record(model, "roi_outputs")
    predictor = InstancePredictor(model, long_side=96, scales=(1.0, 0.5), flip=True)
    assert predictor.passes() == [(1.0, False), (1.0, True), (0.5, False), (0.5, True)]
    people = predictor.predict(ims)
    boxes = [calls[i * 4][2] for i in range(2)]                 # the base passes of images 0 and 1
    for b, p in zip(boxes, people):                             # the people keep the base boxes (same size)
        assert np.array_equal(p.boxes, b.numpy()) and len(p) == len(b)
    widths = {(1.0, 0): 96, (1.0, 1): 60, (0.5, 0): 48, (0.5, 1): 30}
    n = len(predictor.passes())
    for i in range(2):                                          # one image at a time, its passes in turn
        for k, (scale, flip) in enumerate(predictor.passes()):
            _, index, got = calls[i * n + k]
            sampled = (boxes[i] + off) * scale                  # the picture's points the features sample
            if flip:
                w = widths[scale, i]                            # the image's width, not the batch's (64 / 32)
                sampled = torch.stack((w - sampled[:, 2], sampled[:, 1], w - sampled[:, 0], sampled[:, 3]), 1)
            assert index == 0 and torch.allclose(got + off, sampled), (scale, flip, i)


def test_probabilities_and_qualities_are_averaged_before_scoring():
    model, ims = tiny_model(), images()[:1]
    boxes, det = torch.tensor([[10.0, 8, 50, 90], [40, 20, 80, 70]]), torch.tensor([0.64, 0.36])
    fixed_detections(model, boxes, det)
    size = model.roi_head.parsing_size
    gen = torch.Generator().manual_seed(0)
    answers = [(torch.rand(2, CIHP.num_classes, size, size, generator=gen).softmax(1), torch.tensor(q))
               for q in ([0.2, 1.4], [1.4, -0.2], [0.6, 0.3], [-0.2, 0.5])]
    model.roi_outputs = lambda outputs, index, b: (*(t.clone() for t in answers[len(calls) - 1]), None)
    calls = record(model, "roi_outputs")
    people_args = record(model, "people")
    predictor = InstancePredictor(model, long_side=96, scales=(1.0, 0.75), flip=True)
    (people,) = predictor.predict(ims)
    perm = CIHP.flip_permutation()
    back = [p.flip(-1)[:, perm] if flip else p for (p, _), (_, flip) in zip(answers, predictor.passes())]
    probs, _, _ = people_args[0][3](slice(None))               # the averaged per-RoI outputs given to people()
    assert torch.allclose(probs, sum(back) / 4)
    # the spec's averaged scores: mean over passes of sqrt(det x clamp(quality, 0, 1))
    per_pass = torch.stack([torch.sqrt(det * q.clamp(0, 1)) for _, q in answers])
    assert people.scores.tolist() == pytest.approx(per_pass.mean(0).tolist())
    assert people.scores.tolist() != pytest.approx([math.sqrt(0.64 * 0.5), math.sqrt(0.36 * 0.5)])  # not the mean q


def test_flipped_pass_swaps_left_and_right_back():
    model, ims = tiny_model(), images()[:1]
    fixed_detections(model, torch.tensor([[10.0, 8, 60, 90]]), torch.tensor([0.9]))
    size = model.roi_head.parsing_size

    def roi_outputs(outputs, index, boxes):
        """The person's right arm on the RoI's right half; mirrored (flipped pass): a 'left arm' on the left."""
        probs = torch.zeros(1, CIHP.num_classes, size, size)
        probs[:, 0] = 1
        probs[:, 0, :, size // 2:], probs[:, RIGHT_ARM, :, size // 2:] = 0, 1
        return (probs.flip(-1)[:, CIHP.flip_permutation()] if len(calls) == 2 else probs), torch.ones(1), None
    model.roi_outputs = roi_outputs
    calls = record(model, "roi_outputs")
    people_args = record(model, "people")
    (people,) = InstancePredictor(model, long_side=96, flip=True).predict(ims)
    probs, _, foreground = people_args[0][3](slice(None))
    assert foreground is None                                  # AIParsing predicts no mask of its own
    assert len(calls) == 2 and probs[:, RIGHT_ARM, :, size // 2:].eq(1).all() and probs[:, LEFT_ARM].eq(0).all()
    assert set(np.unique(people.parsings)) == {0, RIGHT_ARM}


def test_make_predictor_takes_the_configs_tta_scales_and_flip():
    model = tiny_model()
    eval_cfg = C.load_config("aiparsing_cpu_ccpmulti")["eval"]
    tta = make_predictor(model, eval_cfg, "cpu", tta=True)
    assert isinstance(tta, InstancePredictor) and tta.scales == (0.75, 1.0, 1.25) and tta.flip
    assert tta.resizer.long_side == 512 and len(tta.passes()) == 6 and tta.passes()[0] == (1.0, False)
    plain = make_predictor(model, eval_cfg, "cpu")
    assert plain.scales == (1.0,) and not plain.flip and plain.passes() == [(1.0, False)]
    paper = C.load_config("aiparsing_r50_cihp")["eval"]
    assert [round(s * 800) for s in paper["tta_scales"]] == [500, 600, 700, 800, 850]     # short sides


def test_tta_needs_per_roi_outputs():
    class Whole(torch.nn.Module):
        task, meta = "instance", CIHP
    InstancePredictor(Whole())
    with pytest.raises(HParseError, match="no per-RoI outputs"):
        InstancePredictor(Whole(), flip=True)
