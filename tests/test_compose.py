"""``hparse data compose``: multi-person CIHP-layout data pasted together from single-person data."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import scipy.io
from PIL import Image
from typer.testing import CliRunner

from hparse.cli import app
from hparse.data.compose import (
    ComposeParams,
    Composer,
    Person,
    _drop_hidden,
    _Placed,
    compose_dataset,
    instance_numbering,
    make_background,
    part_instances,
    sample_id,
)
from hparse.data.readers import build_reader
from hparse.errors import ConfigError, DataError
from hparse.labels import CCP_TO_CCP15, get_meta

runner = CliRunner()
SMALL = ComposeParams(size=(64, 80), min_pixels=8)
CCP15_TO_CCP = {t: s for s, t in sorted(CCP_TO_CCP15.items(), reverse=True)}  # one raw tag per class


def make_ccp_like(root: Path, n_train: int = 6, n_val: int = 3, seed: int = 0) -> Path:
    """A tiny CCP: ``photos/NNNN.jpg`` (48x32), ``annotations/pixel-level/NNNN.mat`` with one person
    (an ellipse of a few raw CCP tags) and ``train.txt`` / ``val.txt``; one train image has nobody."""
    rng = np.random.default_rng(seed)
    (root / "photos").mkdir(parents=True)
    (root / "annotations" / "pixel-level").mkdir(parents=True)
    ids = [f"{k:04d}" for k in range(1, n_train + n_val + 1)]
    yy, xx = np.mgrid[:48, :32]
    for k, i in enumerate(ids):
        rgb = rng.integers(0, 256, (48, 32, 3), dtype=np.uint8)
        Image.fromarray(rgb).save(root / "photos" / f"{i}.jpg", quality=95)
        gt = np.zeros((48, 32), np.uint8)
        if k != 2:  # sample 0003 has no person
            cy, cx = 24 + rng.integers(-4, 5), 16 + rng.integers(-3, 4)
            body = ((yy - cy) / 18.0) ** 2 + ((xx - cx) / 8.0) ** 2 <= 1
            parts = rng.choice([2, 4, 5, 8, 10, 13], 3, replace=False)
            band = np.minimum((yy - (cy - 18)) * 3 // 37, 2).clip(0)
            for b, c in enumerate(parts):
                gt[body & (band == b)] = CCP15_TO_CCP[int(c)]
        scipy.io.savemat(root / "annotations" / "pixel-level" / f"{i}.mat", {"groundtruth": gt})
    (root / "train.txt").write_text("".join(f"{i}\n" for i in ids[:n_train]))
    (root / "val.txt").write_text("".join(f"{i}\n" for i in ids[n_train:]))
    return root


@pytest.fixture(scope="module")
def ccp_like(tmp_path_factory) -> Path:
    return make_ccp_like(tmp_path_factory.mktemp("ccp_like"))


@pytest.fixture(scope="module")
def composed(ccp_like, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("composed") / "multi"
    compose_dataset("ccp", ccp_like, out, params=SMALL, count=5, seed=3, progress=False)
    return out


def files_of(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_layout_meta_and_reader_round_trip(ccp_like, composed):
    meta = json.loads((composed / "meta.json").read_text())
    assert meta["label_set"] == "ccp15" and meta["seed"] == 3 and meta["layout"] == "cihp"
    assert meta["source"]["layout"] == "ccp" and meta["params"]["per_image"] == [2, 5]
    assert meta["instance_numbering"] == "cihp" and meta["counts"] == {"train": 5, "val": 5}
    for split, folder in (("train", "Training"), ("val", "Validation")):
        assert (composed / folder / f"{split}_id.txt").read_text().split() == [sample_id(split, k) for k in range(5)]
        composer = Composer(build_reader("ccp", ccp_like, split), SMALL, seed=3)
        for label_set in (None, "ccp15"):  # meta.json names the label set; --labels ccp15 agrees
            reader = build_reader("cihp", composed, split, label_set=label_set)
            assert reader.label_set == "ccp15" and len(reader) == 5
        for k in range(5):
            c = composer.compose(k)
            s = reader[k]
            assert s["id"] == sample_id(split, k) and s["image"].shape == (64, 80, 3)
            n = int(c.human_ids.max())
            assert 1 <= n <= 5 and len(c.sources) == n
            np.testing.assert_array_equal(s["label"], c.label)
            np.testing.assert_array_equal(s["human_ids"], c.human_ids)
            np.testing.assert_array_equal(s["instance_ids"], c.instance_ids)
            np.testing.assert_array_equal(s["instances"], c.instances)
            assert len(s["person_labels"]) == n
            for h, p in enumerate(s["person_labels"], 1):
                np.testing.assert_array_equal(p, np.where(c.human_ids == h, c.label, 0))
            # every foreground pixel belongs to a person and the other way round
            np.testing.assert_array_equal(s["label"] > 0, s["human_ids"] > 0)
            # CIHP instance numbering, one row per (person, class) present, every row has pixels
            for inst, cls, hum in s["instances"]:
                assert inst == (hum - 1) * 15 + cls
                m = s["instance_ids"] == inst
                assert m.any() and (s["label"][m] == cls).all() and (s["human_ids"][m] == hum).all()
            pairs = {(int(h), int(c)) for h, c in zip(s["human_ids"][s["label"] > 0], s["label"][s["label"] > 0])}
            assert pairs == {(int(h), int(c)) for _, c, h in s["instances"]}
            # the background is a blurred photo region, not black
            assert s["image"][s["label"] == 0].mean() > 20


def test_every_written_person_is_visible(composed):
    people = []
    for split in ("train", "val"):
        reader = build_reader("cihp", composed, split)
        for k in range(len(reader)):
            human = reader[k]["human_ids"]
            n = int(human.max())
            people.append(n)
            counts = np.bincount(human.ravel(), minlength=n + 1)[1:]
            assert (counts >= SMALL.min_pixels).all()  # ids 1..n consecutive, each with pixels
    assert min(people) >= 2 and max(people) > 2


def test_occluded_person_is_dropped():
    label = np.full((20, 10), 4, np.uint8)
    p = Person(np.zeros((20, 10, 3), np.uint8), label, label > 0, "x")
    lut = get_meta("ccp15").flip_lut()
    params = ComposeParams(size=(40, 40), min_visible=0.2, min_pixels=1)
    behind = _Placed(p, 5, 5, 20, 10, False).render(lut)
    front = _Placed(p, 6, 5, 20, 10, False).render(lut)        # covers 19 of 20 rows of `behind`
    aside = _Placed(p, 5, 25, 20, 10, False).render(lut)
    kept, dropped = _drop_hidden([behind, front, aside], params)
    assert dropped == 1 and kept == [front, aside]
    kept, dropped = _drop_hidden([behind, aside], params)
    assert dropped == 0 and len(kept) == 2


def test_deterministic_and_resumable(ccp_like, composed, tmp_path):
    again = tmp_path / "again"
    compose_dataset("ccp", ccp_like, again, params=SMALL, count=5, seed=3, progress=False)
    assert files_of(again) == files_of(composed)
    other = tmp_path / "other"
    compose_dataset("ccp", ccp_like, other, params=SMALL, count=5, seed=4, progress=False)
    assert files_of(other) != files_of(composed)
    # interrupted run: the image of sample 2 and a label of sample 4 are missing -> redone, identical
    (again / "Training" / "Images" / "train_000002.jpg").unlink()
    (again / "Validation" / "Human_ids" / "val_000004.png").unlink()
    rep = compose_dataset("ccp", ccp_like, again, params=SMALL, count=5, seed=3, progress=False)
    assert rep.written == {"train": 1, "val": 1} and rep.skipped == {"train": 4, "val": 4}
    assert files_of(again) == files_of(composed)
    # other settings into the same folder: refused without --overwrite, fewer samples then clean up
    with pytest.raises(DataError, match="other settings"):
        compose_dataset("ccp", ccp_like, again, params=SMALL, count=5, seed=9, progress=False)
    rep = compose_dataset("ccp", ccp_like, again, params=SMALL, count=2, seed=9, overwrite=True, progress=False)
    assert rep.counts == {"train": 2, "val": 2}
    assert sorted(p.name for p in (again / "Training" / "Images").iterdir()) == ["train_000001.jpg",
                                                                                  "train_000002.jpg"]
    assert json.loads((again / "meta.json").read_text())["seed"] == 9


def test_background_modes_and_bad_input(ccp_like, tmp_path):
    for mode in ("colour", "source", "mosaic"):
        out = tmp_path / mode
        compose_dataset("ccp", ccp_like, out, splits=["val"], params=ComposeParams(size=(48, 48), background=mode,
                        per_image=(2, 3), min_pixels=8), count=2, progress=False)
        s = build_reader("cihp", out, "val")[0]
        assert s["image"][s["label"] == 0].mean() > 20 and 1 <= s["human_ids"].max() <= 3
    with pytest.raises(ConfigError, match="per_image"):
        compose_dataset("ccp", ccp_like, tmp_path / "x", params=ComposeParams(per_image=(5, 2)), progress=False)
    with pytest.raises(ConfigError, match="background"):
        compose_dataset("ccp", ccp_like, tmp_path / "x", params=ComposeParams(background="black"), progress=False)
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    with pytest.raises(DataError, match="not a composed dataset"):
        compose_dataset("ccp", ccp_like, tmp_path / "busy", params=SMALL, count=1, progress=False)
    res = runner.invoke(app, ["data", "compose", "ccp", str(ccp_like), str(tmp_path / "y"), "--per-image", "2-x"])
    assert res.exit_code == 2 and "--per-image" in res.output
    res = runner.invoke(app, ["data", "compose", "ccp", str(tmp_path / "nowhere"), str(tmp_path / "y")])
    assert res.exit_code == 2 and "not found" in res.output


def test_mosaic_background_is_as_sharp_as_its_source():
    """Blurred canvas backgrounds teach that sharp means person; the mosaic's tiles are shrunk source crops."""
    rng = np.random.default_rng(0)
    photo = cv2.GaussianBlur(rng.integers(0, 256, (300, 200, 3), dtype=np.uint8), (0, 0), 2)  # a soft photo
    fg = np.zeros((300, 200), bool)
    fg[50:250, 60:140] = True                                                               # its person

    def sharpness(img):
        return cv2.Laplacian(cv2.cvtColor(img, cv2.COLOR_RGB2GRAY), cv2.CV_64F).var()

    blur, mosaic = (make_background(photo, fg, (96, 96), m, np.random.default_rng(1)) for m in ("blur", "mosaic"))
    assert mosaic.shape == blur.shape == (96, 96, 3) and mosaic.dtype == np.uint8
    assert sharpness(mosaic) > 5 * sharpness(blur)
    assert not np.array_equal(mosaic, make_background(photo, fg, (96, 96), "mosaic", np.random.default_rng(2)))


