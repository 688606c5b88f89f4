"""Evaluators (hparse.evaluation): each on hand-made cases, against direct metric computations, and the
``instance`` evaluator in memory against writing + scoring the challenge folders."""

from __future__ import annotations

import logging
from types import SimpleNamespace

import numpy as np
import pytest

from hparse.data.compose import part_instances
from hparse.engine.evaluate import evaluate_folder, evaluate_model
from hparse.engine.evaluate_instances import evaluate_instance_folder
from hparse.errors import ConfigError, DataError
from hparse.evaluation import (
    EVALUATORS,
    best_metric_value,
    build_evaluators,
    check_best_metric,
    ground_truth_instances,
    ground_truth_parts,
    is_instance_folder,
)
from hparse.io import instance_outputs as io
from hparse.io.image import write_label_png
from hparse.labels import DatasetMeta, get_meta
from hparse.metrics import ConfusionMatrix, isolated_pixel_rate, low_resolution, semantic_scores
from hparse.structures import PartInstances, PersonInstances

CCP = get_meta("ccp15")
CIHP = get_meta("cihp")


class ListReader:
    """A reader over prepared samples; ids in ``broken`` raise DataError like an unreadable file."""

    def __init__(self, samples, meta, broken=()):
        self.samples, self.meta, self.split, self.broken = samples, meta, "val", set(broken)
        self.items = [SimpleNamespace(id=s["id"]) for s in samples]

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, i):
        if self.samples[i]["id"] in self.broken:
            raise DataError(f"{self.samples[i]['id']}: cannot load")
        return self.samples[i]


def semantic_samples(n=3, meta=CCP, seed=1):
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        label = rng.integers(0, meta.num_classes, (40 + 8 * i, 36)).astype(np.uint8)
        label[:3] = 255
        out.append({"id": f"im{i}", "image": np.zeros((*label.shape, 3), np.uint8), "label": label})
    return out


def random_predictions(samples, high, seed=3):
    rng = np.random.default_rng(seed)
    return {s["id"]: rng.integers(0, high, s["label"].shape).astype(np.uint8) for s in samples}


def fixed(outputs: list[dict]):
    """A ``predict`` returning the prepared outputs in reader order."""
    it = iter(outputs)
    return lambda images: [next(it) for _ in images]


def run(names, samples, outputs, meta=CCP, batch_size=1):
    evaluators = build_evaluators(names, meta)
    return evaluate_model(fixed(outputs), ListReader(samples, meta), evaluators, batch_size, progress=False)


# -- semantic ---------------------------------------------------------------------------------------

def test_semantic_equals_a_direct_confusion_matrix_and_maps_predictions():
    samples = semantic_samples()
    preds = random_predictions(samples, 20)                    # classes >= 15 mapped by the LUT below
    lut = np.arange(256, dtype=np.uint8)
    lut[15:20] = 1
    for convention in ("ce2p", "nan", "d2"):
        got = run([{"type": "semantic", "convention": convention, "label_map": lut}], samples,
                  [{"sem_seg": preds[s["id"]]} for s in samples])["semantic"]
        cm = ConfusionMatrix(CCP.num_classes)
        for s in samples:
            cm.update(lut[preds[s["id"]]], s["label"])
        ref = semantic_scores(cm.matrix, convention, CCP.classes)
        assert (got.confusion.matrix == cm.matrix).all() and got.summary() == ref.summary()
        assert got.num_images == 3 and not got.missing and got.scores.convention == convention
    assert "mIoU" in got.format_table() and got.to_dict()["confusion"] == cm.matrix.tolist()


def test_semantic_hand_made_case_and_missing_prediction_is_background():
    label = np.array([[0, 1], [1, 255]], np.uint8)
    sample = {"id": "a", "image": np.zeros((2, 2, 3), np.uint8), "label": label}
    other = {"id": "b", "image": np.zeros((2, 2, 3), np.uint8), "label": np.ones((2, 2), np.uint8)}
    rep = run(["semantic"], [sample, other], [{"sem_seg": np.array([[0, 1], [0, 3]], np.uint8)}, {"sem_seg": None}])
    m = rep["semantic"].confusion.matrix
    assert m[0, 0] == 1 and m[1, 1] == 1 and m[1, 0] == 1 + 4 and m.sum() == 7     # b: 4 pixels of 1 -> 0
    assert rep["semantic"].missing == ["b"] and rep["semantic"].summary()["pixel_acc"] == pytest.approx(2 / 7)


