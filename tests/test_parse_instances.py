"""``hparse parse`` / ``parse_files`` with an instance model: challenge folders, outlined overlay, people in the
JSON sidecar, the semantic threshold ``--min-score`` and reruns. The model is a stand-in network whose people
are known (the real :class:`~hparse.engine.inference.InstancePredictor` runs it), so nothing is trained."""

from __future__ import annotations

import inspect
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from hparse.cli import app, parse_cmd
from hparse.engine import parse as parse_mod
from hparse.engine.evaluate_instances import evaluate_instance_folder
from hparse.engine.inference import InstancePredictor
from hparse.engine.parse import SEMANTIC_SCORE_THRESH, UsageError, as_prediction, parse_files, read_record
from hparse.errors import DataError, UnsupportedOutput
from hparse.io import instance_outputs as io
from hparse.io.image import read_label
from hparse.labels import get_meta
from hparse.structures import PersonInstances
from hparse.viz import overlay
from hparse.viz.people import PERSON_RGB, PeopleMarks, boundary, draw_people, outline_width

META = get_meta("ccp15")
H, W = 60, 80
runner = CliRunner()


def people(h: int = H, w: int = W) -> PersonInstances:
    """Four people, not in score order: B (0.6) overlaps A (0.9) on the right of A, C (0.2) is below the
    default threshold, D (0.5) lies wholly behind A (hidden: a person map but no number in instance_segmentation);
    boxes are detector-like (not tight)."""
    p = np.zeros((4, h, w), np.uint8)
    p[0, 10:55, 25:60], p[0, 10:20, 25:60] = 4, 2              # B: upper-clothes, hair on top
    p[1, 5:50, 5:30], p[1, 5:15, 5:30], p[1, 40:50, 5:30] = 4, 2, 8  # A: hair, upper-clothes, pants
    p[2, 20:58, 62:78] = 6                                       # C: dress
    p[3, 20:35, 8:22] = 5                                        # D: coat, under A
    persons = PersonInstances.from_person_labels(p, scores=[0.6, 0.9, 0.2, 0.5])
    persons.boxes = persons.boxes + np.array([-1.5, -0.5, 1.25, 0.5], np.float32)
    persons.quality = np.array([0.7, 0.8, 0.3, 0.6])
    return persons


class StandIn(torch.nn.Module):
    """An instance network whose ``postprocess`` gives :func:`people` at the image's size."""

    task = "instance"

    def __init__(self, scale: float = 1.0):
        super().__init__()
        self.meta = META
        self.weight = torch.nn.Parameter(torch.full((1,), scale))   # the fingerprint's weights
        self.register_buffer("pixel_mean", torch.zeros(1, 3, 1, 1))

    def forward(self, batch: dict) -> list[dict]:
        return [{} for _ in batch["image_sizes"]]

    def postprocess(self, result: dict, size, image_size) -> PersonInstances:
        return people(*image_size)


class Predictor(InstancePredictor):
    """:class:`InstancePredictor` refusing probabilities with :class:`UnsupportedOutput`, as parse expects of it
    (see :func:`test_instance_predictor_refuses_probs`)."""

    def predict(self, images, return_probs: bool = False, **kw):
        if return_probs:
            raise UnsupportedOutput("an instance model gives people, not class probabilities: leave out --probs")
        return super().predict(images, **kw)


class FakeParser:
    """What parse_files uses of :class:`hparse.api.Parser`: meta, model, predictor and ``predict``."""

    def __init__(self, scale: float = 1.0):
        self.model = StandIn(scale)
        self.meta = META
        self.predictor = Predictor(self.model, long_side=64)

    def predict(self, images, return_probs: bool = False, probs_at: str = "image"):
        return self.predictor.predict(images, return_probs=return_probs, probs_at=probs_at)


@pytest.fixture
def photos(tmp_path) -> Path:
    src = tmp_path / "in"
    y, x = np.mgrid[:H, :W]
    smooth = np.stack([x * 3, y * 4, 255 - x * 2], -1).astype(np.uint8)   # JPEG keeps it close
    for name in ("a.png", "sub/b.jpg"):
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(smooth).save(src / name)
    return src


