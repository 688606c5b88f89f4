"""Dataset readers: one class per official layout, each yielding the same sample dict.

The sample dict (the one data contract from reader to transforms to model to outputs):

=================  ====================================================================
key                value
=================  ====================================================================
``id``             sample id (str), unique within the split
``image``          HxWx3 uint8 RGB
``label``          HxW uint8 semantic label in the reader's label set, 255 = ignore
``human_ids``      HxW uint8 person index, 0 = background (instance datasets)
``instance_ids``   HxW uint8 part-instance index, 0 = background (instance datasets)
``instances``      (N, 3) int64 rows ``inst_id, class_id, human_id`` (instance datasets)
``person_labels``  list of HxW uint8 per-person part labels (instance datasets)
``joints``         (J, 3) float32 rows ``x, y, visible``; NaN for missing joints
``meta``           dict: ``dataset``, ``label_set``, ``image_path``, ``label_path``, ``orig_size``
=================  ====================================================================

Only ``id``, ``image`` and ``meta`` are always present. A reader indexes its files when
it is built (a missing list or folder fails at once, naming the path) and loads a sample
on ``reader[i]``; anything wrong with one sample raises :class:`~hparse.errors.DataError`
naming the file, so a training loop can report and skip it instead of dying mid-epoch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from ...errors import DataError
from ...io.image import read_image, read_label
from ...registry import Registry
from ..convert import get_converter
from ..meta import DatasetMeta, get_meta

READERS = Registry("dataset layout")


@dataclass
class Item:
    """What a reader's index knows about one sample before loading it."""

    id: str
    image: Path
    label: Path | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class Reader(Sequence):
    """Base class. Subclasses set ``native_label_set``/``splits`` and implement ``index``."""

    native_label_set: ClassVar[str]
    splits: ClassVar[tuple[str, ...]] = ("train", "val")

    def __init__(self, root: str | Path, split: str = "train", label_set: str | None = None):
        self.root = Path(root)
        if not self.root.is_dir():
            raise DataError(f"{self.root}: dataset root not found")
        if split not in self.splits:
            raise DataError(f"{type(self).__name__}: unknown split {split!r}; choose from {self.splits}")
        self.split = split
        self.label_set = label_set or self.default_label_set
        self.meta: DatasetMeta = get_meta(self.label_set)
        self._convert = (None if self.label_set == self.native_label_set
                         else get_converter(self.native_label_set, self.label_set).lut())
        self.items: list[Item] = self.index()

    # -- to implement -------------------------------------------------------------------
    default_label_set: ClassVar[str] = ""

    def __init_subclass__(cls, **kw):
        super().__init_subclass__(**kw)
        if not cls.__dict__.get("default_label_set") and hasattr(cls, "native_label_set"):
            cls.default_label_set = cls.native_label_set

    def index(self) -> list[Item]:
        raise NotImplementedError

    def load_label(self, item: Item) -> np.ndarray:
        """Native label map of an item (override for .mat files, grey-value remaps...)."""
        return read_label(item.label)

    def load_extra(self, item: Item, sample: dict) -> None:
        """Add instance ids, joints... to ``sample`` (override where the layout has them)."""

    # -- shared machinery ----------------------------------------------------------------
    @property
    def ids(self) -> list[str]:
        return [it.id for it in self.items]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict:
        item = self.items[i]
        try:
            return self.load(item)
        except DataError:
            raise
        except Exception as e:  # noqa: BLE001 - wrap any decoder error with the file name
            raise DataError(f"{item.image}: cannot load sample {item.id!r} ({e})") from e

    def load(self, item: Item) -> dict:
        image = read_image(item.image)
        h, w = image.shape[:2]
        sample = {"id": item.id, "image": image, "meta": {
            "dataset": type(self).__name__, "label_set": self.label_set, "image_path": str(item.image),
            "label_path": str(item.label) if item.label else None, "orig_size": (h, w)}}
        if item.label is not None:
            sample["label"] = self.check_label(self.load_label(item), (h, w), item.label)
        self.load_extra(item, sample)
        return sample

    def check_label(self, label: np.ndarray, size: tuple[int, int], path: Path) -> np.ndarray:
        """Validate a native label map against the image and the label set, then convert it."""
        if label.shape != tuple(size):
            raise DataError(f"{path}: label is {label.shape[1]}x{label.shape[0]} but the image is "
                            f"{size[1]}x{size[0]}")
        native = get_meta(self.native_label_set)
        bad = np.unique(label[(label >= native.num_classes) & (label != native.ignore_index)])
        if bad.size:
            raise DataError(f"{path}: unknown class ids {bad.tolist()} (label set "
                            f"{native.name!r} has ids 0..{native.num_classes - 1} and 255)")
        return label if self._convert is None else self._convert[label]

    @staticmethod
    def read_id_list(path: Path) -> list[str]:
        if not path.is_file():
            raise DataError(f"{path}: split list not found")
        return [ln.split()[0] for ln in path.read_text().splitlines() if ln.strip()]

    @staticmethod
    def require(path: Path, what: str = "file") -> Path:
        if not path.exists():
            raise DataError(f"{path}: {what} not found")
        return path


def build_reader(layout: str, root: str | Path, split: str = "train", **kwargs) -> Reader:
    return READERS.build(layout, root, split, **kwargs)
