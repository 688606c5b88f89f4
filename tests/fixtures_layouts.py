"""Tiny synthetic datasets in each official layout (24x16 images), with their ground truth.

Every ``make_*`` function writes a dataset under ``root`` and returns a :class:`Layout`:
the ids per split and, per id, the arrays a reader must return (``label`` in the native
label set, plus ``human_ids``, ``instance_ids``, ``instances``, ``person_labels`` or
``joints`` where the layout has them).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

H, W = 16, 24
PPSS_GREY = (0, 9, 19, 29, 50, 39, 60, 62)


@dataclass
class Layout:
    root: Path
    ids: dict[str, list[str]] = field(default_factory=dict)
    truth: dict[str, dict] = field(default_factory=dict)


def _rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def write_image(path: Path, rng: np.random.Generator, size=(H, W)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(path)


def write_png(path: Path, a: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(a, np.uint8)).save(path)


def write_list(path: Path, ids) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{i}\n" for i in ids))


def random_label(rng, num_classes: int, size=(H, W)) -> np.ndarray:
    return rng.integers(0, num_classes, size, dtype=np.uint8)


def instance_maps(rng, classes_per_person=((2, 5, 9), (2, 13, 14))) -> dict:
    """Two non-overlapping persons with random parts: the CIHP/VIP maps and instance rows."""
    human = np.zeros((H, W), np.uint8)
    human[2:14, 0:11] = 1
    human[4:16, 12:24] = 2
    label = np.zeros((H, W), np.uint8)
    for k, classes in enumerate(classes_per_person, 1):
        m = human == k
        label[m] = rng.choice(classes, m.sum())
    inst = np.zeros((H, W), np.uint8)
    rows = []
    for k in (1, 2):
        for c in np.unique(label[human == k]):
            rows.append((len(rows) + 1, int(c), k))
            inst[(human == k) & (label == c)] = len(rows)
    return {"label": label, "human_ids": human, "instance_ids": inst,
            "instances": np.array(rows, np.int64)}


def _write_instances(t: dict, human: Path, inst: Path) -> None:
    write_png(human, t["human_ids"])
    write_png(inst, t["instance_ids"])
    inst.with_suffix(".txt").write_text("".join(f"{a} {b} {c}\n" for a, b, c in t["instances"]))


def make_lip(root: Path, archive: bool = False, pose: bool = True) -> Layout:
    """CE2P layout, or the official archive layout (lists next to the image folders)."""
    rng, out = _rng(1), Layout(root)
    for split, n in (("train", 3), ("val", 2), ("test", 1)):
        ids = out.ids[split] = [f"10003{n}_48368{k}" for k in range(n)]
        if archive:
            img_dir = root / ("Testing_images/testing_images" if split == "test"
                              else f"TrainVal_images/{split}_images")
            lab_dir = root / f"TrainVal_parsing_annotations/{split}_segmentations"
            write_list(img_dir.parent / f"{split}_id.txt", ids)
        else:
            img_dir, lab_dir = root / f"{split}_images", root / f"{split}_segmentations"
            write_list(root / f"{split}_id.txt", ids)
        for i in ids:
            write_image(img_dir / f"{i}.jpg", rng)
            out.truth[i] = {}
            if split != "test":
                out.truth[i]["label"] = random_label(rng, 20)
                write_png(lab_dir / f"{i}.png", out.truth[i]["label"])
    if pose:
        csv = root / ("TrainVal_pose_annotations/lip_train_set.csv" if archive else "train_pose.csv")
        csv.parent.mkdir(parents=True, exist_ok=True)
        lines = []
        for i in out.ids["train"][:-1]:  # the last training image has no row
            j = rng.uniform(1, 20, (16, 3)).round(1).astype(np.float32)
            j[:, 2] = rng.integers(0, 2, 16)
            j[0] = np.nan  # a missing joint
            j[1, :2] = 0  # (0, 0): also missing
            lines.append(",".join([f"{i}.jpg"] + [f"{v:g}" for v in j.ravel()]))
            j[1] = np.nan
            out.truth[i]["joints"] = j
        out.truth[out.ids["train"][-1]]["joints"] = np.full((16, 3), np.nan, np.float32)
        csv.write_text("\n".join(lines) + "\n")
    return out


def make_cihp(root: Path, instances: bool = True) -> Layout:
    """``Training/`` (list in the folder), ``Validation/`` (list at the root), ``Testing/`` (images)."""
    rng, out = _rng(2), Layout(root)
    for split, folder, n in (("train", "Training", 2), ("val", "Validation", 2), ("test", "Testing", 1)):
        d = root / folder
        ids = out.ids[split] = [f"{len(out.ids)}00000{k + 1}" for k in range(n)]
        write_list(d / f"{split}_id.txt" if split == "train" else root / f"{split}_id.txt", ids)
        for i in ids:
            write_image(d / "Images" / f"{i}.jpg", rng)
            if split == "test":
                out.truth[i] = {}
                continue
            t = out.truth[i] = instance_maps(rng)
            write_png(d / "Category_ids" / f"{i}.png", t["label"])
            if instances:
                _write_instances(t, d / "Human_ids" / f"{i}.png", d / "Instance_ids" / f"{i}.png")
            else:
                out.truth[i] = {"label": t["label"]}
    return out


def make_atr(root: Path, original: bool = False) -> Layout:
    """HHP layout with split lists, or the original ``humanparsing/`` release without lists."""
    rng, out = _rng(3), Layout(root)
    base = root / "humanparsing" if original else root
    ids = [f"2500_{k}" for k in range(5)]
    for i in ids:
        write_image(base / "JPEGImages" / f"{i}.jpg", rng)
        out.truth[i] = {"label": random_label(rng, 18)}
        write_png(base / ("SegmentationClassAug" if original else "Segmentations") / f"{i}.png",
                  out.truth[i]["label"])
    write_image(base / "JPEGImages" / "unlabelled.jpg", rng)  # not in "all"
    if original:
        out.ids["all"] = ids
    else:
        out.ids = {"train": ids[:3], "val": ids[3:4], "test": ids[4:]}
        for s, v in out.ids.items():
            write_list(root / f"{s}_id.txt", v)
    return out


def make_pascal(root: Path) -> Layout:
    rng, out = _rng(4), Layout(root)
    out.ids = {"train": [f"2008_00000{k}" for k in range(4)], "val": ["2009_000001", "2009_000002"]}
    for s, ids in out.ids.items():
        write_list(root / f"{s}_id.txt", ids)
        for i in ids:
            write_image(root / "JPEGImages" / f"{i}.jpg", rng)
            out.truth[i] = {"label": random_label(rng, 7)}
            write_png(root / "SegmentationPart" / f"{i}.png", out.truth[i]["label"])
    return out


def make_ppss(root: Path) -> Layout:
    """Grey-value labels (with a stray value 100 -> 255); one label is half the image size."""
    rng, out = _rng(5), Layout(root)
    lut = np.full(256, 255, np.uint8)
    lut[list(PPSS_GREY)] = np.arange(8)
    for split, folder, videos in (("train", "TrainData", (1, 2, 10)), ("test", "TestData", (101,))):
        out.ids[split] = []
        for v in videos:
            for k in (1, 2):
                name = f"{v:03d}{k}_{k}"
                i = f"{v}/{name}"
                out.ids[split].append(i)
                write_image(root / folder / str(v) / f"{name}.jpg", rng)
                small = v == 2 and k == 1
                size = (H // 2, W // 2) if small else (H, W)
                grey = np.array(PPSS_GREY + (100,), np.uint8)[rng.integers(0, 9, size)]
                write_png(root / folder / str(v) / f"{name}_m.png", grey)
                cls = lut[grey]
                out.truth[i] = {"label": np.asarray(Image.fromarray(cls).resize((W, H), Image.NEAREST)),
                                "label_small": cls if small else None}
    return out


def make_mhp(root: Path) -> Layout:
    """``LV-MHP-v2/{train,val,test}``; overlapping persons, one of them in a 3-channel PNG."""
    rng, out = _rng(6), Layout(root)
    base = root / "LV-MHP-v2"
    for split, keys in (("train", ["1", "2"]), ("val", ["7"]), ("test", ["9"])):
        out.ids[split] = keys
        write_list(base / "list" / ("test_all.txt" if split == "test" else f"{split}.txt"), keys)
        for key in keys:
            write_image(base / split / "images" / f"{key}.jpg", rng)
            out.truth[key] = {}
            if split == "test":
                continue
            n = 3 if key == "1" else 1
            label, human, persons = np.zeros((H, W), np.uint8), np.zeros((H, W), np.uint8), []
            for k in range(1, n + 1):
                p = np.zeros((H, W), np.uint8)
                p[k:k + 10, 4 * k:4 * k + 12] = rng.integers(1, 59, (10, 12))
                m = p > 0
                label[m], human[m] = p[m], k
                persons.append(p)
                png = base / split / "parsing_annos" / f"{key}_{n:02d}_{k:02d}.png"
                write_png(png, np.stack([p, p // 2, p // 3], -1) if k == 2 else p)
            out.truth[key] = {"label": label, "human_ids": human, "person_labels": persons}
    return out


def make_vip(root: Path, lists: bool = True) -> Layout:
    """``VIP_Fine`` with two videos of two annotated frames; lists put video1 in train."""
    rng, out = _rng(7), Layout(root)
    base = root / "VIP_Fine"
    frames = {"videoA": ["000000000001", "000000000026"], "videoB": ["000000000001", "000000000026"]}
    for video, fs in frames.items():
        for f in fs:
            i = f"{video}/{f}"
            write_image(base / "Images" / f"{i}.jpg", rng)
            t = out.truth[i] = instance_maps(rng)
            write_png(base / "Annotations" / "Category_ids" / f"{i}.png", t["label"])
            _write_instances(t, base / "Annotations" / "Human_ids" / f"{i}.png",
                             base / "Annotations" / "Instance_ids" / f"{i}.png")
    every = [f"{v}/{f}" for v, fs in frames.items() for f in fs]
    if lists:
        out.ids = {"train": every[:2], "val": every[2:]}
        for s, ids in out.ids.items():
            write_list(base / "lists" / f"{s}_id.txt", ids)
    else:
        out.ids = {"train": every, "val": every}
    return out


def make_folder(root: Path, mode: str = "lists", num_classes: int = 7) -> Layout:
    """``mode``: "lists" (images/ + labels/ + {train,val,test}.txt; a test image has no label),
    "subfolders" ({train,val}/{images,labels}) or "flat" (images/ + labels/ only)."""
    rng, out = _rng(8), Layout(root)
    splits = {"lists": {"train": ["a", "b", "c"], "val": ["d"], "test": ["d", "e"]},
              "subfolders": {"train": ["a", "b"], "val": ["c"]},
              "flat": {"train": ["a", "b", "c"]}}[mode]
    for s, ids in splits.items():
        d = root / s if mode == "subfolders" else root
        for i in ids:
            ext = ".png" if i == "b" else ".jpg"  # any image extension
            write_image(d / "images" / f"{i}{ext}", rng)
            out.truth[i] = {} if i == "e" else {"label": random_label(rng, num_classes)}
            if i != "e":
                write_png(d / "labels" / f"{i}.png", out.truth[i]["label"])
        if mode == "lists":
            write_list(root / f"{s}.txt", ids)
    out.ids = splits
    return out


MAKERS = {"lip": make_lip, "cihp": make_cihp, "atr": make_atr, "pascal_person_part": make_pascal,
          "ppss": make_ppss, "mhp_v2": make_mhp, "vip": make_vip, "folder": make_folder}
