"""Readers: every official layout on a tiny generated copy, error reporting, and real data."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.io
from PIL import Image

from hparse.data.convert import get_converter
from hparse.data.readers import READERS, SplitNotFoundError, build_reader
from hparse.errors import ConfigError, DataError
from hparse.labels import get_meta

from .fixtures_layouts import (
    H,
    W,
    make_atr,
    make_cihp,
    make_folder,
    make_lip,
    make_mhp,
    make_pascal,
    make_ppss,
    make_vip,
    write_png,
)


def check_split(layout, ds, split, **kw):
    """Build the reader, compare ids and every truth array; return the loaded samples."""
    r = build_reader(layout, ds.root, split, **kw)
    assert r.ids == ds.ids[split]
    samples = [r[i] for i in range(len(r))]
    for s in samples:
        truth = ds.truth[s["id"]]
        assert s["image"].dtype == np.uint8 and s["image"].ndim == 3
        assert s["meta"]["orig_size"] == s["image"].shape[:2]
        assert ("label" in s) == ("label" in truth)
        for key in ("label", "human_ids", "instance_ids", "instances"):
            if key in truth:
                np.testing.assert_array_equal(s[key], truth[key], err_msg=f"{s['id']} {key}")
        if "label" in s:
            assert s["label"].shape == s["image"].shape[:2] and s["label"].dtype == np.uint8
    return samples


def test_all_layouts_registered():
    assert {"ccp", "lip", "cihp", "atr", "pascal_person_part", "ppss", "mhp_v2", "vip",
            "folder"} <= set(READERS.names())


@pytest.mark.parametrize("archive", [False, True], ids=["ce2p", "archive"])
def test_lip(tmp_path, archive):
    ds = make_lip(tmp_path, archive=archive)
    train = check_split("lip", ds, "train")
    check_split("lip", ds, "val")
    assert "label" not in check_split("lip", ds, "test")[0]
    for s in train:
        j, truth = s["joints"], ds.truth[s["id"]]["joints"]
        assert j.shape == (16, 3) and j.dtype == np.float32
        np.testing.assert_array_equal(np.isnan(j), np.isnan(truth))
        np.testing.assert_allclose(j[~np.isnan(j)], truth[~np.isnan(truth)], rtol=1e-6)
    assert np.isnan(train[0]["joints"][:2]).all() and not np.isnan(train[0]["joints"][2:]).any()
    assert np.isnan(train[-1]["joints"]).all()  # no CSV row
    assert "joints" not in check_split("lip", ds, "val")[0]  # no val CSV


def test_lip_without_pose_and_label_conversion(tmp_path):
    ds = make_lip(tmp_path, pose=False)
    s = build_reader("lip", tmp_path, "train", label_set="ppss")[0]
    assert "joints" not in s
    np.testing.assert_array_equal(s["label"], get_converter("lip", "ppss")(ds.truth[s["id"]]["label"]))


def test_cihp_instances(tmp_path):
    ds = make_cihp(tmp_path)
    for s in check_split("cihp", ds, "train") + check_split("cihp", ds, "val"):
        label, human, inst = s["label"], s["human_ids"], s["instance_ids"]
        assert s["instances"].dtype == np.int64 and s["instances"].shape[1] == 3
        for i, c, h in s["instances"]:
            assert (label[inst == i] == c).all() and (human[inst == i] == h).all()
        assert len(s["person_labels"]) == human.max() == 2
        for k, p in enumerate(s["person_labels"], 1):
            np.testing.assert_array_equal(p, np.where(human == k, label, 0))
        np.testing.assert_array_equal(sum(s["person_labels"]), label)  # persons do not overlap
    test = check_split("cihp", ds, "test")[0]
    assert "label" not in test and "human_ids" not in test


def test_cihp_semantic_only_and_missing_split(tmp_path):
    ds = make_cihp(tmp_path, instances=False)
    s = check_split("cihp", ds, "val")[0]
    assert not {"human_ids", "instance_ids", "instances", "person_labels"} & set(s)
    (tmp_path / "Testing" / "Images" / f"{ds.ids['test'][0]}.jpg").unlink()
    with pytest.raises(DataError, match=ds.ids["test"][0]):
        build_reader("cihp", tmp_path, "test")


def test_atr_layouts(tmp_path):
    ds = make_atr(tmp_path / "hhp")
    for split in ("train", "val", "test"):
        check_split("atr", ds, split)
    ds = make_atr(tmp_path / "orig", original=True)
    check_split("atr", ds, "all")
    assert build_reader("atr", ds.root / "humanparsing", "all").ids == ds.ids["all"]
    with pytest.raises(SplitNotFoundError, match="split 'all'"):
        build_reader("atr", ds.root, "train")


def test_pascal_person_part(tmp_path):
    ds = make_pascal(tmp_path)
    check_split("pascal_person_part", ds, "train")
    check_split("pascal_person_part", ds, "val")


def test_ppss_grey_remap_and_resize(tmp_path):
    ds = make_ppss(tmp_path)
    train = check_split("ppss", ds, "train")  # ids in numeric video order 1, 2, 10
    assert [s["id"].split("/")[0] for s in train] == ["1", "1", "2", "2", "10", "10"]
    assert {0, 1, 4, 5, 255} <= set(np.unique(np.concatenate([s["label"].ravel() for s in train])).tolist())
    check_split("ppss", ds, "test")
    r = build_reader("ppss", tmp_path, "train", label_to_image=False)
    small = r[r.ids.index("2/0021_1")]
    np.testing.assert_array_equal(small["label"], ds.truth["2/0021_1"]["label_small"])
    assert small["image"].shape == (H // 2, W // 2, 3) and small["meta"]["orig_size"] == (H // 2, W // 2)


def test_mhp_persons(tmp_path):
    ds = make_mhp(tmp_path)
    for s in check_split("mhp_v2", ds, "train") + check_split("mhp_v2", ds, "val"):
        truth = ds.truth[s["id"]]
        assert len(s["person_labels"]) == len(truth["person_labels"])
        for p, t in zip(s["person_labels"], truth["person_labels"]):
            np.testing.assert_array_equal(p, t)
    multi = build_reader("mhp_v2", tmp_path / "LV-MHP-v2", "train")[0]
    assert multi["human_ids"].max() == 3 and multi["meta"]["label_path"].endswith("1_*.png")
    assert ((multi["human_ids"] == 3) == (multi["person_labels"][2] > 0)).all()  # last painted on top
    assert "label" not in check_split("mhp_v2", ds, "test")[0]
    # an image without annotations is reported at construction; a wrong person count at load
    (tmp_path / "LV-MHP-v2/train/parsing_annos/2_01_01.png").unlink()
    with pytest.raises(DataError, match=r"2_\*\.png"):
        build_reader("mhp_v2", tmp_path, "train")
    (tmp_path / "LV-MHP-v2/train/parsing_annos/1_03_02.png").unlink()
    (tmp_path / "LV-MHP-v2/list/train.txt").write_text("1\n")
    with pytest.raises(DataError, match="2 person files"):
        build_reader("mhp_v2", tmp_path, "train")[0]


@pytest.mark.parametrize("lists", [True, False])
def test_vip(tmp_path, lists):
    ds = make_vip(tmp_path, lists=lists)
    for s in check_split("vip", ds, "train") + check_split("vip", ds, "val"):
        assert s["meta"]["video"] == s["id"].split("/")[0]
        assert len(s["person_labels"]) == 2


@pytest.mark.parametrize("mode", ["lists", "subfolders", "flat"])
def test_folder(tmp_path, mode):
    ds = make_folder(tmp_path, mode)
    for split in ds.ids:
        check_split("folder", ds, split, label_set="pascal_person_part")
    if mode == "flat":  # no lists, no subfolders: every split is the whole folder
        assert build_reader("folder", tmp_path, "val", label_set="pascal_person_part").ids == ds.ids["train"]
    if mode == "subfolders":
        with pytest.raises(SplitNotFoundError, match="test"):
            build_reader("folder", tmp_path, "test", label_set="pascal_person_part")


def test_folder_rules(tmp_path):
    make_folder(tmp_path, "lists")
    with pytest.raises(ConfigError, match="label_set"):
        build_reader("folder", tmp_path, "train")
    (tmp_path / "train.txt").write_text("a\nb\nc\ne\n")  # e has no label: only test allows that
    with pytest.raises(DataError, match=r"labels/e\.png"):
        build_reader("folder", tmp_path, "train", label_set="lip")
    (tmp_path / "val.txt").write_text("zzz\n")
    with pytest.raises(DataError, match=r"images/zzz"):
        build_reader("folder", tmp_path, "val", label_set="lip")


# -- errors name the file --------------------------------------------------------------------

@pytest.fixture
def pascal(tmp_path):
    return make_pascal(tmp_path)


def _load_first(ds):
    r = build_reader("pascal_person_part", ds.root, "train")
    return lambda: r[0]


def test_corrupt_image(pascal):
    path = pascal.root / "JPEGImages" / f"{pascal.ids['train'][0]}.jpg"
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 500, dtype=np.uint8).tobytes())
    with pytest.raises(DataError, match=str(path)):
        _load_first(pascal)()


def test_text_file_as_image(pascal):
    path = pascal.root / "JPEGImages" / f"{pascal.ids['train'][0]}.jpg"
    path.write_text("this is not an image\n")
    with pytest.raises(DataError, match=str(path)):
        _load_first(pascal)()


def test_label_of_wrong_size(pascal):
    path = pascal.root / "SegmentationPart" / f"{pascal.ids['train'][0]}.png"
    write_png(path, np.zeros((H + 1, W), np.uint8))
    with pytest.raises(DataError, match=rf"{path}: label is {W}x{H + 1}"):
        _load_first(pascal)()


def test_unknown_class_id(pascal):
    path = pascal.root / "SegmentationPart" / f"{pascal.ids['train'][0]}.png"
    write_png(path, np.full((H, W), 50, np.uint8))
    with pytest.raises(DataError, match=rf"{path}: unknown class ids \[50\]"):
        _load_first(pascal)()


def test_missing_files_reported_at_construction(pascal):
    paths = [pascal.root / "SegmentationPart" / f"{i}.png" for i in pascal.ids["train"][:2]]
    for p in paths:
        p.unlink()
    with pytest.raises(DataError, match="2 file") as e:
        build_reader("pascal_person_part", pascal.root, "train")
    assert all(str(p) in str(e.value) for p in paths)


def test_missing_list_or_folder(pascal):
    (pascal.root / "val_id.txt").unlink()
    with pytest.raises(SplitNotFoundError, match="val_id.txt"):
        build_reader("pascal_person_part", pascal.root, "val")
    with pytest.raises(DataError, match="dataset root not found"):
        build_reader("pascal_person_part", pascal.root / "nope", "train")
    with pytest.raises(DataError, match="unknown split"):
        build_reader("pascal_person_part", pascal.root, "test")


# -- real data ---------------------------------------------------------------------------------

def test_ccp_real(ccp_root):
    train, val = build_reader("ccp", ccp_root, "train"), build_reader("ccp", ccp_root, "val")
    assert (len(train), len(val)) == (704, 100) and not set(train.ids) & set(val.ids)
    conv = get_converter("ccp", "ccp15")
    for r in (train, val):
        s = r[0]
        raw = scipy.io.loadmat(ccp_root / "annotations" / "pixel-level" / f"{s['id']}.mat")["groundtruth"]
        assert s["image"].shape == (*raw.shape, 3) and s["image"].shape[1] == 550
        np.testing.assert_array_equal(s["label"], conv(raw))
        assert s["label"].max() < 15 and s["meta"]["label_set"] == "ccp15"
    assert build_reader("ccp", ccp_root, "val", label_set="ccp")[0]["label"].max() < 59


def test_cihp_samples_real(cihp_samples_root):
    r = build_reader("cihp", cihp_samples_root, "val")
    assert r.ids == ["0002190", "0005008", "0012008", "0026375", "0032190"]
    flip = get_meta("cihp").flip_lut()
    for i in range(len(r)):
        s = r[i]
        raw = np.asarray(Image.open(cihp_samples_root / "Category_ids" / f"{s['id']}.png"))
        rev = np.asarray(Image.open(cihp_samples_root / "Category_rev_ids" / f"{s['id']}.png"))
        np.testing.assert_array_equal(s["label"], raw)
        np.testing.assert_array_equal(flip[s["label"][:, ::-1]], rev)
        assert s["image"].shape[:2] == raw.shape and "human_ids" not in s
