"""Instance prediction files (challenge folders, COCO JSON) and ``hparse evaluate --instance``."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from hparse.cli import app
from hparse.data.compose import compose_dataset
from hparse.data.readers import build_reader
from hparse.engine.evaluate_instances import evaluate_instance_folder, write_ground_truth_predictions
from hparse.errors import DataError, HParseError
from hparse.evaluation import ground_truth_instances, is_instance_folder
from hparse.io import instance_outputs as io
from hparse.io.image import read_label
from hparse.labels import get_meta
from hparse.structures import PersonInstances

from .fixtures_layouts import make_mhp, make_vip
from .test_compose import SMALL, make_ccp_like

runner = CliRunner()
PERFECT = {"APr50": 1.0, "APr60": 1.0, "APr70": 1.0, "APr_vol": 1.0, "APp50": 1.0, "APp_vol": 1.0,
           "PCP50": 1.0, "APh": 1.0, "APh50": 1.0, "APh75": 1.0, "miou": 1.0}


def people(h: int = 20, w: int = 30) -> PersonInstances:
    """Five people: two overlapping, one hidden behind a higher score, one empty, one at the edge."""
    p = np.zeros((5, h, w), np.uint8)
    p[0, 2:10, 3:9], p[0, 10:15, 3:9] = 2, 5
    p[1, 5:18, 7:20], p[1, 6:8, 8:10] = 3, 7
    p[2, 12:16, 12:18] = 4                      # entirely under person 1 (higher score)
    p[4, 15:20, 24:30] = 13
    rng = np.random.default_rng(0)
    scores = np.array([0.5, 0.9, 0.3, 0.8, 0.61], np.float32)
    part_scores = rng.uniform(0.1, 1, (5, 15)).astype(np.float32)
    persons = PersonInstances.from_person_labels(p, scores=scores)
    persons.part_scores = part_scores
    persons.boxes[1] = (6.25, 4.5, 20.75, 18.0)  # a detector box, not the tight one
    return persons


def lines_have_pixels(root: Path, image_id: str) -> None:
    for folder in (io.PARTS, io.HUMANS):
        ids = read_label(root / folder / f"{image_id}.png")
        n = len((root / folder / f"{image_id}.txt").read_text().splitlines())
        assert sorted(set(np.unique(ids)) - {0}) == list(range(1, n + 1)), folder
    n = len((root / io.PERSONS / f"{image_id}.txt").read_text().splitlines())
    for k in range(1, n + 1):
        assert read_label(root / io.PERSONS / f"{image_id}_{k}.png").any()
    assert not (root / io.PERSONS / f"{image_id}_{n + 1}.png").exists()


@pytest.mark.parametrize("image_id", ["0000001", "videoA/000000000026"])
def test_challenge_folders_round_trip(tmp_path, image_id):
    persons = people()
    paths = io.write_instance_outputs(tmp_path, image_id, persons, get_meta("ccp15"), part_score="part")
    assert all(p.is_file() for p in paths) and not list(tmp_path.rglob("*.tmp*"))
    lines_have_pixels(tmp_path, image_id)
    got = io.read_instance_outputs(tmp_path, image_id)
    np.testing.assert_array_equal(got.semantic, persons.to_semantic())
    parts = persons.to_part_instances(score="part")
    np.testing.assert_array_equal(got.parts.ids, parts.ids)
    np.testing.assert_array_equal(got.parts.classes, parts.classes)
    assert got.parts.scores.tolist() == parts.scores.tolist()          # exact floats
    humans = io.human_instances(persons)
    assert len(humans) == 3                                            # hidden and empty people left out
    np.testing.assert_array_equal(got.humans.ids, humans.ids)
    assert got.humans.scores.tolist() == humans.scores.tolist() == [np.float32(s) for s in (0.9, 0.61, 0.5)]
    keep = [0, 1, 2, 4]                                                # the empty person 3 is left out
    np.testing.assert_array_equal(got.persons.parsings, persons.full_parsings()[keep])
    np.testing.assert_array_equal(got.persons.scores, persons.scores[keep])
    np.testing.assert_array_equal(got.persons.boxes, persons.boxes[keep])
    assert got.persons.scores.dtype == np.float64 and got.persons.boxes.dtype == np.float32
    # the txt formats
    assert (tmp_path / io.HUMANS / f"{image_id}.txt").read_text().splitlines()[0] == repr(float(np.float32(0.9)))
    cls, score = (tmp_path / io.PARTS / f"{image_id}.txt").read_text().splitlines()[0].split()
    assert (int(cls), float(score)) == (int(parts.classes[0]), parts.scores[0])


def test_roi_parsings_and_thresholds(tmp_path):
    roi = np.zeros((2, 4, 4), np.uint8)
    roi[0, :2], roi[0, 2:] = 1, 2
    roi[1] = 3
    persons = PersonInstances((12, 16), boxes=np.array([[2, 2, 10, 10], [8, 4, 16, 12]], np.float32),
                              scores=np.array([0.7, 0.2], np.float32), roi_parsings=roi)
    io.write_instance_outputs(tmp_path, "x", persons, score_thresh=0.5)
    got = io.read_instance_outputs(tmp_path, "x")
    assert len(got.persons) == 1 and len(got.humans) == 1 and set(got.parts.classes) == {1, 2}
    np.testing.assert_array_equal(got.persons.parsings[0], persons.full_parsings()[0])
    np.testing.assert_array_equal(got.semantic, persons.to_semantic(0.5))
    # nobody at all: empty files, read back as empty
    io.write_instance_outputs(tmp_path, "none", PersonInstances((12, 16), parsings=np.zeros((0, 12, 16), np.uint8)))
    got = io.read_instance_outputs(tmp_path, "none")
    assert len(got.parts) == len(got.humans) == len(got.persons) == 0 and not got.semantic.any()
    assert got.persons.image_size == (12, 16)
    with pytest.raises(HParseError, match="unknown output folder"):
        io.write_instance_outputs(tmp_path, "x", persons, folders=["masks"])


def test_reading_other_formats_and_bad_files(tmp_path):
    root = tmp_path
    ids = np.zeros((4, 5), np.uint8)
    ids[0, :2], ids[2:, 3:] = 1, 2
    io.write_label_png(root / io.HUMANS / "a.png", ids)
    (root / io.HUMANS / "a.txt").write_text("1, 0.75\n1, 0.5\n")       # PGN MATLAB: "class, score"
    h = io.read_human_instances(root, "a")
    assert h.scores.tolist() == [0.75, 0.5] and h.classes.tolist() == [1, 1]
    (root / io.HUMANS / "a.txt").write_text("0.75\n")                 # id 2 without a line
    with pytest.raises(DataError, match="only 1 line"):
        io.read_human_instances(root, "a")
    io.write_label_png(root / io.PARTS / "b.png", ids)
    (root / io.PARTS / "b.txt").write_text("3 0.5 7\n")
    with pytest.raises(DataError, match="line 1 has 3 values"):
        io.read_part_instances(root, "b")
    (root / io.PARTS / "b.txt").unlink()
    with pytest.raises(DataError, match="come in pairs"):
        io.read_part_instances(root, "b")
    assert io.read_part_instances(root, "nothing") is None and io.read_person_parsing(root, "nothing") is None
    (root / io.PERSONS).mkdir()
    (root / io.PERSONS / "c.txt").write_text("0.9\n")                 # bare score: tight box from the map
    io.write_label_png(root / io.PERSONS / "c_1.png", ids)
    p = io.read_person_parsing(root, "c")
    assert p.boxes.tolist() == [[0, 0, 5, 4]] and p.scores.tolist() == [np.float32(0.9)]
    (root / io.PERSONS / "c.txt").write_text("0.9\n0.8\n")
    with pytest.raises(DataError, match="c_2.png"):
        io.read_person_parsing(root, "c")


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # pycocotools' decode under numpy 2
def test_coco_json_round_trip(tmp_path):
    pytest.importorskip("pycocotools")
    persons = people()
    other = PersonInstances.from_person_labels(persons.full_parsings()[:1], scores=[0.25])
    path = io.write_coco_json(tmp_path / "res.json", {"0000001": persons, "video/2": other}, ["c"] * 15)
    data = json.loads(path.read_text())
    assert [im["file_name"] for im in data["images"]] == ["0000001", "video/2"]
    assert data["categories"][0]["parsing"] == ["c"] * 15 and len(data["annotations"]) == 6
    a = data["annotations"][1]
    assert a["bbox"] == [6.25, 4.5, 14.5, 13.5] and a["area"] == int((persons.full_parsings()[1] > 0).sum())
    assert sorted(p["category_id"] for p in a["parsing"]) == [3, 7]
    back = io.read_coco_json(path)
    for key, want in (("0000001", persons), ("video/2", other)):
        got = back[key]
        np.testing.assert_array_equal(got.parsings, want.full_parsings())
        np.testing.assert_array_equal(got.scores, want.scores)
        np.testing.assert_array_equal(got.boxes, want.boxes)
    from pycocotools import mask as mask_util
    m = mask_util.decode(a["segmentation"])
    np.testing.assert_array_equal(m.astype(bool), persons.full_parsings()[1] > 0)


def test_coco_without_pycocotools(monkeypatch):
    monkeypatch.setitem(sys.modules, "pycocotools", None)
    with pytest.raises(HParseError, match=r"hparse\[coco\]"):
        io.to_coco({"a": people()})


@pytest.fixture(scope="module")
def composed(tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("inst")
    src = make_ccp_like(base / "ccp")
    out = base / "multi"
    compose_dataset("ccp", src, out, params=SMALL, count=4, seed=5, progress=False)
    return out


def test_ground_truth_as_prediction_scores_perfect(composed, tmp_path):
    reader = build_reader("cihp", composed, "val", label_set="ccp15")
    pred = write_ground_truth_predictions(reader, tmp_path / "pred", progress=False)
    assert is_instance_folder(pred) and io.present_folders(pred) == list(io.FOLDERS)
    for s in (reader[i] for i in range(len(reader))):
        lines_have_pixels(pred, s["id"])
        gt = ground_truth_instances(s)
        assert len(gt) == s["human_ids"].max() and (gt.scores == 1).all()
    out = tmp_path / "scores.json"
    for extra in (["--instance"], []):                                 # explicit and auto-detected
        res = runner.invoke(app, ["evaluate", "--pred", str(pred), "--data", "cihp", str(composed), "--split", "val",
                                  "--labels", "ccp15", "--convention", "nan", "--json", str(out), *extra])
        assert res.exit_code == 0, res.output
        assert "Part-instance AP^r" in res.output and "Person AP^p" in res.output and "Human mask AP" in res.output
        summary = json.loads(out.read_text())["summary"]
        assert summary == PERFECT
    # the ce2p convention counts classes absent from this tiny split as 0: mIoU below 1, the APs are not
    scores = evaluate_instance_folder(pred, reader, progress=False)
    assert {k: v for k, v in scores.summary().items() if k != "miou"} == {k: 1.0 for k in PERFECT if k != "miou"}
    assert scores.parts.num_images == 4 and scores.persons.npos == sum(reader[i]["human_ids"].max() for i in range(4))
    assert not scores.notes and scores.missing == dict.fromkeys((io.PARTS, io.PERSONS, io.HUMANS, io.GLOBAL), 0)


def test_missing_predictions_and_folders(composed, tmp_path):
    reader = build_reader("cihp", composed, "val")
    pred = write_ground_truth_predictions(reader, tmp_path / "pred", progress=False)
    first = reader.ids[0]
    for f in (io.PARTS, io.HUMANS):
        for suffix in (".png", ".txt"):
            (pred / f / f"{first}{suffix}").unlink()
    (pred / io.PERSONS / f"{first}.txt").unlink()
    for p in (pred / io.GLOBAL).iterdir():
        p.unlink()
    (pred / io.GLOBAL).rmdir()
    scores = evaluate_instance_folder(pred, reader, official_image_list=False, progress=False)
    s = scores.summary()
    assert s["APr_vol"] < 1 and s["APp_vol"] < 1 and s["PCP50"] < 1 and s["APh"] < 1 and "miou" not in s
    assert scores.missing == {io.PARTS: 1, io.PERSONS: 1, io.HUMANS: 1}
    assert any("global_parsing/ not in" in n and "mIoU skipped" in n for n in scores.notes)
    assert any("1 of 4 images have no prediction in instance_parsing/" in n for n in scores.notes)
    official = evaluate_instance_folder(pred, reader, progress=False)   # the CIHP script's rule, the default
    assert official.summary()["APr_vol"] == 1.0 and official.parts.num_images == 3
    d = json.loads(json.dumps(scores.to_dict()))
    assert d["semantic"] is None and d["missing"][io.PARTS] == 1 and "mIoU skipped" in scores.format_table()
    # a prediction of the wrong size is an error naming the file
    second = reader.ids[1]
    io.write_label_png(pred / io.HUMANS / f"{second}.png", np.zeros((8, 8), np.uint8))
    with pytest.raises(DataError, match=f"{second}.png: prediction is 8x8"):
        evaluate_instance_folder(pred, reader, progress=False)
    with pytest.raises(DataError, match="none of the folders"):
        evaluate_instance_folder(tmp_path, reader, progress=False)


@pytest.mark.parametrize("layout, maker, split", [("mhp_v2", make_mhp, "train"), ("vip", make_vip, "val")])
def test_perfect_on_mhp_and_vip(tmp_path, layout, maker, split):
    maker(tmp_path / "d")
    reader = build_reader(layout, tmp_path / "d", split)
    pred = write_ground_truth_predictions(reader, tmp_path / "pred", progress=False)
    scores = evaluate_instance_folder(pred, reader, convention="nan", progress=False)
    assert scores.summary() == PERFECT, scores.format_table()


def test_semantic_evaluate_unchanged(composed, tmp_path):
    reader = build_reader("cihp", composed, "val")
    pred = write_ground_truth_predictions(reader, tmp_path / "pred", folders=[io.GLOBAL], progress=False)
    assert not is_instance_folder(pred)
    res = runner.invoke(app, ["evaluate", "--pred", str(pred / io.GLOBAL), "--data", "cihp", str(composed),
                              "--convention", "nan"])
    assert res.exit_code == 0, res.output
    assert "4 images, 0 without prediction" in res.output and "AP^r" not in res.output
    res = runner.invoke(app, ["evaluate", "--pred", str(pred), "--data", "cihp", str(composed), "--instance",
                              "--convert", "ccp:ccp15"])
    assert res.exit_code == 2 and "semantic predictions only" in res.output