def test_occluder_band_hides_lower_bodies(ccp_like):
    params = ComposeParams(size=(64, 80), min_pixels=8, per_image=(1, 2), occluder=1.0)
    composer = Composer(build_reader("ccp", ccp_like, "train"), params, seed=0)
    plain = Composer(build_reader("ccp", ccp_like, "train"), ComposeParams(size=(64, 80), min_pixels=8,
                                                                            per_image=(1, 2)), seed=0)
    for i in range(4):
        c = composer.compose(i)
        band = int(0.15 * 64)
        assert not c.label[-band:].any() and not c.human_ids[-band:].any()   # at least 15 % of the rows hidden
        ids = np.unique(c.human_ids[c.human_ids > 0])
        assert list(ids) == list(range(1, len(c.sources) + 1))               # every kept person still visible
        assert all((c.human_ids == k).sum() >= 8 for k in ids)
    assert any(plain.compose(i).label[-band:].any() for i in range(4))       # without it people reach the bottom
    with pytest.raises(ConfigError, match="occluder"):
        ComposeParams(occluder=1.5).validate()


def test_instance_numbering():
    assert instance_numbering(get_meta("ccp15"), 5) == "cihp"
    assert instance_numbering(get_meta("cihp"), 12) == "cihp"          # max id 239 as on CIHP val
    assert instance_numbering(get_meta("mhp_v2"), 5) == "consecutive"  # 5 * 59 > 255
    label = np.array([[0, 3, 3, 7], [58, 58, 0, 7]], np.uint8)
    human = np.array([[0, 1, 1, 1], [5, 5, 0, 2]], np.uint8)
    inst, rows = part_instances(label, human, 59, "consecutive")
    assert rows.tolist() == [[1, 3, 1], [2, 7, 1], [3, 7, 2], [4, 58, 5]]
    assert inst.tolist() == [[0, 1, 1, 2], [4, 4, 0, 3]]
    with pytest.raises(DataError, match="uint8"):
        part_instances(label, human, 59, "cihp")