@pytest.fixture
def two_sizes(tmp_path) -> Path:
    """``a.png`` (H x W) and ``big.png`` (72 x 100, another aspect)."""
    src = tmp_path / "two"
    src.mkdir()
    for name, (h, w) in (("a.png", (H, W)), ("big.png", (72, 100))):
        y, x = np.mgrid[:h, :w]
        Image.fromarray(np.stack([x * 2, y * 3, 255 - x * 2], -1).astype(np.uint8)).save(src / name)
    return src


def run(src: Path, out: Path, **kw):
    return parse_files(FakeParser(kw.pop("scale", 1.0)), [str(src)], out, progress=False, **kw)


def expected():
    """The people sorted by score (A, B, D, C) and the visible pixels of each (higher scores on top; D has none)."""
    persons = people()
    persons = persons.select(np.argsort(-persons.scores, kind="stable"))
    visible, covered = [], np.zeros((H, W), bool)
    for p in persons.full_parsings():
        visible.append((p > 0) & ~covered)
        covered |= p > 0
    assert not visible[2].any()
    return persons, visible


# ------------------------------------------------------------------------------------------------ the files

def test_challenge_folders_label_and_record(photos, tmp_path):
    out = tmp_path / "out"
    rep = run(photos, out, sidecar=True)
    assert len(rep.written) == 2 and not rep.failed
    persons, _ = expected()
    for stem in ("a", "sub/b"):
        for folder, suffixes in ((io.GLOBAL, [".png"]), (io.PARTS, [".png", ".txt"]), (io.HUMANS, [".png", ".txt"]),
                                 (io.PERSONS, ["_1.png", "_2.png", "_3.png", "_4.png", ".txt"])):
            for suffix in suffixes:
                assert (out / folder / f"{stem}{suffix}").is_file(), (folder, stem, suffix)
        got = io.read_instance_outputs(out, stem)
        assert len(got.persons) == 4 and len(got.humans) == 3     # everybody, whatever the score (D hidden)
        np.testing.assert_array_equal(got.persons.scores, [0.9, 0.6, 0.5, 0.2])   # ids by descending score
        np.testing.assert_array_equal(got.persons.parsings, persons.full_parsings())
        np.testing.assert_array_equal(got.persons.boxes, persons.boxes)
        np.testing.assert_array_equal(got.humans.scores, [0.9, 0.6, 0.2])
        # the label PNG is the global parsing at the default threshold: C (0.2) is left out of both
        label = read_label(out / f"{stem}.png")
        np.testing.assert_array_equal(label, got.semantic)
        np.testing.assert_array_equal(label, persons.to_semantic(SEMANTIC_SCORE_THRESH))
        assert not (label == 6).any() and (got.persons.parsings[3] == 6).any()
        record = read_record(out / f"{stem}.png")
        assert record["settings"]["min_score"] == SEMANTIC_SCORE_THRESH
        assert sorted(record["outputs"]["instances"]) == sorted(
            p.relative_to(out).as_posix() for p in io.instance_output_paths(out, stem, 4))
        assert (out / f"{stem}_overlay.jpg").is_file() and (out / f"{stem}.json").is_file()
    assert not list(out.rglob("*.tmp*"))


