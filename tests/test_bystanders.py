"""``hparse data mark-bystanders``: people a single-person dataset leaves unlabelled become ignore (255)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from hparse.cli import app
from hparse.data.bystanders import bystander_mask, mark_dataset
from hparse.data.readers import build_reader
from hparse.errors import ConfigError, DataError
from tests.test_compose import make_ccp_like

runner = CliRunner()


def scene() -> tuple[np.ndarray, np.ndarray]:
    """A labelled person (class 4) at columns 10-19 and an unlabelled one at columns 40-45 that a parser finds."""
    label = np.zeros((40, 60), np.uint8)
    label[5:35, 10:20] = 4
    label[0:2, 0:60] = 255
    prob = np.full((40, 60), 0.05, np.float32)
    prob[5:35, 9:21] = 0.9     # the labelled person, a little wider than its label
    prob[10:30, 40:46] = 0.8   # the passer-by
    return label, prob


def test_bystander_mask_marks_the_unlabelled_person_only():
    label, prob = scene()
    mask = bystander_mask(label, prob, threshold=0.3, margin=3)
    assert mask[10:30, 40:46].all()                      # the passer-by
    assert mask[8:32, 38].all() and not mask[20, 36]     # grown by the margin, no further
    assert not mask[:, :24].any()                        # the labelled person and the ring around it
    assert not (mask & (label != 0)).any()               # only background pixels are marked
    assert not bystander_mask(label, prob, threshold=0.95, margin=3).any()
    assert bystander_mask(label, prob, margin=0).sum() == 20 * 6 + 2 * 30  # no ring: the soft edges count too
    with pytest.raises(ValueError, match="differ"):
        bystander_mask(label, prob[:10])


def half_is_a_person(image: np.ndarray) -> np.ndarray:
    """A stand-in parser: the right half of every image is a person."""
    prob = np.zeros(image.shape[:2], np.float32)
    prob[:, image.shape[1] // 2:] = 1.0
    return prob


def test_mark_dataset_writes_a_cihp_copy_and_resumes(tmp_path):
    src = make_ccp_like(tmp_path / "ccp")
    out = tmp_path / "marked"
    report = mark_dataset("ccp", src, out, half_is_a_person, "half", margin=2, progress=False)
    assert report.images == {"train": 6} and "6 images" in report.summary()
    meta = json.loads((out / "meta.json").read_text())
    assert meta["label_set"] == "ccp15" and meta["model"] == "half" and meta["margin"] == 2
    source = build_reader("ccp", src, "train")
    copy = build_reader("cihp", out, "train")
    assert copy.meta.name == "ccp15" and copy.ids == source.ids
    for k in range(len(source)):
        a, b = source[k], copy[k]
        assert np.array_equal(a["image"], b["image"])    # the JPEG bytes are copied
        changed = a["label"] != b["label"]
        assert (b["label"][changed] == 255).all() and (a["label"][changed] == 0).all()
        assert not changed[:, : a["label"].shape[1] // 2 - 2].any()  # the right half, grown by the margin
    assert sum(report.marked_images.values()) >= 1
    # an interrupted run is completed; other settings in the same folder are refused
    (out / "Training" / "Images" / f"{source.ids[0]}.jpg").unlink()
    again = mark_dataset("ccp", src, out, half_is_a_person, "half", margin=2, progress=False)
    assert again.images == {"train": 6} and (out / "Training" / "Images" / f"{source.ids[0]}.jpg").is_file()
    with pytest.raises(DataError, match="other settings"):
        mark_dataset("ccp", src, out, half_is_a_person, "half", threshold=0.5, margin=2, progress=False)
    with pytest.raises(ConfigError, match="threshold"):
        mark_dataset("ccp", src, tmp_path / "x", half_is_a_person, "half", threshold=1.5)
    with pytest.raises(ConfigError, match="differ"):
        mark_dataset("ccp", src, src, half_is_a_person, "half")
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "keep.txt").write_text("mine")
    with pytest.raises(DataError, match="not marked data"):
        mark_dataset("ccp", src, tmp_path / "busy", half_is_a_person, "half")


def test_train_data_replaces_the_training_split_only(tmp_path):
    """``data.train_data`` trains on the marked copy while validation still reads the source."""
    from hparse.config import load_config
    from hparse.engine.trainer import Trainer

    src = make_ccp_like(tmp_path / "ccp")
    out = tmp_path / "marked"
    mark_dataset("ccp", src, out, half_is_a_person, "half", progress=False)
    cfg_path = tmp_path / "cfg.yaml"
    cfg_path.write_text(yaml.safe_dump({
        "_base_": "ce2p_light_ccp.yaml",
        "data": {"root": str(src), "train_data": {"layout": "cihp", "root": str(out), "split": "train"}},
        "train": {"batch_size": 2, "device": "cpu"},
    }))
    trainer = Trainer(load_config(cfg_path), out_dir=tmp_path / "run", progress=False)
    from hparse.engine.hooks import ValidationHook

    assert Path(trainer.train_reader.root) == out and len(trainer.train_reader) == 6
    (validation,) = [h for h in trainer.hooks if isinstance(h, ValidationHook)]
    assert Path(validation.reader.root) == src and validation.reader.split == "val"


def test_cli_mark_bystanders_with_the_default_parser(tmp_path):
    src = make_ccp_like(tmp_path / "ccp", n_train=2, n_val=1)
    out = tmp_path / "marked"
    res = runner.invoke(app, ["data", "mark-bystanders", "ccp", str(src), str(out), "--no-progress"])
    assert res.exit_code == 0, res.output
    assert "train: 2 images" in res.output and (out / "Training" / "Category_ids").is_dir()
    res = runner.invoke(app, ["data", "mark-bystanders", "ccp", str(src), str(out), "--threshold", "2"])
    assert res.exit_code != 0 and "threshold" in res.output
