"""The model contract hosts detectors: a toy instance model (boxes + per-person maps, its own loss dict) trains
through ``hparse train``, validates through the in-memory instance evaluator and keeps ``best.pt`` by AP^p."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import scipy.ndimage as ndi
import torch
import torch.nn.functional as F
import yaml
from torch import nn
from typer.testing import CliRunner

from hparse.cli import app
from hparse.engine.checkpoint import load_checkpoint
from hparse.models import MODELS
from hparse.models.meta_arch import InstanceParsingModel
from hparse.structures import PersonInstances
from tests.fixtures_layouts import make_cihp


class ToyInstanceParser(InstanceParsingModel):
    """Per-pixel part logits and a person logit; people are the connected components of the person mask."""

    def __init__(self, meta, loss=None, width: int = 8):
        super().__init__(meta, loss)
        self.body = nn.Sequential(nn.Conv2d(3, width, 3, padding=1), nn.ReLU(),
                                  nn.Conv2d(width, self.num_classes + 1, 1))

    def network(self, x):
        y = self.body(x)
        return {"parts": y[:, :-1], "person": y[:, -1]}

    def losses(self, outputs, batch):
        fg = (torch.as_tensor(batch["human_ids"]) > 0).float()
        return {"parts": F.cross_entropy(outputs["parts"], batch["label"].long(), ignore_index=255),
                "person": F.binary_cross_entropy_with_logits(outputs["person"], fg)}

    def inference(self, outputs, batch):
        results = []
        for i, (h, w) in enumerate(batch["image_sizes"]):
            prob = outputs["person"][i, :h, :w].sigmoid().numpy()
            people, n = ndi.label(prob > 0.5)
            parts = outputs["parts"][i, :, :h, :w].argmax(0).numpy().astype(np.uint8)
            maps = [np.where(people == k, parts, 0).astype(np.uint8) for k in range(1, n + 1)]
            scores = [float(prob[people == k].mean()) for k in range(1, n + 1)]
            results.append(PersonInstances.from_person_labels(maps, scores, image_size=(h, w)))
        return results


if "toy_instance" not in MODELS:
    MODELS.register("toy_instance")(ToyInstanceParser)


def test_toy_instance_model_trains_validates_and_keeps_best_by_ap_p(tmp_path):
    make_cihp(tmp_path / "cihp")
    cfg = {"model": {"type": "toy_instance", "width": 8},
           "data": {"layout": "cihp", "root": str(tmp_path / "cihp"), "train_split": "train", "val_split": "val",
                    "train_transforms": [{"type": "HFlip", "p": 0.5}, {"type": "ToTensor"}]},
           "train": {"optimizer": "adam", "lr": 0.05, "batch_size": 2, "epochs": 4, "val_every": 1, "workers": 0,
                     "warmup_iters": 0},
           "eval": {"long_side": 24, "evaluators": ["instance"], "best_metric": "instance/APp_vol"}}
    path = tmp_path / "toy.yaml"
    path.write_text(yaml.safe_dump(cfg))
    res = CliRunner().invoke(app, ["train", str(path), "--out", str(tmp_path / "run")])
    assert res.exit_code == 0, res.output
    history = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [h["epoch"] for h in history] == [1, 2, 3, 4]
    values = [h["instance/APp_vol"] for h in history]
    best = load_checkpoint(tmp_path / "run" / "best.pt")
    assert best["best"] == pytest.approx(max(values))
    assert best["epoch"] == history[int(np.argmax(values))]["epoch"]
    for key in ("instance/APp50", "instance/PCP50", "instance/APr_vol", "instance/APh", "instance/miou"):
        assert all(key in h for h in history)


def test_mistyped_override_fails_fast_naming_the_key():
    res = subprocess.run([sys.executable, "-m", "hparse.cli", "train", "ce2p_light_ccp", "train.bacth_size=4"],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode != 0
    assert "bacth_size" in res.stderr and "batch_size" in res.stderr, res.stderr
    assert "Traceback" not in res.stderr


class _Scripted:
    """An evaluator result whose AP^p follows a script, one value per validation."""

    def __init__(self, value: float):
        self.value = value

    def summary(self) -> dict:
        return {"APp_vol": self.value}

    def to_dict(self) -> dict:
        return self.summary()

    def format_table(self) -> str:
        return str(self.value)


def test_best_pt_follows_the_best_metric_up_and_not_down(tmp_path):
    """The validation hook keeps best.pt at the epoch whose best metric peaked (0.1, 0.5, 0.3, 0.2 -> epoch 2)."""
    from hparse.evaluation import EVALUATORS, Evaluator

    script = iter([0.1, 0.5, 0.3, 0.2])
    if "scripted_ap" not in EVALUATORS:
        @EVALUATORS.register("scripted_ap")
        class ScriptedAP(Evaluator):
            output_keys = ("instances",)

            def process_image(self, sample, output):
                pass

            def result(self):
                return _Scripted(next(self.script))
    EVALUATORS.get("scripted_ap").script = script
    make_cihp(tmp_path / "cihp")
    cfg = {"model": {"type": "toy_instance", "width": 8},
           "data": {"layout": "cihp", "root": str(tmp_path / "cihp"), "train_split": "train", "val_split": "val",
                    "train_transforms": [{"type": "ToTensor"}]},
           "train": {"optimizer": "adam", "lr": 0.05, "batch_size": 2, "epochs": 4, "workers": 0},
           "eval": {"long_side": 24, "evaluators": ["scripted_ap"], "best_metric": "scripted_ap/APp_vol"}}
    (tmp_path / "toy.yaml").write_text(yaml.safe_dump(cfg))
    res = CliRunner().invoke(app, ["train", str(tmp_path / "toy.yaml"), "--out", str(tmp_path / "run")])
    assert res.exit_code == 0, res.output
    best, last = load_checkpoint(tmp_path / "run" / "best.pt"), load_checkpoint(tmp_path / "run" / "last.pt")
    assert best["epoch"] == 2 and best["best"] == pytest.approx(0.5)
    assert last["epoch"] == 4 and not all(torch.equal(best["model"][k], v) for k, v in last["model"].items())