def test_sidecar_lists_the_people_shown(photos, tmp_path):
    out = tmp_path / "out"
    run(photos, out, sidecar=True)
    side = json.loads((out / "a.json").read_text())
    assert side["label_set"] == "ccp15" and side["size"] == [H, W] and "pixels" in side   # the fields as before
    assert side["min_score"] == SEMANTIC_SCORE_THRESH
    persons, visible = expected()
    label = read_label(out / "a.png")
    assert [p["id"] for p in side["persons"]] == [1, 2]                      # C is below the threshold
    for k, entry in enumerate(side["persons"]):
        assert entry["box"] == [float(v) for v in persons.boxes[k]] and entry["score"] == persons.scores[k]
        assert entry["quality"] == persons.quality[k]
        want = {META.classes[c]: int(n) for c, n in enumerate(np.bincount(label[visible[k]], minlength=15)) if n}
        assert entry["pixels"] == want
    # together the people make up the label PNG's pixels
    total = {}
    for entry in side["persons"]:
        for name, n in entry["pixels"].items():
            total[name] = total.get(name, 0) + n
    assert total == {k: v for k, v in side["pixels"].items() if k != "background"}
    # a lower threshold shows C too
    run(photos, out, sidecar=True, min_score=0.1)
    side = json.loads((out / "a.json").read_text())
    assert [p["id"] for p in side["persons"]] == [1, 2, 3] and side["persons"][2]["pixels"] == {"dress": 16 * 38}


def test_two_numberings_and_person_map(photos, tmp_path):
    """The sidecar's ``id`` and the overlay's number are instance_segmentation's (D, hidden behind A, has none);
    person_parsing numbers D too, so each sidecar entry names its person map."""
    out = tmp_path / "out"
    run(photos, out, sidecar=True, min_score=0.1)
    persons, visible = expected()                                     # A, B, D, C
    parsings = persons.full_parsings()
    humans = io.read_human_instances(out, "a")
    side = json.loads((out / "a.json").read_text())
    assert [p["id"] for p in side["persons"]] == [1, 2, 3]
    assert [p["person_map"] for p in side["persons"]] == [f"{io.PERSONS}/a_{k}.png" for k in (1, 2, 4)]
    for entry, k in zip(side["persons"], (0, 1, 3)):
        assert entry["score"] == persons.scores[k]
        np.testing.assert_array_equal(humans.ids == entry["id"], visible[k])              # instance_segmentation
        np.testing.assert_array_equal(read_label(out / entry["person_map"]), parsings[k])  # person_parsing
    np.testing.assert_array_equal(read_label(out / io.PERSONS / "a_3.png"), parsings[2])  # D: a map, no number
    assert json.loads((out / "sub" / "b.json").read_text())["persons"][2]["person_map"] == f"{io.PERSONS}/sub/b_4.png"
    # the overlay's captions and outlines follow the same ids
    pred = as_prediction(people(), None, 0.1)
    marks = pred.marks()
    assert [c.split()[0] for c in marks.captions] == ["1", "2", "3"]
    for v, k in zip(marks.ids, (0, 1, 3)):
        np.testing.assert_array_equal(pred.owner == v, visible[k])
    assert pred.summary(META.classes)["persons"][0]["person_map"] is None    # no paths given: no map named


def test_prediction_memory_is_bounded():
    """Full-size parsings are not copied; the owner map is the smallest type; counts agree with a per-person scan."""
    result = people()
    pred = as_prediction(result, None, SEMANTIC_SCORE_THRESH)
    assert pred.persons.parsings is result.parsings and pred.persons.roi_parsings is None
    assert pred.owner.dtype == np.uint8 and pred.owner.shape == (H, W)
    for i in range(len(result)):
        want = np.bincount(pred.label[pred.owner == i + 1], minlength=pred.pixels.shape[1])
        np.testing.assert_array_equal(pred.pixels[i], want)
    many = PersonInstances((4, 5), boxes=np.zeros((300, 4), np.float32), scores=np.linspace(0, 1, 300),
                           parsings=np.ones((300, 4, 5), np.uint8))
    pred = as_prediction(many, None, 0.5)
    assert pred.owner.dtype == np.uint16 and (pred.owner == 300).all() and pred.ids.max() == 1
    assert pred.person_maps() == 300 and pred.shown() == [299]       # writing them would fail: over 255 maps