def test_evaluate_folder_goes_through_the_semantic_evaluator(tmp_path):
    samples = semantic_samples()
    preds = random_predictions(samples, 20)
    for s in samples[1:]:                                      # im0 has no prediction file
        write_label_png(tmp_path / f"{s['id']}.png", preds[s["id"]])
    lut = np.arange(256, dtype=np.uint8)
    lut[0], lut[15:20] = 3, 2                                  # a missing prediction stays background (0)
    cm, scores, missing = evaluate_folder(tmp_path, ListReader(samples, CCP), "nan", progress=False, label_map=lut)
    ref = ConfusionMatrix(CCP.num_classes)
    ref.update(np.zeros_like(samples[0]["label"]), samples[0]["label"])
    for s in samples[1:]:
        ref.update(lut[preds[s["id"]]], s["label"])
    assert missing == ["im0"] and (cm.matrix == ref.matrix).all()
    assert scores.summary() == semantic_scores(ref.matrix, "nan", CCP.classes).summary()
    write_label_png(tmp_path / "im0.png", np.zeros((5, 5), np.uint8))
    with pytest.raises(DataError, match="im0.png: prediction is 5x5 but the ground truth is 36x40"):
        evaluate_folder(tmp_path, ListReader(samples, CCP), progress=False)
    with pytest.raises(DataError, match="prediction folder not found"):
        evaluate_folder(tmp_path / "nothing", ListReader(samples, CCP), progress=False)


# -- low_res, ipr (MMAN Table 4) ---------------------------------------------------------------------

def test_low_res_and_ipr_follow_their_definitions():
    """1/16 nearest thumbnails of prediction and GT; IPR (no same-label 8-neighbour) of pred and GT."""
    samples = semantic_samples()
    preds = random_predictions(samples, 3)
    res = run(["low_res", "ipr"], samples, [{"sem_seg": preds[s["id"]]} for s in samples])
    ref = np.zeros((CCP.num_classes,) * 2, np.int64)
    count = total = 0
    for s in samples:
        p = preds[s["id"]]
        h, w = p.shape[0] // 16, p.shape[1] // 16
        rows = [int((i + 0.5) * p.shape[0] / h) for i in range(h)]
        cols = [int((j + 0.5) * p.shape[1] / w) for j in range(w)]
        for r in rows:
            for c in cols:
                if s["label"][r, c] != 255:
                    ref[s["label"][r, c], p[r, c]] += 1
        for r in range(p.shape[0]):
            for c in range(p.shape[1]):
                nb = p[max(r - 1, 0):r + 2, max(c - 1, 0):c + 2]
                count += int((nb == p[r, c]).sum() == 1)
                total += 1
    low, ipr = res["low_res"], res["ipr"]
    assert (low.confusion.matrix == ref).all() and ref.sum() > 0
    assert ipr.pred.count == count and ipr.pred.total == total and 0 < count < total
    assert ipr.gt.total == sum(int((s["label"] != 255).sum()) for s in samples)
    assert ipr.summary() == {"ipr": count / total, "gt_ipr": ipr.gt.count / ipr.gt.total}
    assert "low-resolution (1/16, nearest)" in low.format_table() and "ground truth" in ipr.format_table()
    assert ipr.to_dict()["pred"]["total"] == total


def test_low_res_and_ipr_equal_the_metric_functions_after_label_map():
    samples = semantic_samples(seed=4)
    preds = random_predictions(samples, 20, seed=5)
    lut = np.arange(256, dtype=np.uint8)
    lut[15:20] = 1
    res = run([{"type": "low_res", "label_map": lut, "factor": 8}, {"type": "ipr", "label_map": lut, "k": 2}],
              samples, [{"sem_seg": preds[s["id"]]} for s in samples])
    cm, ipr = ConfusionMatrix(CCP.num_classes), [0, 0]
    for s in samples:
        p = lut[preds[s["id"]]]
        cm.update(low_resolution(p, 8), low_resolution(s["label"], 8))
        ipr = [a + b for a, b in zip(ipr, isolated_pixel_rate(p, k=2))]
    assert (res["low_res"].confusion.matrix == cm.matrix).all()
    assert [res["ipr"].pred.count, res["ipr"].pred.total] == ipr