def test_cli_compose_and_check(ccp_like, tmp_path):
    out = tmp_path / "cli"
    res = runner.invoke(app, ["data", "compose", "ccp", str(ccp_like), str(out), "--count", "3", "--size", "48x64",
                              "--per-image", "2-3", "--seed", "1", "--no-progress"])
    assert res.exit_code == 0, res.output
    assert "train: 3 (3 written" in res.output
    assert Image.open(out / "Training" / "Images" / "train_000001.jpg").size == (64, 48)
    res = runner.invoke(app, ["data", "check", "cihp", str(out), "--labels", "ccp15", "--no-progress"])
    assert res.exit_code == 0, res.output
    assert "no problems" in res.output and "6 samples" in res.output


def test_cihp_reader_label_sets(tmp_path, ccp_like):
    """Without meta.json a label set with no cihp converter is the files' own; cihp->vip still converts."""
    out = tmp_path / "c"
    compose_dataset("ccp", ccp_like, out, splits=["val"], params=SMALL, count=1, progress=False)
    (out / "meta.json").unlink()
    assert build_reader("cihp", out, "val", label_set="ccp15").meta.name == "ccp15"
    assert build_reader("cihp", out, "val").native_label_set == "cihp"  # CIHP's own, as before
    vip = build_reader("cihp", out, "val", label_set="vip")  # a converter exists: converted as before
    assert (vip.native_label_set, vip.label_set) == ("cihp", "vip")
    (out / "meta.json").write_text('{"label_set": "nope"}')
    with pytest.raises(DataError, match="nope"):
        build_reader("cihp", out, "val")


