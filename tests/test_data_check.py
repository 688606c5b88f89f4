"""``hparse data check``: problems are collected, everything else is still summarised."""

from __future__ import annotations

import json

import numpy as np
from typer.testing import CliRunner

from hparse.cli import app
from hparse.data.check import check_dataset

from .fixtures_layouts import H, W, make_atr, make_pascal


def test_check_counts_a_corrupt_file_and_reports_the_rest(tmp_path):
    ds = make_pascal(tmp_path)
    bad = tmp_path / "JPEGImages" / f"{ds.ids['train'][1]}.jpg"
    bad.write_bytes(b"\x00garbage" * 20)
    rep = check_dataset("pascal_person_part", tmp_path, progress=False)
    assert not rep.ok and len(rep.problems) == 1
    p = rep.problems[0]
    assert (p.split, p.id) == ("train", ds.ids["train"][1]) and str(bad) in p.message
    d = json.loads(json.dumps(rep.to_dict()))
    assert d["samples"] == 6 and d["label_set"] == "pascal_person_part"
    assert (d["splits"]["train"]["samples"], d["splits"]["train"]["loaded"]) == (4, 3)
    assert d["splits"]["val"]["loaded"] == 2
    good = [ds.truth[i]["label"] for s in ("train", "val") for i in ds.ids[s] if i != p.id]
    expect = np.bincount(np.concatenate([g.ravel() for g in good]), minlength=7)
    assert [c["pixels"] for c in d["classes"]] == expect.tolist()
    assert abs(sum(c["percent"] for c in d["classes"]) - 100) < 1e-6
    assert d["splits"]["val"]["image_size"]["most_common"] == [{"height": H, "width": W, "count": 2}]
    assert d["ignore_pixels"] == 0 and d["classes"][0]["name"] == "background"
    rep.print()  # the rich tables render


def test_check_splits_missing_files_and_aggregate(tmp_path):
    ds = make_pascal(tmp_path / "p")
    (tmp_path / "p" / "SegmentationPart" / f"{ds.ids['val'][0]}.png").unlink()
    rep = check_dataset("pascal_person_part", tmp_path / "p", progress=False)
    assert list(rep.splits) == ["train"] and rep.problems[0].split == "val"
    assert "1 file(s)" in rep.problems[0].message
    rep = check_dataset("pascal_person_part", tmp_path / "p", splits=["train", "test"], progress=False)
    assert "unknown split" in rep.problems[0].message
    make_atr(tmp_path / "a", original=True)  # no split lists: checks split "all"
    rep = check_dataset("atr", tmp_path / "a", progress=False)
    assert rep.ok and list(rep.splits) == ["all"] and rep.splits["all"].samples == 5
    rep = check_dataset("atr", tmp_path / "a", label_set="lip", progress=False)
    assert rep.label_set == "lip" and len(rep.to_dict()["classes"]) == 20
    assert not check_dataset("atr", tmp_path / "nowhere", progress=False).ok


def test_check_cli(tmp_path):
    make_pascal(tmp_path / "d")
    runner = CliRunner()
    out = tmp_path / "r.json"
    res = runner.invoke(app, ["data", "check", "pascal_person_part", str(tmp_path / "d"), "--json", str(out),
                              "--no-progress"])
    assert res.exit_code == 0, res.output
    assert "6 samples" in res.output and json.loads(out.read_text())["ok"]
    (tmp_path / "d" / "JPEGImages" / "2008_000000.jpg").write_text("not a jpeg")
    res = runner.invoke(app, ["data", "check", "pascal_person_part", str(tmp_path / "d"), "-s", "train",
                              "--no-progress"])
    assert res.exit_code == 1 and "2008_000000.jpg" in res.output
    res = runner.invoke(app, ["data", "check", "nolayout", str(tmp_path)])
    assert res.exit_code == 2 and "unknown dataset layout" in res.output


def test_check_real_data(ccp_root, cihp_samples_root):
    rep = check_dataset("ccp", ccp_root, splits=["val"], progress=False)
    d = rep.to_dict()
    assert rep.ok and d["samples"] == 100 and d["label_set"] == "ccp15" and len(d["classes"]) == 15
    sz = d["splits"]["val"]["image_size"]
    assert sz["width"]["min"] == sz["width"]["max"] == 550
    assert sum(c["pixels"] for c in d["classes"]) == sum(
        n * h * w for (h, w), n in rep.splits["val"].sizes.items())
    rep = check_dataset("cihp", cihp_samples_root, progress=False)  # a flat root: counted once
    assert rep.ok and rep.to_dict()["samples"] == 5 and any("same files" in n for n in rep.notes)