def test_low_res_modes_read_the_cell_differently():
    """A 32x32 image, factor 16 (2x2 cells), ground truth one class per cell. The prediction is right at each
    cell's sampled pixel (8, 8 within the cell) but wrong on most of the cell: ``nearest`` scores it perfect,
    ``pooled`` (class probabilities averaged over the cell) takes the cell's majority, ``generator`` reads the
    model's own low-resolution map at the same pixels."""
    label = np.kron(np.array([[1, 2], [3, 4]], np.uint8), np.ones((16, 16), np.uint8))
    pred = np.full((32, 32), 5, np.uint8)
    pred[8::16, 8::16] = [[1, 2], [3, 4]]                     # right only at the sampled pixels
    probs = np.eye(CCP.num_classes, dtype=np.float16)[pred].transpose(2, 0, 1)
    generator = np.kron(np.array([[1, 7], [3, 4]], np.uint8), np.ones((16, 16), np.uint8))
    samples = [{"id": "a", "image": np.zeros((32, 32, 3), np.uint8), "label": label}]
    output = {"sem_seg": pred, "probs": probs, "extras": {"low_res": generator}}
    cm = {mode: run([{"type": "low_res", "mode": mode}], samples, [output])["low_res"].confusion.matrix
          for mode in ("nearest", "pooled", "generator")}
    assert np.trace(cm["nearest"]) == 4                                        # every cell right
    assert np.trace(cm["pooled"]) == 0 and cm["pooled"][:, 5].sum() == 4       # the majority: class 5
    assert np.trace(cm["generator"]) == 3 and cm["generator"][2, 7] == 1
    with pytest.raises(ConfigError, match="no low-resolution output"):
        run([{"type": "low_res", "mode": "generator"}], samples, [{"sem_seg": pred}])
    with pytest.raises(ConfigError, match="mode must be"):
        run([{"type": "low_res", "mode": "bilinear"}], samples, [output])


# -- levels -----------------------------------------------------------------------------------------

class AsArray:
    """An extra that is not an ndarray but converts to one (as hparse.structures.LabelMap)."""

    def __init__(self, data):
        self.data = data

    def __array__(self, dtype=None, copy=None):
        return self.data


def test_levels_score_each_level_against_the_mapped_ground_truth():
    samples = semantic_samples()
    rng = np.random.default_rng(7)
    outputs = [{"extras": {"level2": rng.integers(0, 3, s["label"].shape).astype(np.uint8),
                           "level3": AsArray(rng.integers(0, 2, s["label"].shape).astype(np.uint8))}}
               for s in samples]
    res = run(["levels"], samples, outputs)["levels"]
    for lvl in (2, 3):
        cm = ConfusionMatrix(len(CCP.level_classes(lvl)))
        for s, o in zip(samples, outputs):
            cm.update(np.asarray(o["extras"][f"level{lvl}"]), CCP.hierarchy_lut(lvl)[s["label"]])
        ref = semantic_scores(cm.matrix, "ce2p", CCP.level_classes(lvl))
        assert res.levels[lvl].summary() == ref.summary()
        assert res.summary()[f"level{lvl}_miou"] == ref.miou
    assert res.levels[2].class_names == ("background", "upper-body", "lower-body")
    assert "level 3" in res.format_table() and set(res.to_dict()) == {"level2", "level3", "num_images"}


def test_levels_oracle_and_refusals():
    samples = semantic_samples(n=2)
    oracle = [{"extras": {f"level{lvl}": np.where(s["label"] == 255, 0, CCP.hierarchy_lut(lvl)[s["label"]])
                          .astype(np.uint8) for lvl in (2, 3)}} for s in samples]
    res = run(["levels"], samples, oracle)["levels"]
    assert res.summary()["level2_pixel_acc"] == 1.0 and res.summary()["level3_pixel_acc"] == 1.0
    with pytest.raises(ConfigError, match="no hierarchy levels"):
        run(["levels"], samples, [{"sem_seg": s["label"]} for s in samples])
    flat = DatasetMeta("flat", ("background", "thing"))
    with pytest.raises(ConfigError, match="flat has no hierarchy"):
        build_evaluators(["levels"], flat)


