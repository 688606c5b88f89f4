"""Unlabelled people in single-person data: find them with a parser and stop calling them background.

Street-fashion photos (CCP) label one person; the passers-by behind her are labelled background, so a
parser learns that small, soft or half-hidden people are background -- exactly the people of a group photo.
:func:`bystander_mask` marks the background pixels a parser scores as a person (probability >= ``threshold``),
away from the labelled people (a ``margin``-px ring around them keeps its labels) and grown by ``margin`` px;
:func:`mark_dataset` writes a copy of a dataset in the CIHP layout with those pixels set to 255 (ignored by
the losses), so training neither rewards nor punishes the parser on them.

    OUT/{Training,Validation}/Images/<id>.jpg           the source image (JPEG bytes copied)
    OUT/{Training,Validation}/Category_ids/<id>.png     the labels with the bystanders at 255
    OUT/{Training,Validation}/Human_ids, Instance_ids   copied when the source has them
    OUT/meta.json                                       label set, source, model, threshold, margin, counts
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from ..errors import ConfigError, DataError
from ..io.atomic import write_bytes_atomic, write_text_atomic
from ..io.image import write_image, write_label_png
from ..labels import IGNORE_INDEX
from .compose import check_derived, read_meta
from .readers import build_reader
from .readers.cihp import FOLDERS

FORMAT = "hparse-bystanders"


def _disk(radius: int) -> np.ndarray:
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))


def bystander_mask(label: np.ndarray, person_prob: np.ndarray, threshold: float = 0.3,
                   margin: int = 6) -> np.ndarray:
    """Background pixels (label 0) the parser takes for a person, ``margin`` px or more from a labelled person,
    grown by ``margin`` px (their soft edges) without entering that ring."""
    if label.shape != person_prob.shape:
        raise ValueError(f"label {label.shape} and person probability {person_prob.shape} differ in size")
    background = label == 0
    person = (label != 0) & (label != IGNORE_INDEX)
    near = cv2.dilate(person.astype(np.uint8), _disk(margin)).astype(bool) if margin > 0 else person
    seeds = background & ~near & (person_prob >= threshold)
    if margin > 0 and seeds.any():
        seeds = cv2.dilate(seeds.astype(np.uint8), _disk(margin)).astype(bool)
    return seeds & background & ~near


@dataclass
class MarkReport:
    out_root: Path
    images: dict[str, int] = field(default_factory=dict)
    marked_images: dict[str, int] = field(default_factory=dict)
    marked_share: dict[str, float] = field(default_factory=dict)

    def summary(self) -> str:
        lines = [f"wrote {self.out_root} (CIHP layout)"]
        for s, n in self.images.items():
            lines.append(f"  {s}: {n} images, bystanders marked in {self.marked_images[s]} "
                         f"({100 * self.marked_share[s]:.2f} % of the pixels set to {IGNORE_INDEX})")
        return "\n".join(lines)


def _copy_or_write(src: Path, dst: Path, image: np.ndarray) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    if src.suffix.lower() in (".jpg", ".jpeg"):
        write_bytes_atomic(dst, src.read_bytes())
    else:
        write_image(dst, image, quality=95)


def mark_dataset(layout: str, root: str | Path, out_root: str | Path, person_prob: Callable[[np.ndarray], np.ndarray],
                 model_name: str, splits=("train",), label_set: str | None = None, threshold: float = 0.3,
                 margin: int = 6, progress: bool = True) -> MarkReport:
    """Write ``layout`` data at ``root`` to ``out_root`` (CIHP layout) with its bystanders ignored.

    ``person_prob(image) -> HxW`` is the parser's probability that a pixel shows a person (1 - background).
    An existing output with the same settings is completed (samples whose image exists are kept)."""
    if not 0 < threshold < 1:
        raise ConfigError(f"threshold must be in (0, 1), got {threshold}")
    if margin < 0:
        raise ConfigError(f"margin must be >= 0, got {margin}")
    root, out_root = Path(root), Path(out_root)
    splits = check_derived(root, out_root, splits)
    readers = {s: build_reader(layout, root, s, **({"label_set": label_set} if label_set else {})) for s in splits}
    record = {"format": FORMAT, "layout": "cihp", "label_set": next(iter(readers.values())).meta.name,
              "source": {"layout": layout, "root": str(root), "splits": splits},
              "model": model_name, "threshold": threshold, "margin": margin}
    meta_path = out_root / "meta.json"
    if meta_path.is_file():
        old = read_meta(meta_path, "choose another folder")
        if {k: old.get(k) for k in record} != record:
            raise DataError(f"{out_root}: holds data marked from another source or with other settings "
                            "(meta.json); choose another folder")
    elif out_root.is_dir() and any(out_root.iterdir()):
        raise DataError(f"{out_root}: folder exists and is not marked data (no meta.json); choose a new folder")
    out_root.mkdir(parents=True, exist_ok=True)
    write_text_atomic(meta_path, json.dumps(record, indent=1) + "\n")

    report = MarkReport(out_root)
    for s, reader in readers.items():
        d = out_root / FOLDERS[s]
        ids, marked, share = [], 0, []
        for k in tqdm(range(len(reader)), desc=f"mark {s}", unit="img", disable=not progress):
            item = reader.items[k]
            ids.append(item.id)
            image_out = d / "Images" / f"{item.id}.jpg"
            label_out = d / "Category_ids" / f"{item.id}.png"
            if image_out.is_file() and label_out.is_file():
                continue
            sample = reader[k]
            label = np.asarray(sample["label"]).copy()
            mask = bystander_mask(label, person_prob(sample["image"]), threshold, margin)
            label[mask] = IGNORE_INDEX
            marked += bool(mask.any())
            share.append(mask.mean())
            write_label_png(label_out, label)
            for key in ("human", "instance", "instance_txt"):
                src = item.extra.get(key)
                if src and Path(src).is_file():
                    dst = d / ("Human_ids" if key == "human" else "Instance_ids") / Path(src).name
                    dst.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(src, dst)
            _copy_or_write(Path(item.image), image_out, sample["image"])  # last: marks the sample complete
        write_text_atomic(d / f"{s}_id.txt", "".join(f"{i}\n" for i in ids))
        report.images[s], report.marked_images[s] = len(ids), marked
        report.marked_share[s] = float(np.mean(share)) if share else 0.0
    return report