def test_overlay_outlines_the_people(photos, tmp_path):
    out = tmp_path / "out"
    run(photos, out)
    image = np.asarray(Image.open(photos / "a.png").convert("RGB"))
    label = read_label(out / "a.png")
    plain = overlay(image, label, META.palette(), classes=META.classes)
    drawn = np.asarray(Image.open(out / "a_overlay.jpg").convert("RGB")).astype(int)
    assert drawn.shape == plain.shape
    diff = np.abs(drawn - plain.astype(int)).sum(-1)[:, :W]
    _, visible = expected()
    width = outline_width(H, W)
    ring = boundary(visible[0], width) | boundary(visible[1], width)
    inside = (visible[0] | visible[1]) & ~ring
    inside[:16] = False                                  # the captions sit at the top of the boxes
    assert diff[ring].mean() > 4 * diff[inside].mean() + 40
    # C (below the threshold) is not outlined
    assert diff[boundary(visible[3], width)].mean() < diff[ring].mean() / 3


def test_draw_people_colours_each_outline():
    picture = np.zeros((60, 100, 3), np.uint8)
    a, b = np.zeros((60, 100), bool), np.zeros((60, 100), bool)
    a[25:55, 5:25], b[30:58, 55:80] = True, True
    owner = np.zeros((60, 100), np.uint8)
    owner[a], owner[b], owner[2:12, 85:95] = 1, 2, 3                      # 3: a person not marked
    got = draw_people(picture, PeopleMarks(owner, [1, 2], [(5, 25, 25, 55), (55, 30, 80, 58)], ["1 0.90", "2 0.60"]))
    assert (got[2:12, 85:95] == 0).all()
    width = outline_width(60, 100)
    for i, m in enumerate((a, b)):
        ring = boundary(m, width)
        assert ring.sum() and (got[ring] == PERSON_RGB[i]).all()
        assert (got[m & ~ring] == 0).all()                           # inside the outline: untouched
    assert (got[:25, 5:40] != 0).any() and (got[:30, 55:90] != 0).any()   # the captions, above the boxes
    edge = np.zeros((10, 10), bool)
    edge[:, :4] = True
    assert boundary(edge, 1)[:, 0].all()                             # the picture's edge closes an outline


# ------------------------------------------------------------------------------------------------ reruns

def test_rerun_skips_and_min_score_redoes(photos, tmp_path):
    out = tmp_path / "out"
    assert len(run(photos, out).written) == 2
    rep = run(photos, out)
    assert len(rep.skipped) == 2 and not rep.written
    rep = run(photos, out, min_score=SEMANTIC_SCORE_THRESH)               # the default, spelled out
    assert len(rep.skipped) == 2
    rep = run(photos, out, min_score=0.1)
    assert len(rep.written) == 2
    assert (read_label(out / "a.png") == 6).any() and (read_label(out / io.GLOBAL / "a.png") == 6).any()
    # a missing challenge-folder file redoes its image
    (out / io.PERSONS / "sub" / "b_3.png").unlink()
    rep = run(photos, out, min_score=0.1)
    assert rep.written == [str(photos / "sub" / "b.jpg")] and (out / io.PERSONS / "sub" / "b_3.png").is_file()
    # another model: redone
    assert len(run(photos, out, min_score=0.1, scale=2.0).written) == 2


def test_stale_person_maps_are_removed(photos, tmp_path, monkeypatch):
    out = tmp_path / "out"
    run(photos, out)
    assert (out / io.PERSONS / "a_3.png").is_file()
    monkeypatch.setattr(StandIn, "postprocess", lambda self, r, size, image_size: people(*image_size).select([0, 1]))
    run(photos, out, overwrite=True)
    assert (out / io.PERSONS / "a_2.png").is_file() and not (out / io.PERSONS / "a_3.png").exists()
    assert len(io.read_instance_outputs(out, "a").persons) == 2


def test_killed_run_leaves_no_stale_person_maps(photos, tmp_path, monkeypatch):
    """Without a record (the label PNG is removed first, so a killed run leaves none), maps ``<stem>_<k>.png``
    beyond the new count are removed, up to the first missing k."""
    out = tmp_path / "out"
    run(photos, out)
    maps = out / io.PERSONS
    (out / "a.png").unlink()                                         # killed while redoing a: no record
    for k in (5, 6, 8):
        (maps / f"a_{k}.png").write_bytes((maps / "a_1.png").read_bytes())
    (maps / "a_07.png").write_bytes(b"not ours")
    monkeypatch.setattr(StandIn, "postprocess", lambda self, r, size, image_size: people(*image_size).select([0, 1]))
    rep = run(photos, out)
    assert rep.written == [str(photos / "a.png")]                    # sub/b is done
    assert sorted(p.name for p in maps.glob("a_*.png")) == ["a_07.png", "a_1.png", "a_2.png", "a_8.png"]
    assert len(io.read_instance_outputs(out, "a").persons) == 2
    assert (maps / "sub" / "b_4.png").is_file()