# -- instance ---------------------------------------------------------------------------------------

def scene(rng, i, h=32, w=40, meta=CIHP) -> dict:
    """2-4 people as rectangles of part bands; later people occlude earlier ones (CIHP human ids)."""
    label, human = np.zeros((h, w), np.uint8), np.zeros((h, w), np.uint8)
    for k in range(1, int(rng.integers(2, 5)) + 1):
        y, x = int(rng.integers(0, h - 12)), int(rng.integers(0, w - 10))
        hh, ww = int(rng.integers(8, h - y + 1)), int(rng.integers(6, w - x + 1))
        bands = np.sort(rng.choice(np.arange(1, meta.num_classes), 3, replace=False))
        rows = np.array_split(np.arange(y, y + hh), 3)
        for c, r in zip(bands, rows):
            label[r[0]:r[-1] + 1, x:x + ww] = c
        human[y:y + hh, x:x + ww] = k
    present = [k for k in np.unique(human) if k]                 # fully occluded people vanish: renumber
    human = np.searchsorted(np.array([0, *present]), human).astype(np.uint8)
    label[human == 0] = 0
    label[0, :3] = 255
    persons = [np.where(human == k, label, 0).astype(np.uint8) for k in range(1, int(human.max()) + 1)]
    return {"id": f"v{i // 2}/{i}", "image": np.zeros((h, w, 3), np.uint8), "label": label, "human_ids": human,
            "person_labels": persons}


def noisy_prediction(rng, sample, meta=CIHP) -> PersonInstances:
    """The people, shifted / relabelled a little, one dropped sometimes, a false one added, random scores."""
    gt = ground_truth_instances(sample, meta.num_classes)
    maps = [np.roll(p, int(rng.integers(-2, 3)), axis=int(rng.integers(0, 2))) for p in gt.parsings]
    for m in maps:
        m[(m > 0) & (rng.random(m.shape) < 0.1)] = int(rng.integers(1, meta.num_classes))
    if len(maps) > 2 and rng.random() < 0.5:
        maps.pop(0)
    fake = np.zeros_like(sample["label"])
    fake[-6:, -8:] = 3
    maps.append(fake)
    n = len(maps)
    persons = PersonInstances.from_person_labels(maps, scores=rng.uniform(0.05, 1, n).round(3))
    persons.part_scores = rng.uniform(0.1, 1, (n, meta.num_classes)).astype(np.float32)
    return persons


@pytest.fixture(scope="module")
def scenes():
    rng = np.random.default_rng(11)
    samples = [scene(rng, i) for i in range(6)]
    return samples, [noisy_prediction(rng, s) for s in samples]


def with_rois(persons: PersonInstances) -> PersonInstances:
    """The same people given as RoI maps over their boxes (1:1, so the pasting is exact)."""
    boxes = persons.boxes.astype(int)
    rois = [persons.parsings[k, y1:y2, x1:x2] if x2 > x1 else np.zeros((1, 1), np.uint8)
            for k, (x1, y1, x2, y2) in enumerate(boxes)]
    size = max(max(r.shape) for r in rois)
    padded = np.zeros((len(rois), size, size), np.uint8)
    boxes_out = persons.boxes.copy()
    for k, r in enumerate(rois):
        padded[k, :r.shape[0], :r.shape[1]] = r
        boxes_out[k, 2:] = boxes_out[k, :2] + size
    return PersonInstances(persons.image_size, boxes=boxes_out, scores=persons.scores, roi_parsings=padded,
                           part_scores=persons.part_scores)


@pytest.mark.parametrize("options", [{}, {"part_score": "part", "one_to_one": True, "convention": "nan"},
                                     {"score_thresh": 0.4, "semantic_thresh": 0.2}])
