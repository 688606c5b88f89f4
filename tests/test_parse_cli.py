"""``hparse parse`` on awkward inputs, ``hparse evaluate`` and the other CLI commands."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from hparse.cli import app
from hparse.engine.trainer import Trainer
from hparse.io import image as image_io
from hparse.labels import get_meta

from .test_engine import make_folder_dataset, tiny_config

runner = CliRunner()


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    root = make_folder_dataset(tmp_path_factory.mktemp("data"))
    out = tmp_path_factory.mktemp("run")
    Trainer(tiny_config(root, epochs=1), out, device="cpu", progress=False).train()
    return out / "last.pt"


def awkward_folder(root: Path) -> Path:
    rng = np.random.default_rng(0)
    root.mkdir()
    rgb = rng.integers(0, 255, (40, 30, 3), dtype=np.uint8)
    (root / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0" + rng.bytes(200))  # JPEG header, garbage body
    (root / "notes.jpg").write_text("this is a text file named .jpg\n")
    Image.fromarray(rgb[..., 0]).save(root / "gray.png")
    Image.fromarray(np.dstack([rgb, np.full((40, 30), 128, np.uint8)])).save(root / "rgba.png")
    Image.fromarray(rgb[..., 0].astype(np.uint16) * 257).save(root / "deep16.png")
    Image.fromarray(rgb).convert("P").save(root / "palette.png")
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    Image.fromarray(rgb).save(root / "rotated.jpg", exif=exif)
    return root


def test_parse_folder_with_bad_files(checkpoint, tmp_path):
    src = awkward_folder(tmp_path / "in")
    out = tmp_path / "out"
    res = runner.invoke(app, ["parse", str(src), "--out", str(out), "--model", str(checkpoint), "--device", "cpu",
                              "--masks", "--probs", "--json"])
    assert res.exit_code == 1, res.output        # some inputs failed (exit code 1 since issue #21)
    assert "5 parsed, 0 skipped" in res.output and "2 failed" in res.output
    assert "corrupt.jpg" in res.output and "notes.jpg" in res.output
    for stem, size in [("gray", (40, 30)), ("rgba", (40, 30)), ("deep16", (40, 30)), ("palette", (40, 30)),
                       ("rotated", (30, 40))]:
        label = np.asarray(Image.open(out / f"{stem}.png"))
        assert label.shape == size, stem
        assert Image.open(out / f"{stem}.png").mode == "P"
        assert (out / f"{stem}_overlay.jpg").is_file()
        assert np.load(out / f"{stem}_probs.npy").shape == (7, *size)
        side = json.loads((out / f"{stem}.json").read_text())
        assert side["classes"] == list(get_meta("pascal_person_part").classes)
        masks = sorted((out / f"{stem}_masks").glob("*.png")) if (out / f"{stem}_masks").exists() else []
        assert len(masks) == len([c for c in np.unique(label) if c != 0])
    # a second run skips what exists; --overwrite redoes it
    res = runner.invoke(app, ["parse", str(src), "--out", str(out), "--model", str(checkpoint), "--device", "cpu"])
    assert res.exit_code == 1 and "0 parsed, 5 skipped" in res.output
    res = runner.invoke(app, ["parse", str(src / "gray.png"), "--out", str(out), "--model", str(checkpoint),
                              "--overwrite", "--device", "cpu"])
    assert res.exit_code == 0 and "1 parsed" in res.output


def test_parse_exits_nonzero_when_nothing_parsed(checkpoint, tmp_path):
    src = tmp_path / "bad"
    src.mkdir()
    (src / "a.jpg").write_text("nope")
    res = runner.invoke(app, ["parse", str(src), "--out", str(tmp_path / "o"), "--model", str(checkpoint)])
    assert res.exit_code == 1 and "1 failed" in res.output
    res = runner.invoke(app, ["parse", str(tmp_path / "missing*.png"), "--model", str(checkpoint)])
    assert res.exit_code == 2 and "no such file" in res.output


def test_huge_image_is_refused(checkpoint, tmp_path, monkeypatch):
    monkeypatch.setattr(image_io, "MAX_PIXELS", 100)
    Image.new("RGB", (20, 20)).save(tmp_path / "big.png")
    res = runner.invoke(app, ["parse", str(tmp_path / "big.png"), "--out", str(tmp_path / "o"),
                              "--model", str(checkpoint)])
    assert res.exit_code == 1 and "pixel limit" in res.output


def test_evaluate_ground_truth_scores_100_on_ccp_val(ccp_root, tmp_path):
    from hparse.data.readers import build_reader
    from hparse.io.image import write_label_png

    reader = build_reader("ccp", ccp_root, "val")
    for i in range(len(reader)):
        write_label_png(tmp_path / f"{reader.items[i].id}.png", reader[i]["label"])
    js = tmp_path / "scores.json"
    res = runner.invoke(app, ["evaluate", "--pred", str(tmp_path), "--data", "ccp", str(ccp_root), "--split", "val",
                              "--json", str(js)])
    assert res.exit_code == 0, res.output
    scores = json.loads(js.read_text())
    assert scores["miou"] == 1.0 and scores["pixel_acc"] == 1.0 and scores["f1"] == 1.0
    assert "100 images, 0 without prediction" in res.output
    # a missing prediction is counted, not skipped
    (tmp_path / f"{reader.items[0].id}.png").unlink()
    res = runner.invoke(app, ["evaluate", "--pred", str(tmp_path), "--data", "ccp", str(ccp_root), "--json", str(js)])
    assert "1 without prediction" in res.output and json.loads(js.read_text())["pixel_acc"] < 1.0


def test_evaluate_rejects_wrong_size_prediction(tmp_path):
    root = make_folder_dataset(tmp_path / "d", n=2)
    pred = tmp_path / "pred"
    pred.mkdir()
    for i in range(2):
        Image.fromarray(np.zeros((10, 10), np.uint8)).save(pred / f"{i:03d}.png")
    res = runner.invoke(app, ["evaluate", "--pred", str(pred), "--data", "folder", str(root), "--split", "train",
                              "--labels", "pascal_person_part"])
    assert res.exit_code == 2 and "original image size" in res.output


def test_labels_and_models_commands():
    res = runner.invoke(app, ["labels", "cihp"])
    assert res.exit_code == 0 and "torso-skin" in res.output and "right-arm" in res.output
    res = runner.invoke(app, ["labels"])
    assert "ccp->ccp15" in res.output and "lip->ppss" in res.output
    res = runner.invoke(app, ["labels", "nope"])
    assert res.exit_code != 0
    res = runner.invoke(app, ["models", "light"])
    assert res.exit_code == 0 and "ce2p_light_ccp" in res.output


def test_export_then_parse_with_slim_weights(checkpoint, tmp_path):
    slim = tmp_path / "slim.pt"
    res = runner.invoke(app, ["export", str(checkpoint), str(slim), "--half"])
    assert res.exit_code == 0 and slim.stat().st_size < checkpoint.stat().st_size
    import hparse

    full, half = hparse.load(checkpoint, device="cpu"), hparse.load(slim, device="cpu")
    img = np.random.default_rng(1).integers(0, 255, (40, 30, 3), dtype=np.uint8)
    assert (full.predict(img) == half.predict(img)).mean() > 0.98


def test_shipped_default_model_parses_examples(tmp_path):
    from hparse.api import SHIPPED

    assert SHIPPED["default"].is_file(), "the shipped weights are part of the package"
    examples = Path(__file__).resolve().parents[1] / "examples"
    img = sorted(examples.glob("*.jpg"))[0]
    res = runner.invoke(app, ["parse", str(img), "--out", str(tmp_path)])
    assert res.exit_code == 0, res.output
    label = np.asarray(Image.open(tmp_path / f"{img.stem}.png"))
    assert label.shape == np.asarray(Image.open(img)).shape[:2]
    assert label.max() < 15 and (label > 0).mean() > 0.05  # finds some person parts


def test_shipped_default_is_the_pretrained_model_robust_and_base_the_ones_before(tmp_path):
    """``default`` is CE2P's heads on an ImageNet EfficientNet-Lite0; ``robust`` the from-scratch scale-robust model
    it replaced and ``base`` the three-stage model before that. Same label set, asked for a larger input."""
    import hparse
    from hparse.engine.checkpoint import resolve_weights

    assert len({resolve_weights(n) for n in ("default", "robust", "base")}) == 3
    p = hparse.load("robust", backend="torch", long_side=512)
    assert p.meta.name == "ccp15" and p.predictor.long_side == 512
    best = {name: max(h["miou"] for h in torch.load(hparse.api.SHIPPED[name], weights_only=True)["history"])
            for name in ("default", "robust", "base")}
    assert best["default"] > 0.5 > best["robust"] > 0.46 > best["base"] > 0.4
    shipped = torch.load(hparse.api.SHIPPED["default"], weights_only=True)["config"]["model"]["backbone"]
    assert shipped["name"] == "efficientnet_lite0"
    img = sorted((Path(__file__).resolve().parents[1] / "examples").glob("*.jpg"))[0]
    for name in ("default", "robust"):
        label = hparse.load(name, backend="torch").predict(img)
        assert label.shape == np.asarray(Image.open(img)).shape[:2] and (label > 0).mean() > 0.05, name


def test_people_option_parses_small_people_again_and_refuses_what_it_cannot_give(tmp_path):
    """``--people MODEL``: labels only (``--probs`` is a usage error), an instance model only, and a folder parsed
    without it is redone with it (the detector is part of what decides the labels)."""
    img = str(sorted((Path(__file__).resolve().parents[1] / "examples").glob("*.jpg"))[0])
    out = str(tmp_path / "out")
    res = runner.invoke(app, ["parse", img, "--out", out, "--people", "unified_cpu_ccpmulti", "--probs"])
    assert res.exit_code == 2 and "probabilities" in res.output
    res = runner.invoke(app, ["parse", img, "--out", out, "--people", "default"])
    assert res.exit_code == 2 and "instance model" in res.output
    assert runner.invoke(app, ["parse", img, "--out", out, "--backend", "torch"]).exit_code == 0
    res = runner.invoke(app, ["parse", img, "--out", out, "--backend", "torch", "--people", "unified_cpu_ccpmulti"])
    assert res.exit_code == 0 and "1 parsed, 0 skipped" in res.output