def test_an_image_without_people(photos, tmp_path, monkeypatch):
    def nobody(self, result, size, image_size):
        return PersonInstances(tuple(image_size), parsings=np.zeros((0, *image_size), np.uint8))

    monkeypatch.setattr(StandIn, "postprocess", nobody)
    out = tmp_path / "out"
    rep = run(photos, out, sidecar=True)
    assert len(rep.written) == 2 and not rep.failed
    assert json.loads((out / "a.json").read_text())["persons"] == [] and not read_label(out / "a.png").any()
    assert len(io.read_instance_outputs(out, "a").persons) == 0


def test_as_prediction_semantic_unchanged():
    label = np.arange(12, dtype=np.uint8).reshape(3, 4)
    pred = as_prediction(label, None, 0.3)
    assert pred.label is label and not pred.people and pred.marks() is None and pred.summary(META.classes) == {}


# ------------------------------------------------------------------------------------------ evaluate

class GroundTruth:
    """A reader of one image whose ground truth is :func:`people` (all three, score 1)."""

    meta, split = META, "val"

    def __init__(self, image_id: str):
        persons = people()
        order = np.argsort(persons.scores, kind="stable")
        label, owner = persons.paint(persons.full_parsings(), order)
        self.sample = {"id": image_id, "image": np.zeros((H, W, 3), np.uint8), "label": label,
                       "human_ids": (owner + 1).astype(np.uint8), "person_labels": list(persons.full_parsings())}

    def __len__(self) -> int:
        return 1

    def __getitem__(self, i: int) -> dict:
        return self.sample


def test_written_folders_score_perfect_ap(photos, tmp_path):
    out = tmp_path / "out"
    run(photos, out)
    scores = evaluate_instance_folder(out, GroundTruth("a"), convention="nan", progress=False).summary()
    for key in ("APp50", "APp_vol", "PCP50", "APr50", "APr_vol", "APh", "APh50"):
        assert scores[key] == 1.0, (key, scores)
    assert scores["miou"] < 1.0             # the global parsing leaves C (below the threshold) out
    run(photos, out, min_score=0.0)
    assert evaluate_instance_folder(out, GroundTruth("a"), convention="nan", progress=False).summary()["miou"] == 1.0


# ------------------------------------------------------------------------------------------ options

def test_masks_probs_extras(photos, tmp_path):
    out = tmp_path / "out"
    rep = run(photos, out, masks=True)
    label = read_label(out / "a.png")
    masks = sorted(p.name for p in (out / "a_masks").glob("*.png"))
    assert masks == [f"{c:02d}_{META.classes[c]}.png" for c in np.unique(label) if c]
    np.testing.assert_array_equal(read_label(out / "a_masks" / "02_hair.png") > 0, label == 2)
    with pytest.raises(UsageError, match="leave out --probs"):
        run(photos, tmp_path / "p", probs=True)
    # --extras: an instance model has none; the people are written as usual
    rep = parse_files(FakeParser(), [str(photos)], tmp_path / "x", progress=False,
                      extras=parse_mod.extra_overlays)
    assert len(rep.written) == 2 and (tmp_path / "x" / io.GLOBAL / "a.png").is_file()
    assert read_record(tmp_path / "x" / "a.png")["outputs"]["extras"] == []


