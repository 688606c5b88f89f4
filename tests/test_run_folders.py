"""Run folders and checkpoints refuse what would lose or mix work, with one line naming the problem:
resuming under another config, --no-auto-resume into a run, warm starts by shipped name, and checkpoints
of the wrong architecture, shapes or label set (through ``hparse train`` / ``hparse parse`` / the API)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import yaml
from typer.testing import CliRunner

import hparse
import hparse.engine.checkpoint
from hparse.cli import app
from hparse.engine.checkpoint import load_checkpoint
from hparse.engine.trainer import Trainer
from hparse.errors import HParseError
from tests.test_engine import make_folder_dataset, tiny_config


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return make_folder_dataset(tmp_path_factory.mktemp("runs_data"))


@pytest.fixture(scope="module")
def finished(root, tmp_path_factory):
    """A finished one-epoch run and its config file."""
    out = tmp_path_factory.mktemp("run")
    cfg = tiny_config(root, epochs=1)
    (out / "cfg.yaml").write_text(yaml.safe_dump({k: v for k, v in cfg.items() if k != "name"}))
    Trainer(cfg, out / "run", device="cpu", progress=False).train()
    return out


def _train(args):
    return CliRunner().invoke(app, ["train", *map(str, args)])


def _one_line_error(res, *needles):
    assert res.exit_code != 0
    assert "Traceback" not in res.output
    lines = [line for line in res.output.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, res.output
    for n in needles:
        assert n in lines[0], lines[0]


def test_resume_under_another_config_is_refused_naming_the_keys(finished, tmp_path):
    res = _train([finished / "cfg.yaml", "--out", finished / "run", "train.lr=0.5", "train.seed=4", "train.epochs=2"])
    _one_line_error(res, "train.lr", "train.seed", "--resume-anyway")
    assert load_checkpoint(finished / "run" / "last.pt")["epoch"] == 1  # untouched


def test_resume_anyway_continues(finished, tmp_path):
    import shutil

    run = tmp_path / "copy"
    shutil.copytree(finished / "run", run)
    res = _train([finished / "cfg.yaml", "--out", run, "train.epochs=2", "--resume-anyway"])
    assert res.exit_code == 0, res.output
    assert load_checkpoint(run / "last.pt")["epoch"] == 2


def test_settings_that_do_not_change_the_run_may_differ(finished, tmp_path):
    import shutil

    run = tmp_path / "copy"
    shutil.copytree(finished / "run", run)
    res = _train([finished / "cfg.yaml", "--out", run, "train.workers=1", "eval.long_side=40"])
    assert res.exit_code == 0, res.output


def test_no_auto_resume_into_a_run_is_refused(finished):
    before = (finished / "run" / "last.pt").read_bytes()
    res = _train([finished / "cfg.yaml", "--out", finished / "run", "--no-auto-resume"])
    _one_line_error(res, "holds a run", "--no-auto-resume")
    assert (finished / "run" / "last.pt").read_bytes() == before


def test_init_from_accepts_the_shipped_name(root, tmp_path):
    cfg = tiny_config(root, max_steps=1, init_from="default")
    with pytest.raises(HParseError, match="label set 'ccp15', not 'pascal_person_part'"):
        Trainer(cfg, tmp_path / "r", device="cpu", progress=False)


def _save(tmp_path, ck: dict, name: str):
    path = tmp_path / name
    torch.save(ck, path)
    return path


def _parse(ck_path, tmp_path):
    img = tmp_path / "x.png"
    from PIL import Image

    Image.fromarray(np.zeros((20, 16, 3), np.uint8)).save(img)
    return CliRunner().invoke(app, ["parse", str(img), "--model", str(ck_path), "--out", str(tmp_path / "o")])


@pytest.mark.parametrize("case, needle", [
    ("missing_label_set", "names no label set"),
    ("unknown_label_set", "unknown label set 'nope'"),
    ("wrong_shapes", "weight shapes do not fit"),
    ("wrong_architecture", "not weights of this CE2P"),
    ("nan_weights", "NaN or infinity"),
    ("config_of_another_model", "its config does not build a model"),
])
def test_foreign_checkpoints_get_one_line_naming_what_does_not_fit(finished, tmp_path, case, needle):
    ck = load_checkpoint(finished / "run" / "last.pt")
    if case == "missing_label_set":
        del ck["label_set"]
    elif case == "unknown_label_set":
        ck["label_set"] = "nope"
    elif case == "wrong_shapes":
        ck["label_set"] = "lip"  # 20 classes: the classifier weights are 7-way
    elif case == "wrong_architecture":
        ck["model"] = {f"other.{k}": v for k, v in ck["model"].items()}
    elif case == "nan_weights":
        k = next(k for k, v in ck["model"].items() if v.is_floating_point())
        ck["model"][k] = torch.full_like(ck["model"][k], float("nan"))
    else:
        ck["config"]["model"]["ppm_chh"] = 3
    path = _save(tmp_path, ck, f"{case}.pt")
    with pytest.raises(HParseError, match=needle):
        hparse.load(path, device="cpu")
    _one_line_error(_parse(path, tmp_path), needle)


def test_init_keys_warm_starts_only_the_renamed_prefix(root, tmp_path):
    """A backbone warm start from another architecture: the shipped robust model's backbone into a model whose backbone
    lives under another name; everything else stays as built, and a prefix that selects nothing is refused."""
    from hparse.engine.checkpoint import load_weights
    from hparse.labels import get_meta
    from hparse.models import build_model
    from tests.test_engine import TINY_MODEL

    meta = get_meta("pascal_person_part")
    model = build_model({**TINY_MODEL, "backbone": {"name": "resnet18", "width": 0.5, "output_stride": 16}}, meta)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    load_weights(model, "robust", meta, {"trunk.backbone.": "trunk.backbone."})
    shipped = load_checkpoint(hparse.engine.checkpoint.resolve_weights("robust"))["model"]
    for k, v in model.state_dict().items():
        if k.startswith("trunk.backbone."):
            assert torch.equal(v, shipped[k].to(v.dtype)), k
        else:
            assert torch.equal(v, before[k]), k
    with pytest.raises(HParseError, match="not in this model"):
        load_weights(model, "robust", meta, {"trunk.": "body."})
