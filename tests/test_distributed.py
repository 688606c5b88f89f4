"""torchrun with two CPU processes (Gloo) on a tiny config: the same run as one process with the same global
batch (loss curve, weights, validation scores), and a run killed with SIGKILL mid-epoch and restarted with the
same command ends with the weights of an uninterrupted one. GroupNorm (``model.norm: gn``) keeps the
computation independent of how a batch is split; BatchNorm would differ by its per-process statistics."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from hparse.engine.checkpoint import load_checkpoint
from tests.conftest import free_port
from tests.test_engine import TINY_MODEL, make_folder_dataset

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def _config(path: Path, root: Path, **train) -> Path:
    cfg = {"model": {**TINY_MODEL, "norm": "gn"},
           "loss": [{"type": "ce"}, {"type": "ce", "pred": "parsing_aux", "weight": 0.5},
                    {"type": "balanced_edge_ce", "pred": "edge", "target": "edge"}],
           "data": {"layout": "folder", "root": str(root), "label_set": "pascal_person_part",
                    "train_split": "train", "val_split": "val",
                    "train_transforms": [{"type": "RandomAffine", "size": [32, 32], "scale": 0.2, "rotation": 10},
                                         {"type": "HFlip", "p": 0.5}, {"type": "EdgeTarget"},
                                         {"type": "ToTensor"}]},
           "eval": {"long_side": 48},
           "train": {"optimizer": "sgd", "lr": 0.05, "batch_size": 2, "epochs": 2, "workers": 0, "seed": 3,
                     "checkpoint_every": 1, "val_every": 1, **train}}
    path.write_text(yaml.safe_dump(cfg))
    return path


def _torchrun(cfg: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
            "--master_port", str(free_port()), "-m", "hparse", "train", str(cfg), "--out", str(out),
            "--device", "cpu"]


def _run(cmd: list[str]) -> None:
    res = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-4000:]


def _losses(run: Path) -> list[float]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run / "tb"))
    acc.Reload()
    return [e.value for e in sorted(acc.Scalars("train/loss"), key=lambda e: e.step)]


def _scores(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ddp")
    root = make_folder_dataset(tmp / "data")
    two = _config(tmp / "two.yaml", root)
    one = _config(tmp / "one.yaml", root, accumulate=2)  # the same global batch in one process
    _run(_torchrun(two, tmp / "two"))
    _run([sys.executable, "-m", "hparse", "train", str(one), "--out", str(tmp / "one"), "--device", "cpu"])
    return tmp, two


def test_two_processes_train_as_one_with_the_same_global_batch(runs):
    tmp, _ = runs
    one, two = tmp / "one", tmp / "two"
    assert _losses(two) == pytest.approx(_losses(one), rel=1e-4)
    a, b = load_checkpoint(one / "last.pt"), load_checkpoint(two / "last.pt")
    assert a["step"] == b["step"] == 4 and b["world_size"] == 2
    for k, v in a["model"].items():
        torch.testing.assert_close(b["model"][k], v, rtol=1e-4, atol=1e-5, msg=k)
    sa, sb = _scores(one), _scores(two)
    assert [s["epoch"] for s in sb] == [1, 2]  # one writer: no duplicated records
    for x, y in zip(sa, sb):
        assert y["miou"] == pytest.approx(x["miou"], abs=1e-6)
        assert y["pixel_acc"] == pytest.approx(x["pixel_acc"], abs=1e-6)


def test_killed_two_process_run_resumes_exactly(runs):
    tmp, cfg = runs
    out = tmp / "killed"
    proc = subprocess.Popen(_torchrun(cfg, out), env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        deadline = time.time() + 240
        while time.time() < deadline:  # wait for a mid-run checkpoint (step 1 of 4: mid first epoch)
            last = out / "last.pt"
            if last.is_file() and load_checkpoint(last)["step"] >= 1:
                break
            time.sleep(0.05)
        else:
            pytest.fail("no checkpoint appeared")
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
    assert load_checkpoint(out / "last.pt")["step"] < 4
    _run(_torchrun(cfg, out))  # the same command again: resumes from last.pt
    a, b = load_checkpoint(tmp / "two" / "last.pt"), load_checkpoint(out / "last.pt")
    assert b["step"] == 4
    for k, v in a["model"].items():
        assert torch.equal(b["model"][k], v), k


def test_two_processes_parse_a_folder_byte_identically(tmp_path):
    src = Path(__file__).resolve().parent.parent / "examples"
    cmd = ["-m", "hparse", "parse", str(src), "--device", "cpu", "--backend", "torch", "--json"]
    _run([sys.executable, *cmd, "--out", str(tmp_path / "one")])
    _run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
          "--master_port", str(free_port()), *cmd, "--out", str(tmp_path / "two")])
    one = sorted(p.relative_to(tmp_path / "one") for p in (tmp_path / "one").rglob("*") if p.is_file())
    two = sorted(p.relative_to(tmp_path / "two") for p in (tmp_path / "two").rglob("*") if p.is_file())
    assert one == two and len(one) >= 12
    for rel in one:
        assert (tmp_path / "one" / rel).read_bytes() == (tmp_path / "two" / rel).read_bytes(), rel