def test_batch_of_two_sizes(two_sizes, tmp_path, monkeypatch):
    """Two images of different sizes in one forward pass: each gets its own people, at its own size."""
    batches = []
    forward = StandIn.forward
    monkeypatch.setattr(StandIn, "forward", lambda self, batch: batches.append(len(batch["image_sizes"]))
                        or forward(self, batch))
    out = tmp_path / "out"
    rep = parse_files(FakeParser(), [str(two_sizes)], out, batch_size=2, sidecar=True, progress=False)
    assert sorted(rep.written) == [str(two_sizes / "a.png"), str(two_sizes / "big.png")] and not rep.failed
    assert batches == [2]
    for stem, size in (("a", (H, W)), ("big", (72, 100))):
        persons = people(*size)
        persons = persons.select(np.argsort(-persons.scores, kind="stable"))
        label = read_label(out / f"{stem}.png")
        assert label.shape == size
        np.testing.assert_array_equal(label, persons.to_semantic(SEMANTIC_SCORE_THRESH))
        got = io.read_instance_outputs(out, stem)
        np.testing.assert_array_equal(got.persons.parsings, persons.full_parsings())
        assert len(got.humans) == 3 and got.humans.ids.shape == size
        assert sorted(read_record(out / f"{stem}.png")["outputs"]["instances"]) == sorted(
            p.relative_to(out).as_posix() for p in io.instance_output_paths(out, stem, 4))
        side = json.loads((out / f"{stem}.json").read_text())
        assert side["size"] == list(size) and [p["id"] for p in side["persons"]] == [1, 2]
        assert [p["person_map"] for p in side["persons"]] == [f"{io.PERSONS}/{stem}_{k}.png" for k in (1, 2)]


def test_one_bad_image_fails_alone(two_sizes, tmp_path, monkeypatch):
    """An error of one image (a DataError too) fails that image, named; the run goes on (exit code 1, not 2).
    Only :class:`UnsupportedOutput` refuses the request."""
    import hparse.api

    good = StandIn.postprocess

    def postprocess(self, result, size, image_size):
        if tuple(image_size) == (72, 100):
            raise DataError("this one is broken")
        return good(self, result, size, image_size)

    monkeypatch.setattr(StandIn, "postprocess", postprocess)
    out = tmp_path / "out"
    rep = parse_files(FakeParser(), [str(two_sizes)], out, batch_size=2, progress=False)
    assert rep.written == [str(two_sizes / "a.png")] and list(rep.failed) == [str(two_sizes / "big.png")]
    assert "this one is broken" in rep.failed[str(two_sizes / "big.png")]
    monkeypatch.setattr(hparse.api, "load", lambda *a, **k: FakeParser())
    res = runner.invoke(app, ["parse", str(two_sizes), "--out", str(tmp_path / "cli"), "--batch-size", "2"])
    assert res.exit_code == 1 and "this one is broken" in res.output and "1 parsed" in res.output


def test_instance_predictor_refuses_probs():
    """The real predictor refuses --probs; parse needs it to be :class:`UnsupportedOutput` (a usage error)."""
    predictor = InstancePredictor(StandIn(), long_side=64)
    with pytest.raises(UnsupportedOutput, match="leave out --probs"):
        predictor.predict([np.zeros((H, W, 3), np.uint8)], return_probs=True)


def test_outputs_spare_inputs_in_the_challenge_folders(tmp_path):
    out = tmp_path / "out"
    rng = np.random.default_rng(1)
    for rel in (f"{io.GLOBAL}/a.png", f"{io.PERSONS}/c_2.png", f"{io.PERSONS}/d.png"):
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (H, W, 3), dtype=np.uint8)).save(out / rel)
    with pytest.raises(UsageError, match=f"{io.GLOBAL}/a.png would replace"):
        run(out / io.GLOBAL / "a.png", out)
    (tmp_path / "c.png").write_bytes((out / io.PERSONS / "c_2.png").read_bytes())
    with pytest.raises(UsageError, match="c_2.png would replace"):
        parse_files(FakeParser(), [str(tmp_path / "c.png"), str(out / io.PERSONS / "c_2.png")], out, progress=False)
    assert len(run(out / io.PERSONS / "d.png", tmp_path / "elsewhere").written) == 1   # another --out: fine


