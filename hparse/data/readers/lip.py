"""LIP (Look Into Person): single person, 20 classes, 16 joints.

Layouts (``split`` = train / val / test):

- CE2P/SCHP: ``{split}_images/<id>.jpg``, ``{split}_segmentations/<id>.png``, ``{split}_id.txt``.
- official archives: ``TrainVal_images/{train,val}_images``,
  ``TrainVal_parsing_annotations/{train,val}_segmentations``, ``Testing_images/testing_images``;
  the id lists at the root or next to the image folders.

Joints come from the pose CSV when one is found (``TrainVal_pose_annotations/lip_{split}_set.csv``,
``lip_{split}_set.csv`` or ``{split}_pose.csv`` at the root): one row
``name.jpg, x0, y0, v0, ..., x15, y15, v15`` per image, ``nan`` for missing joints. A joint is
present only if x and y are numbers with x + y > 0; otherwise its row is NaN. ``v`` is kept as
given. Images without a CSV row get all-NaN joints. The test split has no labels.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from ...errors import DataError
from ...labels import get_meta
from .base import READERS, Item, Reader

NUM_JOINTS = get_meta("lip").num_joints


def read_lip_pose_csv(path: Path) -> dict[str, np.ndarray]:
    """Pose CSV -> {image stem: (16, 3) float32 joints, NaN rows for missing joints}."""
    out = {}
    with open(path, newline="") as f:
        for n, row in enumerate(csv.reader(f), 1):
            if not row or not row[0].strip():
                continue
            vals = row[1:]
            while vals and not vals[-1].strip():  # a trailing comma
                vals.pop()
            try:
                j = np.array([float(v.strip() or "nan") for v in vals], np.float32).reshape(NUM_JOINTS, 3)
            except ValueError as e:
                if n == 1:  # a header line
                    continue
                raise DataError(f"{path}, line {n}: expected a name and {3 * NUM_JOINTS} numbers") from e
            x, y = j[:, 0], j[:, 1]
            with np.errstate(invalid="ignore"):
                j[~(np.isfinite(x) & np.isfinite(y) & (x + y > 0))] = np.nan
            out[Path(row[0].strip()).stem] = j
    return out


@READERS.register("lip")
class LIPReader(Reader):
    native_label_set = "lip"
    splits = ("train", "val", "test")

    def index(self) -> list[Item]:
        r, s, test = self.root, self.split, self.split == "test"
        if (r / "TrainVal_images").is_dir() or (r / "Testing_images").is_dir():
            images = r / ("Testing_images/testing_images" if test else f"TrainVal_images/{s}_images")
            labels = None if test else r / f"TrainVal_parsing_annotations/{s}_segmentations"
            lists = (r / f"{s}_id.txt", images.parent / f"{s}_id.txt")
        else:
            images, labels = r / f"{s}_images", None if test else r / f"{s}_segmentations"
            lists = (r / f"{s}_id.txt",)
        ids = self.read_id_list(*lists)
        self.require(images, "image folder")
        if labels is not None:
            self.require(labels, "label folder")
        items = self.make_items(ids, images, labels)
        csvs = (r / f"TrainVal_pose_annotations/lip_{s}_set.csv", r / f"lip_{s}_set.csv", r / f"{s}_pose.csv")
        pose = next((p for p in csvs if p.is_file()), None)
        if pose is not None:
            table, none = read_lip_pose_csv(pose), np.full((NUM_JOINTS, 3), np.nan, np.float32)
            for it in items:
                it.extra["joints"] = table.get(it.id, none)
        return items
