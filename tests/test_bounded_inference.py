"""Inference whose time and memory are bounded by the network input: labels decided from scores on the network's
output grid in bands of rows (agreeing with the old full-size upsample + argmax), probabilities as float16 at the
image or grid size, TTA averaged on the output grid, ``Parser.predict`` in chunks of ``batch_size``."""

from __future__ import annotations

import math
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import hparse
from hparse import config as C
from hparse.api import Parser
from hparse.engine.inference import GridScores, Predictor, resized_row_bands, upsample_argmax
from hparse.io.image import read_image
from hparse.labels import get_meta
from hparse.models import build_model

META = get_meta("ccp15")
EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def smooth_scores(c=15, h=40, w=30, seed=0) -> torch.Tensor:
    """Blobby class scores (what a network gives), not noise."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.randn(1, c, max(2, h // 6), max(2, w // 6), generator=g) * 4
    return F.interpolate(coarse, size=(h, w), mode="bilinear", align_corners=False)[0]


def full_upsample_argmax(scores: torch.Tensor, size) -> np.ndarray:
    return F.interpolate(scores[None], size=size, mode="bilinear", align_corners=False)[0].argmax(0).numpy()


@pytest.mark.parametrize("size", [(333, 250), (40, 30), (25, 17), (97, 301)])
@pytest.mark.parametrize("kind", ["smooth", "noise"])
def test_banded_argmax_equals_full_upsample(size, kind):
    noise = torch.randn(15, 40, 30, generator=torch.Generator().manual_seed(1))
    scores = smooth_scores() if kind == "smooth" else noise
    ref = full_upsample_argmax(scores, size)
    for max_elements in (15 * size[1] * 3, 1 << 22):  # many bands of 3 rows, one band
        label = upsample_argmax(scores, size, max_elements)
        assert label.shape == size and label.dtype == np.uint8
        assert (label == ref).mean() >= 0.999


def test_row_bands_are_the_full_resize():
    scores = smooth_scores(c=5)
    bands = list(resized_row_bands(scores, (123, 77), max_elements=5 * 77 * 10))
    assert len(bands) == 13 and all(b.shape[1] <= 10 for _, b in bands)
    torch.testing.assert_close(torch.cat([b for _, b in bands], 1),
                               F.interpolate(scores[None], size=(123, 77), mode="bilinear", align_corners=False)[0],
                               rtol=0, atol=1e-4)


def tiny_parser(tta=False, long_side=96, **kw) -> Parser:
    torch.manual_seed(0)
    cfg = C.load_config("ce2p_light_ccp")
    cfg["eval"]["long_side"] = long_side
    return Parser(build_model(cfg["model"], META).eval(), cfg, META, tta=tta, **kw)


def photos(n=3, seed=0):
    rng = np.random.default_rng(seed)
    sizes = [(211, 150), (90, 131), (64, 64)]
    return [rng.integers(0, 255, (*sizes[i % 3], 3), dtype=np.uint8) for i in range(n)]


def old_way_label(pred: Predictor, image: np.ndarray) -> np.ndarray:
    """The previous geometry: every pass upsampled to the image's full size, averaged, argmax."""
    acc, n = 0, 0
    with torch.no_grad():
        for s in pred.scales:
            x, ((h, w),) = pred.resizer.batch([image], s)
            outs = [pred.runner(x)[0]]
            if pred.flip:
                outs.append(F.interpolate(pred.runner(x.flip(-1))[0], size=x.shape[-2:], mode="bilinear",
                                          align_corners=False).flip(-1)[:, pred.perm])
            for o in outs:
                o = F.interpolate(o.float(), size=x.shape[-2:], mode="bilinear", align_corners=False)[:, :, :h, :w]
                o = F.interpolate(o, size=image.shape[:2], mode="bilinear", align_corners=False)[0]
                acc, n = acc + (o.softmax(0) if pred.average == "probs" else o), n + 1
    return (acc / n).argmax(0).numpy()


@pytest.mark.parametrize("tta", [False, True])
def test_labels_of_a_trained_model_agree_with_the_old_two_step_way(tta):
    """One resize from the output grid against the old one through the padded input: the shipped model on two
    example photos."""
    p = hparse.load("default", backend="torch", tta=tta, person_prior="none")   # the geometry alone
    for path in sorted(EXAMPLES.glob("*.jpg"))[:2]:
        image = read_image(path)
        assert (p.predict(image) == old_way_label(p.predictor, image)).mean() >= 0.995


