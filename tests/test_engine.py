"""Trainer (exact resume), predictor TTA, checkpoints and the Python API on tiny generated data."""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

import hparse
from hparse import config as C
from hparse.engine.checkpoint import load_checkpoint
from hparse.engine.inference import Predictor
from hparse.engine.trainer import Trainer
from hparse.errors import HParseError
from hparse.labels import get_meta
from hparse.models.meta_arch import ParsingModel

TINY_MODEL = {"type": "ce2p", "backbone": {"name": "resnet18", "width": 0.125, "output_stride": 16},
              "ppm_ch": 16, "ppm_stage_ch": 8, "edge_ch": 8, "decoder_ch": 16, "fusion_ch": 16, "low_reduce": 8}


def make_folder_dataset(root: Path, n: int = 8, size=(48, 32), seed: int = 0) -> Path:
    """A 'folder' layout dataset of blocky people with pascal_person_part labels."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    h, w = size
    for i in range(n):
        label = np.zeros((h, w), np.uint8)
        x0 = int(rng.integers(2, w // 3))
        label[4:12, x0 + 4:x0 + 10] = 1  # head
        label[12:28, x0:x0 + 14] = 2  # torso
        label[28:44, x0 + 1:x0 + 6] = 5
        label[28:44, x0 + 8:x0 + 13] = 6
        img = get_meta("pascal_person_part").palette()[label].astype(np.int16)
        img = np.clip(img + rng.integers(-20, 20, img.shape), 0, 255).astype(np.uint8)
        Image.fromarray(img).save(root / "images" / f"{i:03d}.png")
        Image.fromarray(label).save(root / "labels" / f"{i:03d}.png")
    (root / "train.txt").write_text("\n".join(f"{i:03d}" for i in range(n)))
    (root / "val.txt").write_text("\n".join(f"{i:03d}" for i in range(n // 2)))
    return root


def tiny_config(root: Path, **train) -> dict:
    """A loaded (validated, defaults filled) config, as the trainer needs."""
    return C.validate_config({
        "name": "tiny",
        "model": TINY_MODEL,
        "loss": [{"type": "ce"}, {"type": "ce", "pred": "parsing_aux", "weight": 0.5},
                 {"type": "balanced_edge_ce", "pred": "edge", "target": "edge"}],
        "data": {"layout": "folder", "root": str(root), "label_set": "pascal_person_part",
                 "train_split": "train", "val_split": "val", "input_size": [32, 32],
                 "train_transforms": [{"type": "RandomAffine", "size": [32, 32], "scale": 0.2, "rotation": 10},
                                      {"type": "HFlip", "p": 0.5}, {"type": "EdgeTarget"}, {"type": "ToTensor"}]},
        "eval": {"long_side": 48},
        "train": {"optimizer": "sgd", "lr": 0.05, "batch_size": 2, "epochs": 2, "workers": 0,
                  "checkpoint_every": 1, "val_every": 1, "seed": 3, **train},
    })


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory) -> Path:
    return make_folder_dataset(tmp_path_factory.mktemp("tiny"))


def _weights(path: Path) -> dict:
    return load_checkpoint(path)["model"]


def test_resume_after_interrupt_matches_uninterrupted(tiny_root, tmp_path):
    torch.set_num_threads(1)
    full = Trainer(tiny_config(tiny_root), tmp_path / "full", device="cpu", progress=False)
    full.train()
    part = Trainer(tiny_config(tiny_root, max_steps=3), tmp_path / "part", device="cpu", progress=False)
    part.train()  # stops mid-epoch 1 (4 steps per epoch)
    assert load_checkpoint(tmp_path / "part" / "last.pt")["batch_in_epoch"] == 3
    resumed = Trainer(tiny_config(tiny_root), tmp_path / "part", device="cpu", progress=False)
    resumed.resume(tmp_path / "part" / "last.pt")
    resumed.train()
    a, b = _weights(tmp_path / "full" / "last.pt"), _weights(tmp_path / "part" / "last.pt")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert (tmp_path / "full" / "best.pt").is_file() and (tmp_path / "full" / "config.yaml").is_file()
    assert list((tmp_path / "full" / "tb").glob("events.out.tfevents.*"))
    hist = load_checkpoint(tmp_path / "full" / "last.pt")["history"]
    assert [h["epoch"] for h in hist] == [1, 2] and 0 <= hist[-1]["miou"] <= 1
    assert (tmp_path / "full" / "val_curves.png").stat().st_size > 1000


def test_killed_training_process_resumes_to_same_weights(tiny_root, tmp_path):
    """SIGKILL a real ``hparse train`` process mid-epoch, run it again: same weights as one clean run."""
    cfg_path = tmp_path / "tiny.yaml"
    cfg = tiny_config(tiny_root, epochs=20, val_every=100)
    cfg_path.write_text(yaml.safe_dump(cfg))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "hparse.cli", "train", str(cfg_path)]
    subprocess.run(cmd + ["--out", str(tmp_path / "clean")], check=True, env=env, capture_output=True)
    proc = subprocess.Popen(cmd + ["--out", str(tmp_path / "killed")], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    ck = tmp_path / "killed" / "last.pt"
    deadline = time.time() + 120
    while time.time() < deadline:
        if ck.is_file() and load_checkpoint(ck)["step"] >= 6:  # mid-epoch 2 of 20
            break
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    state = load_checkpoint(ck)
    assert state["step"] < 80, "the run finished before it could be killed"
    subprocess.run(cmd + ["--out", str(tmp_path / "killed")], check=True, env=env, capture_output=True)
    a, b = _weights(tmp_path / "clean" / "last.pt"), _weights(ck)
    assert all(torch.equal(a[k], b[k]) for k in a)


class SideModel(ParsingModel):
    """Class 14 scores high on the image's left half, 15 on the right half (a 'left arm' detector)."""

    def network(self, x):
        b, _, h, w = x.shape
        out = torch.zeros(b, 20, h, w)
        left = (torch.arange(w) < w // 2).float()
        out[:, 14] = left
        out[:, 15] = 1 - left
        out[:, 0] = 0.5
        return {"parsing": out}


def test_flip_tta_swaps_left_right_channels():
    img = np.zeros((32, 64, 3), np.uint8)
    meta = get_meta("lip")
    assert meta.flip_permutation()[14:16] == [15, 14]
    no_pairs = dataclasses.replace(meta, flip_pairs=())  # the same classes, no left/right pairs to swap
    plain = Predictor(SideModel(meta), long_side=64).predict([img])[0]
    tta = Predictor(SideModel(meta), long_side=64, flip=True).predict([img])[0]
    noswap = Predictor(SideModel(no_pairs), long_side=64, flip=True).predict([img])[0]
    assert (plain[:, :32] == 14).all() and (plain[:, 32:] == 15).all()
    assert np.array_equal(tta, plain)  # flipped pass, swapped back: agrees everywhere
    assert not np.array_equal(noswap, plain)  # without the swap left and right get mixed up


def test_predictor_batch_matches_single_and_sizes():
    torch.manual_seed(0)
    from hparse.models import build_model

    model = build_model(TINY_MODEL, get_meta("pascal_person_part")).eval()
    images = [np.random.default_rng(i).integers(0, 255, (h, w, 3), dtype=np.uint8)
              for i, (h, w) in enumerate([(50, 30), (31, 47), (64, 64)])]
    p = Predictor(model, long_side=64)
    single = [p.predict([im])[0] for im in images]
    batch = p.predict(images)
    for s, b, im in zip(single, batch, images):
        assert s.shape == im.shape[:2] and b.shape == im.shape[:2]
        assert (s == b).mean() > 0.95  # padding to a common size changes borders slightly


@pytest.fixture(scope="module")
def tiny_checkpoint(tiny_root, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ck")
    Trainer(tiny_config(tiny_root, epochs=1), out, device="cpu", progress=False).train()
    return out / "last.pt"


def test_api_load_and_predict(tiny_checkpoint, tiny_root):
    parser = hparse.load(tiny_checkpoint, device="cpu")
    assert parser.classes == get_meta("pascal_person_part").classes
    path = tiny_root / "images" / "000.png"
    label = parser.predict(path)
    assert label.shape == (48, 32) and label.dtype == np.uint8
    labels = parser.predict([path, Image.open(path), np.asarray(Image.open(path))])
    assert all(np.array_equal(label, x) for x in labels)
    label2, probs = parser.predict(path, return_probs=True)
    assert probs.shape == (7, 48, 32) and np.allclose(probs.astype(np.float32).sum(0), 1, atol=5e-3)
    assert np.array_equal(label2, probs.argmax(0))


def test_load_rejects_bad_checkpoints(tmp_path):
    with pytest.raises(HParseError, match="neither a shipped model"):
        hparse.load(tmp_path / "missing.pt")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(HParseError, match="not a readable"):
        hparse.load(bad)


def test_packaged_configs_build():
    """Every packaged config, light and paper size, builds its model for its own label set with its loss list
    (on the meta device: the modules and shapes without initialising ResNet-101s' weights)."""
    from hparse.models import build_model

    for name in C.list_configs():
        cfg = C.load_config(name)
        assert cfg["model"]["type"] and cfg["data"]["layout"]
        with torch.device("meta"):
            model = build_model(cfg["model"], get_meta(cfg["data"]["label_set"]), loss=cfg["loss"])
        assert sum(p.numel() for p in model.parameters()) > 0, name


def test_init_from_loads_weights_only(tiny_checkpoint, tiny_root, tmp_path):
    t = Trainer(tiny_config(tiny_root, init_from=str(tiny_checkpoint)), tmp_path, device="cpu", progress=False)
    ref = load_checkpoint(tiny_checkpoint)["model"]
    assert all(torch.equal(t.model.state_dict()[k], ref[k]) for k in ref)
    assert t.step == 0 and t.epoch == 0