def test_instance_in_memory_equals_writing_and_scoring_the_folders(scenes, tmp_path, options):
    samples, preds = scenes
    preds = preds[:3] + [with_rois(p) for p in preds[3:]]
    reader = ListReader(samples, CIHP)
    memory = run([{"type": "instance", **options}], samples, [{"instances": p} for p in preds], CIHP)["instance"]
    write = {k: v for k, v in options.items() if k in ("part_score", "score_thresh", "semantic_thresh")}
    for s, p in zip(samples, preds):
        io.write_instance_outputs(tmp_path, s["id"], p, CIHP, **write)
    score = {k: v for k, v in options.items() if k in ("one_to_one", "convention")}
    folder = evaluate_instance_folder(tmp_path, reader, progress=False, **score)
    assert is_instance_folder(tmp_path) and folder.split == "val" and memory.split is None
    summary = memory.summary()
    assert summary == folder.summary() and set(summary) == set(EVALUATORS.get("instance").summary_keys)
    assert 0 < summary["APr_vol"] < 1 and 0 < summary["APp_vol"] < 1 and 0 < summary["APh"] < 1
    assert {**memory.to_dict(), "split": "val"} == folder.to_dict()
    assert not memory.notes and memory.missing == dict.fromkeys(io.FOLDERS, 0)


def test_instance_ground_truth_as_prediction_is_perfect(scenes):
    samples, _ = scenes
    gts = [{"instances": ground_truth_instances(s, CIHP.num_classes)} for s in samples]
    res = run(["instance"], samples, gts, CIHP, batch_size=4)["instance"]
    s = res.summary()
    assert {k: s[k] for k in ("APr_vol", "APp_vol", "PCP50", "APh")} == {"APr_vol": 1.0, "APp_vol": 1.0,
                                                                        "PCP50": 1.0, "APh": 1.0}
    assert res.persons.npos == sum(int(x["human_ids"].max()) for x in samples) and res.parts.num_images == 6
    assert best_metric_value({"instance": res}, "instance/APp_vol") == 1.0


def test_instance_pieces_missing_and_ground_truth_missing(scenes):
    samples, preds = scenes
    pieces = {"part_instances": preds[0].to_part_instances(), "persons": preds[0], "humans": None}
    outputs = [pieces] + [{"part_instances": None, "persons": None, "humans": None}] * (len(samples) - 1)
    res = run(["instance"], samples, outputs, CIHP)["instance"]
    assert res.semantic is None and res.parts.num_images == 1 and res.humans.num_preds == 0
    assert res.missing == {io.PARTS: 5, io.PERSONS: 5, io.HUMANS: 6}
    assert any("global_parsing/ not in the predictions: mIoU skipped" in n for n in res.notes)
    counted = run([{"type": "instance", "official_image_list": False}], samples, outputs, CIHP)["instance"]
    assert counted.parts.num_images == 6 and counted.summary()["APr_vol"] < res.summary()["APr_vol"]
    bare = [{k: v for k, v in s.items() if k not in ("human_ids", "person_labels")} for s in samples]
    res = run(["instance"], bare, [{"instances": p} for p in preds], CIHP)["instance"]
    assert res.parts is res.persons is res.humans is None and res.semantic is not None
    assert any("no per-person ground truth" in n and "AP^p / PCP skipped" in n for n in res.notes)
    with pytest.raises(ConfigError, match="needs outputs\\['instances'\\]"):
        run(["instance"], samples, [{"extras": {}}] * len(samples), CIHP)


def test_ground_truth_parts_without_instance_maps_match_the_composer(scenes):
    samples, _ = scenes
    for s in samples:
        label = np.where(s["label"] < CIHP.num_classes, s["label"], 0).astype(np.uint8)
        ref = PartInstances.from_cihp(*part_instances(label, s["human_ids"], CIHP.num_classes, "consecutive"))
        got = ground_truth_parts(s, CIHP.num_classes)
        assert (got.ids == ref.ids).all() and got.classes.tolist() == ref.classes.tolist()
    assert ground_truth_parts({"label": samples[0]["label"]}, CIHP.num_classes) is None


