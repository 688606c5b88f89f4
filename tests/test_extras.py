"""Outputs beyond the label map (boundary, structure points, hierarchy levels, gates) and per-level scoring."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from hparse import config as C
from hparse.api import Parser
from hparse.cli import app
from hparse.engine.evaluate import LowResMeter, PairIPRMeter, evaluate_predictor, level_evaluation
from hparse.engine.parse import extra_overlays, parse_files
from hparse.labels import get_meta
from hparse.models import build_model
from hparse.models.cnif import level_label_maps

META = get_meta("ccp15")


def parser_for(config: str) -> Parser:
    torch.manual_seed(0)
    cfg = C.load_config(config)
    cfg["eval"]["long_side"] = 96
    model = build_model(cfg["model"], META.num_classes).eval()
    return Parser(model, cfg, META)


def images(n=2):
    rng = np.random.default_rng(0)
    return [rng.integers(0, 255, (70 + 10 * i, 50, 3), dtype=np.uint8) for i in range(n)]


class TinyReader:
    meta, split = META, "val"

    def __init__(self):
        rng = np.random.default_rng(1)
        self.samples = []
        for i, im in enumerate(images(3)):
            label = rng.integers(0, META.num_classes, im.shape[:2]).astype(np.uint8)
            label[:5] = 255
            self.samples.append({"id": str(i), "image": im, "label": label})

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, i):
        return self.samples[i]


def test_cnif_extras_levels_and_gates():
    p = parser_for("cnif_light_ccp")
    ims = images()
    ex = p.predict_extras(ims)
    assert len(ex) == 2
    for im, e in zip(ims, ex):
        assert e["level2"].shape == im.shape[:2] and e["level2"].max() <= 2
        assert e["level3"].shape == im.shape[:2] and e["level3"].max() <= 1
        assert e["gates"].shape == (len(p.gate_names), 3)
        assert ((e["gates"] >= 0) & (e["gates"] <= 1)).all()
    # level 2 is the model's own level-2 output, not a relabelled level 1
    x, _ = p.predictor._batch(ims[:1], 1.0)
    with torch.no_grad():
        raw = p.model(x)["level2"]
    assert raw.shape[1] == 3
    assert p.level_classes[3] == ("background", "person")
    pics = extra_overlays(p, ims[:1])[0]
    assert set(pics) == {"level2", "level2_overlay", "level3", "level3_overlay", "gates"}
    assert pics["gates"].ndim == 3 and pics["gates"].shape[2] == 3


def test_acenet_extras_boundary_and_structure():
    p = parser_for("acenet_light_ccp")
    im = images(1)[0]
    e = p.predict_extras(im)
    assert e["boundary"].shape == im.shape[:2] and 0 <= e["boundary"].min() and e["boundary"].max() <= 1
    assert e["structure"].shape == (META.num_classes - 1, *im.shape[:2]) and e["structure"].min() >= 0


def test_parse_writes_extras(tmp_path):
    from PIL import Image

    src = tmp_path / "in"
    src.mkdir()
    Image.fromarray(images(1)[0]).save(src / "a.png")
    p = parser_for("cnif_light_ccp")
    rep = parse_files(p, [str(src)], tmp_path / "out", progress=False, extras=extra_overlays)
    assert rep.written and not rep.failed
    names = sorted(f.name for f in (tmp_path / "out").iterdir())
    assert names == ["a.png", "a_gates.jpg", "a_level2.png", "a_level2_overlay.jpg", "a_level3.png",
                     "a_level3_overlay.jpg", "a_overlay.jpg"]
    level2 = np.array(Image.open(tmp_path / "out" / "a_level2.png"))
    assert level2.shape == (70, 50) and level2.max() <= 2


def test_level_evaluation_scores_each_level_against_mapped_ground_truth():
    p = parser_for("cnif_light_ccp")
    reader = TinyReader()
    scores = level_evaluation(p.predictor, reader)
    assert set(scores) == {2, 3}
    assert scores[2].class_names == ("background", "upper-body", "lower-body")
    # same numbers by hand: level-3 output vs the hierarchy-mapped ground truth
    lut = level_label_maps(META)[3][1]
    correct = total = 0
    pred = p.predictor
    pred_l3 = __import__("copy").copy(pred)
    pred_l3.output, pred_l3.perm = "level3", None
    for s in reader.samples:
        lab = pred_l3.predict([s["image"]])[0]       # one image a batch, as the evaluation (same padding)
        gt = lut[s["label"]]
        valid = gt != 255
        correct += int((lab[valid] == gt[valid]).sum())
        total += int(valid.sum())
    assert scores[3].pixel_acc == pytest.approx(correct / total)


def test_level_evaluation_refuses_flat_models():
    p = parser_for("ce2p_light_ccp")
    with pytest.raises(Exception, match="hierarchical"):
        level_evaluation(p.predictor, TinyReader())


def test_target_map_relabels_ground_truth():
    class Oracle:
        def predict(self, ims):
            return [np.zeros(im.shape[:2], np.uint8) for im in ims]

    reader = TinyReader()
    lut = np.zeros(256, np.uint8)
    lut[255] = 255
    _, s = evaluate_predictor(Oracle(), reader, target_map=lut, class_names=("background", "x"), progress=False)
    assert s.pixel_acc == 1.0


def test_cli_parse_levels_flag(tmp_path):
    res = CliRunner().invoke(app, ["parse", "examples/ccp_0002.jpg", "--out", str(tmp_path), "--levels"])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "ccp_0002_boundary.jpg").is_file()      # the default CE2P model has an edge branch


def test_extras_from_the_prediction_pass_equal_a_separate_pass():
    p = parser_for("cnif_light_ccp")
    ims = images()
    labels, ex = p.predictor.predict(ims, with_extras=True)
    assert [lab.shape for lab in labels] == [im.shape[:2] for im in ims]
    for a, b in zip(ex, p.predictor.extras(ims)):
        assert a.keys() == b.keys()
        for k in a:
            np.testing.assert_array_equal(a[k], b[k])


def test_low_res_and_ipr_meters_follow_their_definitions():
    """MMAN's Table 4 metrics: 1/16 nearest thumbnails of prediction and GT; IPR of pred and GT."""
    class Fixed:
        def __init__(self, preds):
            self.preds = iter(preds)

        def predict(self, ims):
            return [next(self.preds) for _ in ims]

    reader = TinyReader()
    rng = np.random.default_rng(3)
    preds = [rng.integers(0, 3, s["label"].shape).astype(np.uint8) for s in reader.samples]
    low, ipr = LowResMeter(META.num_classes, 255), PairIPRMeter(255)
    evaluate_predictor(Fixed(preds), reader, progress=False, meters=[low, ipr])
    ref = np.zeros((META.num_classes,) * 2, np.int64)
    count = total = 0
    for p, s in zip(preds, reader.samples):
        h, w = p.shape[0] // 16, p.shape[1] // 16
        rows = [int((i + 0.5) * p.shape[0] / h) for i in range(h)]
        cols = [int((j + 0.5) * p.shape[1] / w) for j in range(w)]
        for r in rows:
            for c in cols:
                if s["label"][r, c] != 255:
                    ref[s["label"][r, c], p[r, c]] += 1
        for r in range(p.shape[0]):          # isolated: no 8-neighbour with the same label
            for c in range(p.shape[1]):
                nb = p[max(r - 1, 0):r + 2, max(c - 1, 0):c + 2]
                count += int((nb == p[r, c]).sum() == 1)
                total += 1
    assert (low.cm.matrix == ref).all() and low.cm.matrix.sum() > 0
    assert ipr.pred.count == count and ipr.pred.total == total and 0 < count < total
    assert ipr.gt.total == sum(int((s["label"] != 255).sum()) for s in reader.samples)


def test_eval_cli_reports_low_res_miou_and_ipr(tmp_path):
    from tests.test_engine import make_folder_dataset

    root = make_folder_dataset(tmp_path / "data", n=4, size=(64, 48))
    js = tmp_path / "scores.json"
    res = CliRunner().invoke(app, ["eval", "ce2p_light_ccp", "default", "--low-res", "--ipr", "--json", str(js),
                                   "--plot", str(tmp_path / "cm.png"), "data.layout=folder",
                                   f"data.root={root}", "data.label_set=ccp15"])
    assert res.exit_code == 0, res.output
    assert "low-resolution (1/16) mIoU" in res.output and "isolated pixel rate" in res.output
    import json

    low = json.loads((tmp_path / "scores_lowres.json").read_text())
    ipr = json.loads((tmp_path / "scores_ipr.json").read_text())
    assert 0 <= low["miou"] <= 1 and ipr["pred"]["total"] == 2 * 64 * 48   # val = first 2 images
    assert ipr["gt"]["count"] == 0                                           # blocky GT has no speckles