def test_claims_cover_the_challenge_folders(tmp_path):
    """An input whose label PNG would be another input's challenge-folder file fails, named; nothing is
    overwritten."""
    src = tmp_path / "in"
    (src / io.GLOBAL).mkdir(parents=True)
    for rel in ("a.png", f"{io.GLOBAL}/a.png"):
        Image.fromarray(np.full((H, W, 3), 9, np.uint8)).save(src / rel)
    out = tmp_path / "out"
    rep = parse_files(FakeParser(), [str(src)], out, progress=False)
    assert len(rep.written) == 1 and len(rep.failed) == 1
    assert "already written" in next(iter(rep.failed.values()))


# ------------------------------------------------------------------------------------------ the command

def test_cli_parse_with_an_instance_model(photos, tmp_path, monkeypatch):
    import hparse.api

    monkeypatch.setattr(hparse.api, "load", lambda *a, **k: FakeParser())
    out = tmp_path / "out"
    res = runner.invoke(app, ["parse", str(photos), "--out", str(out), "--json", "--min-score", "0.5"])
    assert res.exit_code == 0, res.output
    assert "2 parsed, 0 skipped" in res.output
    assert io.present_folders(out) == list(io.FOLDERS)
    assert [p["id"] for p in json.loads((out / "a.json").read_text())["persons"]] == [1, 2]
    res = runner.invoke(app, ["parse", str(photos), "--out", str(out), "--json", "--min-score", "0.5"])
    assert res.exit_code == 0 and "0 parsed, 2 skipped" in res.output
    res = runner.invoke(app, ["parse", str(photos), "--out", str(out), "--probs"])
    assert res.exit_code == 2 and "leave out --probs" in res.output and "Traceback" not in res.output
    res = runner.invoke(app, ["parse", str(photos), "--out", str(out), "--min-score", "1.5"])
    assert res.exit_code == 2
    help_text = inspect.signature(parse_cmd.parse).parameters["min_score"].default.help
    assert f"(default {SEMANTIC_SCORE_THRESH})" in help_text           # the help says the constant's value
    assert "global_parsing/" in help_text.split("(default")[0] and "keep every person" in help_text


@pytest.mark.parametrize("model", ["aiparsing_cpu_ccpmulti", "unified_cpu_ccpmulti"])
def test_shipped_instance_models_parse_the_example_photos_into_the_challenge_folders(tmp_path, model):
    """The acceptance command on the repository's photos: each shipped float16 instance model (AIParsing-CPU,
    Unified-CPU) finds each photo's person above the default --min-score and writes the four folders, overlays and
    the sidecar."""
    import hparse

    examples = Path(__file__).resolve().parents[1] / "examples"
    res = CliRunner().invoke(app, ["parse", str(examples), "--model", model, "--out",
                                   str(tmp_path / "o"), "--json"])
    assert res.exit_code == 0, res.output
    photos = sorted(p.stem for p in examples.glob("*.jpg"))
    for stem in photos:
        assert (tmp_path / "o" / f"{stem}_overlay.jpg").is_file()
        for folder in io.FOLDERS:
            assert any((tmp_path / "o" / folder).glob(f"{stem}*.png")), (folder, stem)
        shown = json.loads((tmp_path / "o" / f"{stem}.json").read_text())["persons"]
        assert len(shown) >= 1 and shown[0]["score"] >= SEMANTIC_SCORE_THRESH
    people = hparse.load(model).predict(str(examples / f"{photos[0]}.jpg"))
    assert isinstance(people, PersonInstances) and people.scores.max() >= SEMANTIC_SCORE_THRESH
    if model == "unified_cpu_ccpmulti":      # its people's masks come from the attention branch
        assert people.masks is not None and people.masks.shape == (len(people), *people.image_size)


def test_multi_is_the_better_cpu_instance_model():
    from hparse.engine.checkpoint import ALIASES, SHIPPED, resolve_weights

    assert resolve_weights("multi") == SHIPPED[ALIASES["multi"]] and ALIASES["multi"] in SHIPPED