def test_real_ccp(ccp_root, tmp_path):
    out = tmp_path / "ccp-multi"
    res = runner.invoke(app, ["data", "compose", "ccp", str(ccp_root), str(out), "--count", "3", "--no-progress"])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["data", "check", "cihp", str(out), "--labels", "ccp15", "--no-progress"])
    assert res.exit_code == 0, res.output
    composer = Composer(build_reader("ccp", ccp_root, "val"), ComposeParams(), seed=0)
    reader = build_reader("cihp", out, "val", label_set="ccp15")
    for k in range(3):
        s, c = reader[k], composer.compose(k)
        assert s["image"].shape == (512, 512, 3)
        np.testing.assert_array_equal(s["human_ids"], c.human_ids)
        np.testing.assert_array_equal(s["instances"], c.instances)
        assert len(s["person_labels"]) == len(c.sources) >= 2


def test_composed_canvases_train_alongside_their_source(ccp_like, composed):
    """``data.extra_train``: CCP photos and their composed canvases read as one training set (the keys both have)."""
    from hparse.data.dataset import MixedReader

    single = build_reader("ccp", ccp_like, "train", label_set="ccp15")
    multi = build_reader("cihp", composed, "train", label_set="ccp15")
    mixed = MixedReader([single, multi])
    assert len(mixed) == len(single) + len(multi) and mixed.meta.name == "ccp15"
    first, last = mixed[0], mixed[len(mixed) - 1]
    assert first["id"] == single[0]["id"] and last["id"] == multi[len(multi) - 1]["id"]
    assert set(last) == set(first) == {"id", "image", "label", "meta"}        # no person maps from the canvases
    with pytest.raises(DataError, match="different label sets"):
        MixedReader([single, build_reader("ccp", ccp_like, "train", label_set="ccp")])


def test_extra_train_is_a_checked_config_section():
    from hparse import config as C

    cfg = C.load_config("ce2p_light_ccp_robust")
    assert cfg["data"]["extra_train"] == [{"layout": "cihp", "root": "data/ccp-multi", "split": "train"}]
    with pytest.raises(ConfigError, match="extra_train"):
        C.load_config("ce2p_light_ccp_robust", ["data.extra_train=[{layout: cihp}]"])
