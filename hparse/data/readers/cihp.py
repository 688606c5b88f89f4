"""CIHP (Crowd Instance-level Human Parsing): 20 classes (10 = torso-skin), several persons.

Official layout: ``{Training,Validation,Testing}/`` (splits train / val / test), each with
``Images/<id>.jpg``, ``Category_ids/<id>.png`` and, optionally, ``Human_ids/<id>.png`` and
``Instance_ids/<id>.png`` + ``<id>.txt`` (lines "inst_id class_id human_id"). The ids come from
``{split}_id.txt`` in the split folder or the root, else from the sorted ``Images/`` stems.
A root that itself holds ``Images/`` and ``Category_ids/`` (e.g. a handful of samples) serves
whatever split is asked for. Samples get ``human_ids``, ``person_labels``, ``instance_ids`` and
``instances`` when those folders exist; ``Testing/`` may lack ``Category_ids`` (no labels).

Data in this layout with another label set (e.g. ``hparse data compose`` output in ccp15): the
label set the files are stored in is read from ``ROOT/meta.json`` (key ``label_set``) when there
is one; otherwise a ``label_set`` with no ``cihp->label_set`` converter is taken to be the label
set of the files (as the ``folder`` layout does), so ``--labels ccp15`` reads ccp15 labels as they are.
"""

from __future__ import annotations

import json
from pathlib import Path

from ...errors import DataError
from ...labels import get_meta
from ..convert import list_converters
from .base import READERS, Item, Reader, SplitNotFoundError, instance_extra, optional_dir

FOLDERS = {"train": "Training", "val": "Validation", "test": "Testing"}


@READERS.register("cihp")
class CIHPReader(Reader):
    native_label_set = "cihp"
    splits = ("train", "val", "test")

    def __init__(self, root, split: str = "train", label_set: str | None = None):
        declared = stored_label_set(root)
        if declared:
            self.native_label_set = self.default_label_set = get_meta(declared).name
        elif label_set and get_meta(label_set).name != "cihp" and not any(
                (c.source, c.target) == ("cihp", get_meta(label_set).name) for c in list_converters()):
            self.native_label_set = get_meta(label_set).name
        super().__init__(root, split, label_set)

    def index(self) -> list[Item]:
        flat = (self.root / "Images").is_dir() and (self.root / "Category_ids").is_dir()
        d = self.root if flat else self.root / FOLDERS[self.split]
        if not d.is_dir():
            raise SplitNotFoundError(f"{d}: CIHP split folder not found")
        images = self.require(d / "Images", "image folder")
        lists = [p for p in (d / f"{self.split}_id.txt", self.root / f"{self.split}_id.txt") if p.is_file()]
        ids = self.read_id_list(*lists) if lists else sorted(p.stem for p in images.glob("*.jpg"))
        labels = optional_dir(d / "Category_ids")
        if labels is None and self.split != "test":
            raise DataError(f"{d / 'Category_ids'}: label folder not found")
        human, inst = optional_dir(d / "Human_ids"), optional_dir(d / "Instance_ids")
        items = self.make_items(ids, images, labels)
        for it in items:
            it.extra.update(instance_extra(human, inst, it.id))
        return items


def stored_label_set(root) -> str | None:
    """The label set a CIHP-layout dataset declares in ``ROOT/meta.json`` (None without one)."""
    path = Path(root) / "meta.json"
    if not path.is_file():
        return None
    try:
        value = json.loads(path.read_text()).get("label_set")
    except (OSError, ValueError, AttributeError) as e:
        raise DataError(f"{path}: not a readable JSON object ({e})") from e
    if value is None:
        return None
    try:
        return get_meta(value).name
    except KeyError as e:
        raise DataError(f"{path}: {e.args[0]}") from None
