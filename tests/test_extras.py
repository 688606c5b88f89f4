"""Outputs beyond the label map (boundary, structure points, hierarchy levels, gates); per-level scoring is
in test_evaluators.py (the ``levels`` evaluator)."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from hparse import config as C
from hparse.api import Parser
from hparse.cli import app
from hparse.engine.parse import extra_overlays, parse_files
from hparse.labels import get_meta
from hparse.models import build_model
from hparse.structures import Heatmap, LabelMap, ScoreTable

META = get_meta("ccp15")


def parser_for(config: str) -> Parser:
    torch.manual_seed(0)
    cfg = C.load_config(config)
    cfg["eval"]["long_side"] = 96
    model = build_model(cfg["model"], META).eval()
    return Parser(model, cfg, META)


def images(n=2):
    rng = np.random.default_rng(0)
    return [rng.integers(0, 255, (70 + 10 * i, 50, 3), dtype=np.uint8) for i in range(n)]


def test_cnif_extras_levels_and_gates():
    p = parser_for("cnif_light_ccp")
    ims = images()
    ex = p.predict_extras(ims)
    assert len(ex) == 2
    for im, e in zip(ims, ex):
        assert isinstance(e["level2"], LabelMap) and isinstance(e["level3"], LabelMap)
        assert isinstance(e["gates"], ScoreTable)
        level2, level3, gates = np.asarray(e["level2"]), np.asarray(e["level3"]), np.asarray(e["gates"])
        assert level2.shape == im.shape[:2] and level2.max() <= 2
        assert level3.shape == im.shape[:2] and level3.max() <= 1
        assert e["level2"].classes == ("background", "upper-body", "lower-body")
        assert e["level3"].classes == ("background", "person")
        assert gates.shape == (len(e["gates"].rows), len(e["gates"].cols)) == (len(p.model.node_names), 3)
        assert e["gates"].rows == tuple(p.model.node_names)
        assert ((gates >= 0) & (gates <= 1)).all()
    # level 2 is the model's own level-2 output, not a relabelled level 1
    x, _ = p.predictor.resizer.batch(ims[:1], 1.0)
    with torch.no_grad():
        raw = p.model.network(p.model.normalize(x))["level2"]
    assert raw.shape[1] == 3
    pics = extra_overlays(p, ims[:1])[0]
    assert set(pics) == {"level2", "level2_overlay", "level3", "level3_overlay", "gates"}
    assert pics["gates"].ndim == 3 and pics["gates"].shape[2] == 3


def test_acenet_extras_boundary_and_structure():
    p = parser_for("acenet_light_ccp")
    im = images(1)[0]
    e = p.predict_extras(im)
    assert isinstance(e["boundary"], Heatmap) and isinstance(e["structure"], Heatmap)
    boundary, structure = np.asarray(e["boundary"]), np.asarray(e["structure"])
    assert boundary.shape == im.shape[:2] and 0 <= boundary.min() and boundary.max() <= 1
    assert structure.shape == (META.num_classes - 1, *im.shape[:2]) and structure.min() >= 0


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
            assert type(a[k]) is type(b[k])
            np.testing.assert_array_equal(np.asarray(a[k]), np.asarray(b[k]))


def test_eval_cli_reports_low_res_miou_and_ipr(tmp_path):
    from tests.test_engine import make_folder_dataset

    root = make_folder_dataset(tmp_path / "data", n=4, size=(64, 48))
    js = tmp_path / "scores.json"
    res = CliRunner().invoke(app, ["eval", "ce2p_light_ccp", "default", "--low-res", "--ipr", "--json", str(js),
                                   "--plot", str(tmp_path / "cm.png"), "data.layout=folder",
                                   f"data.root={root}", "data.label_set=ccp15"])
    assert res.exit_code == 0, res.output
    assert "low-resolution (1/16, nearest)" in res.output and "isolated pixel rate" in res.output
    low = json.loads((tmp_path / "scores_lowres.json").read_text())
    ipr = json.loads((tmp_path / "scores_ipr.json").read_text())
    assert 0 <= low["miou"] <= 1 and ipr["pred"]["total"] == 2 * 64 * 48   # val = first 2 images
    assert ipr["gt"]["count"] == 0                                           # blocky GT has no speckles
    # the printed low-resolution mIoU is the one written to the JSON
    low_section = res.output.split("low-resolution (1/16, nearest)", 1)[1]
    assert float(re.search(r"mIoU\s+([0-9.]+)", low_section).group(1)) == pytest.approx(100 * low["miou"], abs=0.01)
    ipr_line = next(line for line in res.output.splitlines() if "isolated pixel rate" in line)
    assert f"{100 * ipr['pred']['ipr']:.3f} %" in ipr_line
    args = ["data.layout=folder", f"data.root={root}", "data.label_set=ccp15", "--backend", "torch"]
    res = CliRunner().invoke(app, ["eval", "ce2p_light_ccp", "default", "--low-res", "--low-res-mode", "pooled",
                                   "--plot", str(tmp_path / "cm.png"), *args])
    assert res.exit_code == 0 and "low-resolution (1/16, pooled)" in res.output, res.output
    res = CliRunner().invoke(app, ["eval", "ce2p_light_ccp", "default", "--low-res", "--low-res-mode", "generator",
                                   *args])   # CE2P has no low-resolution output of its own
    assert res.exit_code == 2 and "no low-resolution output" in res.output


def test_eval_cli_levels_writes_one_json_per_level(tmp_path):
    """``--levels`` on a hierarchical (CNIF) checkpoint: level 2 and level 3 scored, ``_level2/3.json``."""
    from tests.test_engine import make_folder_dataset

    root = make_folder_dataset(tmp_path / "data", n=4, size=(64, 48))
    torch.manual_seed(0)
    cfg = C.load_config("cnif_light_ccp")
    model = build_model(cfg["model"], META)
    ck = tmp_path / "cnif.pt"
    torch.save({"model": model.state_dict(), "config": cfg, "label_set": META.name}, ck)
    js = tmp_path / "scores.json"
    res = CliRunner().invoke(app, ["eval", "cnif_light_ccp", str(ck), "--levels", "--json", str(js),
                                   "--plot", str(tmp_path / "cm.png"), "data.layout=folder",
                                   f"data.root={root}", "data.label_set=ccp15", "eval.long_side=64"])
    assert res.exit_code == 0, res.output
    assert 0 <= json.loads(js.read_text())["miou"] <= 1
    for level, classes in ((2, ["background", "upper-body", "lower-body"]), (3, ["background", "person"])):
        scores = json.loads((tmp_path / f"scores_level{level}.json").read_text())
        assert list(scores["per_class"]) == classes and 0 <= scores["miou"] <= 1
        assert sum(c["gt_pixels"] for c in scores["per_class"].values()) == 2 * 64 * 48