def test_grid_scores_resize_by_their_span():
    """A grid covering 9.25 x 6.5 cells of its (padded) output resizes like F.interpolate at that scale."""
    logits = smooth_scores(c=5, h=12, w=8)
    span, size = (9.25, 6.5), (37, 26)
    grid = GridScores(logits[:, :10, :7], span)
    ref = F.interpolate(logits[None, :, :10, :7], scale_factor=(size[0] / span[0], size[1] / span[1]),
                        mode="bilinear", align_corners=False, recompute_scale_factor=False)[0, :, :size[0], :size[1]]
    torch.testing.assert_close(grid.resized(size), ref, rtol=0, atol=1e-4)
    bands = torch.cat([b for _, b in resized_row_bands(grid, size, max_elements=5 * 26 * 4)], 1)
    torch.testing.assert_close(bands, ref, rtol=0, atol=1e-4)
    assert (upsample_argmax(grid, size) == ref.argmax(0).numpy()).mean() >= 0.999


def test_tta_scores_stay_on_the_output_grid():
    p = tiny_parser(tta=True)
    pred = p.predictor
    assert len(pred.scales) > 1 and pred.flip
    image = photos(1)[0]
    (grid,) = pred.network_scores([image])
    x, ((h, w),) = pred.resizer.batch([image], max(pred.scales))
    out = pred.runner(x)[0]
    span = (h * out.shape[2] / x.shape[2], w * out.shape[3] / x.shape[3])
    assert grid.span == pytest.approx(span) and out.shape[2] < x.shape[2]
    assert tuple(grid.values.shape) == (META.num_classes, math.ceil(span[0]), math.ceil(span[1]))


def test_probs_float16_at_image_or_network_size():
    p = tiny_parser()
    image = photos(1)[0]
    label, probs = p.predict(image, return_probs=True)
    assert probs.dtype == np.float16 and probs.shape == (META.num_classes, *image.shape[:2])
    assert np.allclose(probs.astype(np.float32).sum(0), 1, atol=1e-2)
    assert np.array_equal(probs.argmax(0), label)
    label2, small = p.predict(image, return_probs=True, probs_at="network")
    assert np.array_equal(label, label2)
    (grid,) = p.predictor.network_scores([image])
    assert small.dtype == np.float16 and small.shape == tuple(grid.values.shape)
    assert np.allclose(small.astype(np.float32).sum(0), 1, atol=1e-2)
    with pytest.raises(ValueError, match="probs_at"):
        p.predict(image, return_probs=True, probs_at="screen")


def test_predict_list_runs_in_chunks_of_batch_size(monkeypatch):
    p = tiny_parser(batch_size=2)
    seen = []
    real = p.predictor.predict

    def spy(images, **kw):
        seen.append(len(images))
        return real(images, **kw)

    monkeypatch.setattr(p.predictor, "predict", spy)
    ims = photos(5)
    labels = p.predict(ims)
    assert seen == [2, 2, 1] and [lab.shape for lab in labels] == [im.shape[:2] for im in ims]
    assert tiny_parser().batch_size == 1


PEAK_SCRIPT = """
import resource, numpy as np, torch
torch.set_num_threads(1)
from hparse import config as C
from hparse.api import Parser
from hparse.labels import get_meta
from hparse.models import build_model
meta = get_meta("ccp15")
cfg = C.load_config("ce2p_light_ccp")
cfg["eval"]["long_side"] = 128
parser = Parser(build_model(cfg["model"], meta).eval(), cfg, meta)
image = np.full((6000, 4000, 3), 120, np.uint8)
image[1000:5000, 1000:3000] = 30
parser.predict(image[:64, :64])
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
label = parser.predict(image)
assert label.shape == (6000, 4000)
print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024)
"""


def test_memory_of_a_large_photo_is_bounded():
    """A 24-megapixel photo: full-size scores would be 15 x 24 M float32 = 1.4 GB; the photo itself, one float
    plane while resizing and the label map are about 200 MB."""
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(PEAK_SCRIPT)], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    assert float(out.stdout.split()[-1]) < 400
