"""The person prior: the TFLite graph runner against LiteRT's own output, the fusion rule, and its wiring through
the config, the Python API, the predictor and ``hparse parse``."""

from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import hparse
from hparse.cli import app
from hparse.engine.person_prior import SELFIE_WEIGHTS, SelfiePrior
from hparse.errors import ConfigError, HParseError
from hparse.io.image import read_image, read_label
from hparse.io.tflite import TFLiteGraph
from hparse.metrics.semantic import person_iou

DATA = Path(__file__).parent / "data"
CIHP = Path(__file__).resolve().parents[2] / "shared" / "data" / "cihp-samples"
EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "ccp_0193.jpg"


def test_tflite_graph_matches_litert():
    """Reference: LiteRT 2.3.0 (ai-edge-litert) running the same file on the same 144x256 input."""
    graph = TFLiteGraph(SELFIE_WEIGHTS)
    assert graph.input_shape == (1, 144, 256, 3)
    x = read_image(DATA / "selfie_input_ccp_0193.png").astype(np.float32) / 255
    ours = graph(torch.from_numpy(x)[None])[0, :, :, 0].numpy()
    ref = np.load(DATA / "selfie_litert_ccp_0193.npy").astype(np.float32)
    assert np.abs(ours - ref).max() < 2e-3
    assert 0.1 < (ref > 0.5).mean() < 0.5       # the photo's person, not an empty mask


def test_tflite_graph_refuses_foreign_files(tmp_path):
    bad = tmp_path / "model.tflite"
    bad.write_bytes(b"\x00" * 64)
    with pytest.raises(HParseError, match="model.tflite"):
        TFLiteGraph(bad)
    with pytest.raises(HParseError, match="cannot read"):
        TFLiteGraph(tmp_path / "missing.tflite")


def test_fuse_averages_person_probability_and_decides_person_first():
    prior = SelfiePrior()
    # one pixel, 3 classes: background 0.45 outweighs each part (0.30, 0.25), but not the two together
    probs = torch.tensor([0.45, 0.30, 0.25]).view(3, 1, 1)
    for person, label in ((0.9, 1), (0.05, 0), (0.55, 1)):
        fused, decision = prior.fuse(probs, torch.full((1, 1), person))
        f = (0.55 + person) / 2
        assert fused.sum().item() == pytest.approx(1.0, abs=1e-6)
        assert fused[0].item() == pytest.approx(1 - f, abs=1e-6)
        assert fused[1].item() / fused[2].item() == pytest.approx(0.30 / 0.25, rel=1e-5)
        assert decision.argmax(0).item() == label
    # without the prior's help the parser's own P(person) 0.55 > 1/2 already makes it a person
    assert prior.fuse(probs, torch.full((1, 1), 0.55))[1].argmax(0).item() == 1


def test_config_and_api_validate_the_prior():
    from hparse import config as C

    with pytest.raises(ConfigError, match="person_prior"):
        C.load_config("ce2p_lite0_ccp_sharp", ["eval.person_prior=sam"])
    with pytest.raises(HParseError, match="person prior"):
        hparse.load("default", person_prior="sam", backend="torch")


def test_default_model_ships_with_the_prior_and_it_can_be_turned_off():
    assert hparse.load("default", backend="torch").predictor.prior is not None
    assert hparse.load("default", backend="torch", person_prior="none").predictor.prior is None
    assert hparse.load("robust", backend="torch").predictor.prior is None
    assert hparse.load("robust", backend="torch", person_prior="selfie").predictor.prior is not None


def test_prior_labels_follow_the_fused_person_probability():
    """The label map says person exactly where the fused P(person) exceeds 1/2 (on the grid), and the fused
    probabilities are what ``--probs`` and ``person_probability`` give."""
    parser = hparse.load("default", backend="torch")
    image = read_image(EXAMPLE)
    label, probs = parser.predict(image, return_probs=True)
    person = 1.0 - np.asarray(probs[0], np.float32)
    np.testing.assert_allclose(parser.person_probability(image), person, atol=1e-3)
    decided = person > 0.5
    clear = np.abs(person - 0.5) > 0.05        # away from the threshold, where interpolation cannot flip it
    assert ((label != 0) == decided)[clear].mean() > 0.995
    np.testing.assert_allclose(np.asarray(probs, np.float32).sum(0), 1.0, atol=2e-2)


def test_parse_redoes_images_when_the_prior_is_toggled(tmp_path):
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    (src / "a.jpg").write_bytes(EXAMPLE.read_bytes())
    args = ["parse", str(src), "--out", str(out), "--backend", "torch"]
    assert "1 parsed, 0 skipped" in CliRunner().invoke(app, args).output
    assert "0 parsed, 1 skipped" in CliRunner().invoke(app, args).output
    off = CliRunner().invoke(app, [*args, "--person-prior", "none"])
    assert off.exit_code == 0 and "1 parsed, 0 skipped" in off.output
    bad = CliRunner().invoke(app, [*args, "--person-prior", "sam"])
    assert bad.exit_code == 2 and "--person-prior" in bad.output


@pytest.mark.skipif(not (CIHP / "Images").is_dir(), reason="CIHP sample photos not present")
def test_prior_finds_more_of_the_people_in_group_photos():
    with_prior = hparse.load("default", backend="torch")
    alone = hparse.load("default", backend="torch", person_prior="none")
    gains = []
    for path in sorted((CIHP / "Images").glob("*.jpg")):
        image, truth = read_image(path), read_label(CIHP / "Category_ids" / f"{path.stem}.png")
        gains.append(person_iou(with_prior.predict(image), truth) - person_iou(alone.predict(image), truth))
    assert np.mean(gains) > 0.1


def test_person_first_decision():
    from hparse.engine.person_prior import person_first

    probs = torch.tensor([[0.45, 0.6], [0.30, 0.3], [0.25, 0.1]])     # two pixels, 3 classes
    assert person_first(probs).argmax(0).tolist() == [1, 0]
    assert probs.argmax(0).tolist() == [0, 0]
