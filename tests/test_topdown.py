"""Two-stage top-down reference: crop, parse, paste back inside the box, score."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import torch

from hparse.engine.evaluate_instances import evaluate_instance_folder
from hparse.engine.topdown import parse_people, read_box_file, run_topdown
from hparse.labels import get_meta

META = get_meta("ccp15")


class ColourOracle:
    """A 'parser' that reads the class from the red channel (class * 10): exact on any crop."""

    def scores(self, images):
        out = []
        for im in images:
            label = torch.from_numpy(im[..., 0].astype(np.int64) // 10)
            out.append(torch.nn.functional.one_hot(label, META.num_classes).permute(2, 0, 1).float() * 20)
        return out


class TinyReader:
    def __init__(self, samples):
        self.samples, self.meta, self.split = samples, META, "val"
        self.ids = [s["id"] for s in samples]
        self.items = [SimpleNamespace(id=i) for i in self.ids]

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, i):
        return self.samples[i]


def scene(k: int) -> dict:
    """Two people side by side (boxes touch but do not overlap) on a 60x80 canvas."""
    h, w = 60, 80
    label, human = np.zeros((h, w), np.uint8), np.zeros((h, w), np.uint8)
    label[10:50, 8:30], human[10:50, 8:30] = 5 + k, 1
    label[10:20, 8:30] = 2
    label[5:55, 40:70], human[5:55, 40:70] = 7, 2
    label[40:55, 40:70] = 9
    image = np.zeros((h, w, 3), np.uint8)
    image[..., 0] = label * 10
    persons = [np.where(human == p, label, 0).astype(np.uint8) for p in (1, 2)]
    return {"id": f"s{k}", "image": image, "label": label, "human_ids": human, "person_labels": persons,
            "meta": {}}


def test_oracle_parser_with_gt_boxes_is_perfect(tmp_path):
    reader = TinyReader([scene(0), scene(1)])
    out = run_topdown(ColourOracle(), reader, tmp_path / "pred", boxes="gt", context=0.5, progress=False)
    s = evaluate_instance_folder(out, reader, convention="nan", progress=False).summary()
    assert s["APp50"] == 1.0 and s["PCP50"] == 1.0 and s["APh"] == 1.0 and s["APr_vol"] == 1.0
    assert s["miou"] == 1.0


def test_labels_stay_inside_the_box_and_part_scores():
    s = scene(0)
    # a box covering only the left person, enlarged context reaches the right one: not pasted
    persons = parse_people(ColourOracle(), s["image"], np.array([[8, 10, 30, 50]]), context=2.0)
    assert persons.parsings.shape == (1, 60, 80)
    assert (persons.parsings[0, :, 30:] == 0).all()
    np.testing.assert_array_equal(persons.parsings[0, 10:50, 8:30], s["label"][10:50, 8:30])
    assert persons.part_scores[0, 5] == 1.0 and persons.part_scores[0, 7] == 1.0   # 7 seen in the crop
    empty = parse_people(ColourOracle(), s["image"], np.zeros((0, 4)))
    assert len(empty) == 0 and empty.parsings.shape == (0, 60, 80)


def test_box_file(tmp_path):
    p = tmp_path / "boxes.json"
    p.write_text('{"a": [[1, 2, 3, 4]], "b": [[1, 2, 3, 4, 0.5]], "c": []}')
    boxes = read_box_file(p)
    assert boxes["a"].tolist() == [[1, 2, 3, 4, 1]] and boxes["b"][0, 4] == 0.5 and boxes["c"].shape == (0, 5)
    p.write_text('{"a": [[1, 2, 3]]}')
    import pytest

    from hparse.errors import DataError
    with pytest.raises(DataError, match="4 or 5 numbers"):
        read_box_file(p)


class BoxOracle:
    """An 'instance model' whose detections are the ground-truth people of ``scene`` (with a low-scoring extra)."""

    def predict(self, image):
        from hparse.structures import PersonInstances
        boxes = np.array([[8, 10, 30, 50], [40, 5, 70, 55], [0, 0, 5, 5]], np.float32)
        return PersonInstances(image.shape[:2], boxes=boxes, scores=np.array([0.9, 0.8, 0.1]))


def test_a_detector_feeds_the_boxes_and_they_are_saved(tmp_path):
    from hparse.engine.topdown import detected_boxes

    reader = TinyReader([scene(0), scene(1)])
    out = run_topdown(ColourOracle(), reader, tmp_path / "pred", boxes=detected_boxes(BoxOracle(), min_score=0.3),
                      context=0.5, progress=False)
    s = evaluate_instance_folder(out, reader, convention="nan", progress=False).summary()
    assert s["APp50"] == 1.0 and s["PCP50"] == 1.0
    saved = read_box_file(out / "boxes.json")          # the detections, reusable as --boxes FILE
    assert sorted(saved) == ["s0", "s1"]
    np.testing.assert_allclose(saved["s0"], [[8, 10, 30, 50, 0.9], [40, 5, 70, 55, 0.8]], rtol=1e-6)


def box_detector():
    return SimpleNamespace(model=SimpleNamespace(task="instance"), predict=BoxOracle().predict)


def test_small_people_are_parsed_again_on_their_crops():
    """At long side 100 (x1.25) the left person is 50 px tall (< 0.6 x 100: parsed again), the right one 62.5 px
    (kept), the third scores below 0.5 (ignored); the crop's parts replace the whole photo's inside its box only."""
    from hparse.engine.topdown import SmallPeopleRefiner

    s = scene(0)
    oracle = ColourOracle()
    oracle.resizer = SimpleNamespace(long_side=100)
    refiner = SmallPeopleRefiner(box_detector(), min_score=0.5, max_height=0.6, context=0.5)
    np.testing.assert_allclose(refiner.small_people(s["image"], 100), [[8, 10, 30, 50, 0.9]])
    missed = np.zeros((60, 80), np.uint8)     # a whole-photo parse that found nobody
    got = refiner(oracle, s["image"], missed)
    np.testing.assert_array_equal(got[10:50, 8:30], s["label"][10:50, 8:30])
    got[10:50, 8:30] = 0
    assert not got.any()
    nobody = SmallPeopleRefiner(box_detector(), min_score=0.95)
    assert nobody(oracle, s["image"], missed) is missed                      # no small person: labels kept


def test_people_needs_an_instance_model():
    import pytest

    from hparse.engine.topdown import SmallPeopleRefiner
    from hparse.errors import HParseError

    with pytest.raises(HParseError, match="instance model"):
        SmallPeopleRefiner(SimpleNamespace(model=SimpleNamespace(task="semantic")))


def test_people_option_finds_the_small_people_of_a_real_group_photo(cihp_samples_root):
    """CIHP 0005008 (four small people): the shipped ``robust`` model alone labels under half of CIHP's person pixels
    as a person; parsing each detected person again on its crop (``people=``) raises the person IoU by over 0.1."""
    import hparse
    from hparse.io.image import read_image, read_label
    from hparse.metrics.semantic import person_iou

    image = read_image(cihp_samples_root / "Images" / "0005008.jpg")
    truth = read_label(cihp_samples_root / "Category_ids" / "0005008.png")
    alone = person_iou(hparse.load("robust", backend="torch").predict(image), truth)
    refined = person_iou(hparse.load("robust", backend="torch", people="unified_cpu_ccpmulti").predict(image), truth)
    assert alone < 0.5 and refined > alone + 0.1
