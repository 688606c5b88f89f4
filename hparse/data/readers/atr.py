"""ATR: single person, 18 classes.

Layouts: HHP's ``JPEGImages/<id>.jpg`` + ``Segmentations/<id>.png``, or the original release
``humanparsing/{JPEGImages,SegmentationClassAug}`` (the root may be ``humanparsing`` itself or
its parent). Split provenance varies between papers (the common 16,000 / 700 / 1,000 split,
HHP's 6,703 train / 999 test lists...), so no split is built in: splits train / val / test read
the list ``{split}_id.txt`` you put at the root (or in ``humanparsing/``), and split ``all``
reads every annotated image (all label files), which is what a copy without lists offers.
"""

from __future__ import annotations

from ...errors import DataError
from .base import READERS, Item, Reader


@READERS.register("atr")
class ATRReader(Reader):
    native_label_set = "atr"
    splits = ("train", "val", "test", "all")

    def _base(self):
        return self.root / "humanparsing" if (self.root / "humanparsing").is_dir() else self.root

    def split_lists(self, split: str) -> tuple:
        return tuple(dict.fromkeys((self.root / f"{split}_id.txt", self._base() / f"{split}_id.txt")))

    def index(self) -> list[Item]:
        base = self._base()
        images = self.require(base / "JPEGImages", "image folder")
        labels = next((base / d for d in ("Segmentations", "SegmentationClassAug")
                       if (base / d).is_dir()), None)
        if labels is None:
            raise DataError(f"{base}: no label folder (Segmentations/ or SegmentationClassAug/)")
        if self.split == "all":
            ids = sorted(p.stem for p in labels.glob("*.png"))
        else:
            ids = self.read_id_list(*self.split_lists(self.split), hint="; without split lists use split 'all'")
        return self.make_items(ids, images, labels)