def test_challenge_folders_writes_and_reports(scenes, tmp_path):
    samples, preds = scenes
    res = run([{"type": "challenge_folders", "out": str(tmp_path), "folders": [io.GLOBAL, io.PARTS]}], samples,
              [{"instances": p} for p in preds], CIHP)["challenge_folders"]
    assert res.summary() == {"num_images": 6.0} and str(tmp_path) in res.format_table()
    assert io.present_folders(tmp_path) == [io.GLOBAL, io.PARTS]
    got = io.read_instance_outputs(tmp_path, samples[1]["id"])
    assert (got.semantic == preds[1].to_semantic()).all()
    with pytest.raises(ConfigError, match="unknown folder"):
        build_evaluators([{"type": "challenge_folders", "out": "x", "folders": ["masks"]}], CIHP)


# -- the protocol -----------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["semantic", "low_res", "ipr", "levels", "instance", "challenge_folders"])
def test_nothing_processed_raises(name, tmp_path):
    spec = {"type": name, "out": str(tmp_path)} if name == "challenge_folders" else name
    (ev,) = build_evaluators([spec], CIHP)
    ev.process([], [])
    with pytest.raises(DataError, match=f"{name} evaluator: nothing was scored"):
        ev.evaluate()


def test_unreadable_samples_are_skipped_and_none_read_raises(caplog):
    samples = semantic_samples()
    preds = random_predictions(samples, 15)
    reader = ListReader(samples, CCP, broken={"im1"})
    kept = [{"sem_seg": preds[s["id"]]} for s in samples if s["id"] != "im1"]
    with caplog.at_level(logging.WARNING, logger="hparse.eval"):
        res = evaluate_model(fixed(kept), reader, build_evaluators(["semantic"], CCP), batch_size=2, progress=False)
    assert res["semantic"].num_images == 2 and "skipping unreadable sample" in caplog.text
    whole = run(["semantic"], [samples[0], samples[2]], kept)["semantic"]
    assert (whole.confusion.matrix == res["semantic"].confusion.matrix).all()
    with pytest.raises(DataError, match="none of the 3 samples"):
        evaluate_model(fixed([]), ListReader(samples, CCP, broken={"im0", "im1", "im2"}),
                       build_evaluators(["semantic"], CCP), progress=False)


def test_build_evaluators_messages():
    with pytest.raises(ConfigError, match="unknown evaluator 'miou'; known: .*challenge_folders, instance"):
        build_evaluators(["miou"], CCP)
    with pytest.raises(ConfigError, match="evaluator 'semantic' has no option 'factor'; its options: convention"):
        build_evaluators([{"type": "semantic", "factor": 4}], CCP)
    with pytest.raises(ConfigError, match="needs the option\\(s\\) out"):
        build_evaluators(["challenge_folders"], CCP)
    with pytest.raises(ConfigError, match="listed more than once"):
        build_evaluators(["semantic", {"type": "semantic", "convention": "nan"}], CCP)
    with pytest.raises(ConfigError, match="convention must be one of"):
        build_evaluators([{"type": "semantic", "convention": "voc"}], CCP)
    with pytest.raises(ConfigError, match="'type' key"):
        build_evaluators([{"convention": "nan"}], CCP)
    evs = build_evaluators(["semantic", {"type": "ipr", "k": 10}], CCP)
    assert [e.name for e in evs] == ["semantic", "ipr"] and evs[1].k == 10


def test_best_metric_value_and_check():
    samples = semantic_samples(n=1)
    res = run(["semantic", "ipr"], samples, [{"sem_seg": samples[0]["label"]}])
    assert best_metric_value(res, "semantic/miou") == res["semantic"].scores.miou
    with pytest.raises(ConfigError, match="'instance/APp_vol' was not produced; available: semantic/pixel_acc"):
        best_metric_value(res, "instance/APp_vol")
    with pytest.raises(ConfigError, match="available: .*ipr/gt_ipr"):
        best_metric_value(res, "ipr/miou")
    with pytest.raises(ConfigError, match="must read '<evaluator>/<key>'"):
        best_metric_value(res, "miou")
    evs = build_evaluators(["semantic", "levels"], CCP)
    check_best_metric(evs, "levels/level2_miou")
    with pytest.raises(ConfigError, match="no evaluator 'instance'"):
        check_best_metric(evs, "instance/APr_vol")
    with pytest.raises(ConfigError, match="semantic reports pixel_acc, mean_acc, miou"):
        check_best_metric(evs, "semantic/ap")
