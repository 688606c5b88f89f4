"""PASCAL-Person-Part: 7 classes, no left/right classes.

Layout: ``JPEGImages/<id>.jpg``, ``SegmentationPart/<id>.png``, ``train_id.txt``, ``val_id.txt``
(ids like ``2008_000008``; "val" is the 1,817-image test set of the papers).
"""

from __future__ import annotations

from .base import READERS, Item, Reader


@READERS.register("pascal_person_part")
class PascalPersonPartReader(Reader):
    native_label_set = "pascal_person_part"

    def split_lists(self, split: str) -> tuple:
        return (self.root / f"{split}_id.txt",)

    def index(self) -> list[Item]:
        ids = self.read_id_list(*self.split_lists(self.split))
        return self.make_items(ids, self.require(self.root / "JPEGImages", "image folder"),
                               self.require(self.root / "SegmentationPart", "label folder"))
