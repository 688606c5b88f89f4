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

Only ``id``, ``image`` and ``meta`` are always present. ``person_labels[k - 1]`` belongs to
person ``k`` of ``human_ids``. A reader indexes its files when it is built (a missing list
or folder fails at once, naming the path; so do files a list names that are not there,
listed with their count, broken symbolic links named as such) and loads a sample on
``reader[i]``; anything wrong with one sample raises :class:`~hparse.errors.DataError` naming
the file, so a training loop can report and skip it instead of dying mid-epoch. An id a split
list repeats is kept once (one warning naming the list). Layouts with split lists
(:meth:`Reader.split_lists`) accept any split whose list exists, e.g. a ``test.txt`` you add.

``Item.extra`` keys with a standard meaning, loaded by :meth:`Reader.load_extra`:
``human`` / ``instance`` (PNG paths), ``instance_txt`` (the "inst_id class_id human_id"
lines), ``joints`` (a (J, 3) array) and ``meta`` (a dict merged into ``sample["meta"]``).
"""

from __future__ import annotations

import logging
import os
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from ...errors import DataError
from ...io.image import IMAGE_EXTENSIONS, read_image, read_label
from ...labels import DatasetMeta, get_meta
from ...registry import Registry
from ..convert import get_converter

READERS = Registry("dataset layout")
log = logging.getLogger("hparse.data")
_SPLIT_NAME = re.compile(r"[A-Za-z0-9][\w.-]*")


class SplitNotFoundError(DataError):
    """The requested split does not exist in this copy of the dataset (no list / folder)."""


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
        if split not in self.splits and not self.has_split_list(split):
            lists = self.split_lists(split) if _SPLIT_NAME.fullmatch(split) else ()
            raise DataError(f"{type(self).__name__}: unknown split {split!r}; choose from {self.splits}"
                            + (f", or add the split list {lists[0]}" if lists else ""))
        self.split = split
        self.label_set = label_set or self.default_label_set
        self.meta: DatasetMeta = get_meta(self.label_set)
        self._convert = (None if self.label_set == self.native_label_set
                         else get_converter(self.native_label_set, self.label_set).lut())
        self.items: list[Item] = self.index()
        if not self.items:
            raise DataError(f"{self.root}: split {split!r} has no samples")
        self.verify_files()

    # -- to implement -------------------------------------------------------------------
    default_label_set: ClassVar[str] = ""

    def __init_subclass__(cls, **kw):
        super().__init_subclass__(**kw)
        if not cls.__dict__.get("default_label_set") and hasattr(cls, "native_label_set"):
            cls.default_label_set = cls.native_label_set

    def index(self) -> list[Item]:
        raise NotImplementedError

    def split_lists(self, split: str) -> tuple[Path, ...]:
        """The list files that define ``split`` in layouts with split lists (override); a split outside
        :attr:`splits` is accepted when one of them exists (e.g. a ``test.txt`` you added)."""
        return ()

    def has_split_list(self, split: str) -> bool:
        return bool(_SPLIT_NAME.fullmatch(split)) and any(p.is_file() for p in self.split_lists(split))

    def load_label(self, item: Item) -> np.ndarray:
        """Native label map of an item (override for .mat files, grey-value remaps...)."""
        return read_label(item.label)

    def load_extra(self, item: Item, sample: dict) -> None:
        """Add the standard ``item.extra`` entries (instance maps, joints, meta) to ``sample``."""
        x, size = item.extra, sample["image"].shape[:2]
        sample["meta"].update(x.get("meta", {}))
        if "joints" in x:
            sample["joints"] = np.array(x["joints"], dtype=np.float32)
        if "human" in x:
            sample["human_ids"] = self.read_map(x["human"], size)
            if "label" in sample:
                sample["person_labels"] = person_labels(sample["label"], sample["human_ids"])
        if "instance" in x:
            sample["instance_ids"] = self.read_map(x["instance"], size)
        if "instance_txt" in x:
            inst = read_instances(x["instance_txt"])
            if self._convert is not None:
                inst[:, 1] = self._convert[inst[:, 1].clip(0, 255)]
            sample["instances"] = inst

    def align(self, item: Item, image: np.ndarray, label: np.ndarray | None):
        """Reconcile image and native label sizes before checking (override, e.g. PPSS)."""
        return image, label

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
        image, label = self.align(item, read_image(item.image),
                                  None if item.label is None else self.load_label(item))
        h, w = image.shape[:2]
        sample = {"id": item.id, "image": image, "meta": {
            "dataset": type(self).__name__, "label_set": self.label_set, "image_path": str(item.image),
            "label_path": str(item.label) if item.label else None, "orig_size": (h, w)}}
        if label is not None:
            sample["label"] = self.check_label(label, (h, w), item.label)
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
    def read_map(path: Path, size: tuple[int, int]) -> np.ndarray:
        """An auxiliary HxW uint8 map (person / instance ids) that must match the image size."""
        a = read_label(path)
        if a.shape != tuple(size):
            raise DataError(f"{path}: map is {a.shape[1]}x{a.shape[0]} but the image is {size[1]}x{size[0]}")
        return a

    @staticmethod
    def read_id_list(*paths: Path, hint: str = "") -> list[str]:
        """Ids of the first existing list file (first token per line, image suffix dropped); an id listed
        more than once is kept once, with one warning naming the list and the repeated ids."""
        path = next((p for p in paths if p.is_file()), None)
        if path is None:
            raise SplitNotFoundError(f"{' or '.join(map(str, paths))}: split list not found{hint}")
        try:
            ids = [ln.split()[0] for ln in path.read_text().splitlines() if ln.strip()]
        except (OSError, UnicodeDecodeError) as e:
            raise DataError(f"{path}: cannot read the split list ({e})") from e
        ids = [i[: -len(Path(i).suffix)] if Path(i).suffix.lower() in IMAGE_EXTENSIONS else i for i in ids]
        return unique_ids(ids, path)

    @staticmethod
    def require(path: Path, what: str = "file") -> Path:
        if not path.exists():
            raise DataError(f"{path}: {what} not found")
        return path

    @staticmethod
    def make_items(ids: Iterable[str], images: Path, labels: Path | None, image_ext: str = ".jpg",
                   label_ext: str = ".png") -> list[Item]:
        return [Item(i, images / f"{i}{image_ext}", labels / f"{i}{label_ext}" if labels else None)
                for i in ids]

    def verify_files(self) -> None:
        """Fail at construction if files the index names are absent (first few listed, with the count)."""
        listing: dict[Path, set[str]] = {}

        def exists(p: Path) -> bool:
            if p.parent not in listing:
                try:
                    listing[p.parent] = set(os.listdir(p.parent))
                except OSError:
                    listing[p.parent] = set()
            return p.name in listing[p.parent]

        paths = (p for it in self.items for v in (it.image, it.label, *it.extra.values())
                 for p in (v if isinstance(v, list) else [v]) if isinstance(p, Path))
        missing = [p for p in paths if not exists(p) or (p.is_symlink() and not p.exists())]
        if missing:
            shown = ", ".join(f"{p} (broken symbolic link)" if p.is_symlink() else str(p) for p in missing[:5])
            raise DataError(f"{self.root}: {len(missing)} file(s) of split {self.split!r} not found: "
                            f"{shown}{', ...' if len(missing) > 5 else ''}")


def unique_ids(ids: list[str], source) -> list[str]:
    """``ids`` with repeats dropped (first occurrence kept); one warning naming ``source`` and the repeats."""
    counts = Counter(ids)
    repeated = {i: n for i, n in counts.items() if n > 1}
    if repeated:
        shown = ", ".join(f"{i!r} x{n}" for i, n in list(repeated.items())[:5])
        log.warning("%s: %d id(s) listed more than once (%s%s); each is used once", source, len(repeated),
                    shown, ", ..." if len(repeated) > 5 else "")
    return list(dict.fromkeys(ids))


def person_labels(label: np.ndarray, human_ids: np.ndarray) -> list[np.ndarray]:
    """Per-person part maps: entry ``k - 1`` is ``label`` where ``human_ids == k``, else 0."""
    return [np.where(human_ids == k, label, 0).astype(np.uint8) for k in range(1, int(human_ids.max()) + 1)]


def read_instances(path: Path) -> np.ndarray:
    """(N, 3) int64 rows ``inst_id class_id human_id`` from a CIHP/VIP instance ``.txt``."""
    try:
        rows = [ln.split() for ln in Path(path).read_text().splitlines() if ln.strip()]
        if any(len(r) != 3 for r in rows):
            raise ValueError("a line without exactly 3 numbers")
        return np.array(rows, dtype=np.int64).reshape(-1, 3)
    except (OSError, ValueError) as e:
        raise DataError(f"{path}: not a list of 'inst_id class_id human_id' lines ({e})") from e


def instance_extra(human: Path | None, instance: Path | None, rel: str) -> dict:
    """``Item.extra`` entries for the optional Human_ids / Instance_ids folders (None = absent)."""
    extra = {"human": human / f"{rel}.png"} if human else {}
    if instance:
        extra.update(instance=instance / f"{rel}.png", instance_txt=instance / f"{rel}.txt")
    return extra


def optional_dir(path: Path) -> Path | None:
    return path if path.is_dir() else None


def build_reader(layout: str, root: str | Path, split: str = "train", **kwargs) -> Reader:
    return READERS.build(layout, root, split, **kwargs)
