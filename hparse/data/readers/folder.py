"""Custom data in a plain folder, in any registered label set (``label_set=`` is required).

Layouts: ``ROOT/images/<stem>.<ext>`` + ``ROOT/labels/<stem>.png`` (label PNGs hold class ids),
with either split lists ``ROOT/{train,val,test}.txt`` (stems; any other ``ROOT/<split>.txt`` too) or split subfolders
``ROOT/{train,val,test}/{images,labels}``. A folder with neither serves all its images for
whatever split is asked for. Images without a label are allowed only in split "test"
(inference); in the other splits a missing label is an error.
"""

from __future__ import annotations

from collections import Counter

from ...errors import ConfigError, DataError
from ...io.image import is_image_file
from ...labels import get_meta, list_metas
from .base import READERS, Item, Reader, SplitNotFoundError


@READERS.register("folder")
class FolderReader(Reader):
    splits = ("train", "val", "test")

    def __init__(self, root, split: str = "train", label_set: str | None = None):
        if not label_set:
            raise ConfigError(f"the folder layout needs label_set=... (one of: {', '.join(list_metas())})")
        self.native_label_set = get_meta(label_set).name
        super().__init__(root, split, label_set)

    def split_lists(self, split: str) -> tuple:
        return (self.root / f"{split}.txt",)

    def index(self) -> list[Item]:
        r, s = self.root, self.split
        ids, images, labels = None, r / s / "images", r / s / "labels"
        if not images.is_dir():
            if (r / f"{s}.txt").is_file():
                ids = self.read_id_list(r / f"{s}.txt")
            elif any((r / f"{x}.txt").is_file() or (r / x / "images").is_dir() for x in self.splits):
                raise SplitNotFoundError(f"{r / f'{s}.txt'}: split list not found (nor {images})")
            images, labels = self.require(r / "images", "image folder"), r / "labels"
        files = sorted(p for p in images.iterdir() if is_image_file(p))
        dup = [k for k, n in Counter(p.stem for p in files).items() if n > 1]
        if dup:
            raise DataError(f"{images}: several images share the stem(s) {dup[:5]}")
        by_stem = {p.stem: p for p in files}
        have = {p.stem for p in labels.glob("*.png")} if labels.is_dir() else set()
        # an unknown stem becomes "<stem>.*", which the file check reports as missing
        return [Item(i, by_stem.get(i, images / f"{i}.*"),
                     labels / f"{i}.png" if s != "test" or i in have else None)
                for i in (ids if ids is not None else by_stem)]
