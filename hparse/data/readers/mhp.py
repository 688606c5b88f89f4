"""LV-MHP-v2 (Multi-Human Parsing): 58 parts + background, one annotation PNG per person.

Layout: ``LV-MHP-v2/{train,val,test}/images/<img>.jpg`` and
``parsing_annos/<img>_<NN>_<II>.png`` (NN = number of persons, II = person index from 01; so the
image key is the file name minus its last 10 characters); lists ``list/{train,val}.txt`` and
``list/test_all.txt``. The root may be ``LV-MHP-v2`` or its parent. Annotation PNGs may have
3 channels (channel 0 is used). A sample has ``person_labels`` (person II at index II - 1),
``human_ids`` (1..N) and the semantic ``label``, the union of the person labels; where persons
overlap, later persons are painted over earlier ones (in both maps). The test split has no labels.
"""

from __future__ import annotations

import re
from collections import defaultdict

import numpy as np

from ...errors import DataError
from ...io.image import read_label
from .base import READERS, Item, Reader, SplitNotFoundError, optional_dir

ANNO_NAME = re.compile(r"^(?P<key>.+)_(?P<n>\d{2})_(?P<i>\d{2})\.png$")


@READERS.register("mhp_v2")
class MHPv2Reader(Reader):
    native_label_set = "mhp_v2"
    splits = ("train", "val", "test")

    def index(self) -> list[Item]:
        base = self.root / "LV-MHP-v2" if (self.root / "LV-MHP-v2").is_dir() else self.root
        d = base / self.split
        if not d.is_dir():
            raise SplitNotFoundError(f"{d}: LV-MHP-v2 split folder not found")
        ids = self.read_id_list(base / "list" / f"{'test_all' if self.split == 'test' else self.split}.txt")
        images, annos = self.require(d / "images", "image folder"), optional_dir(d / "parsing_annos")
        if annos is None and self.split != "test":
            raise DataError(f"{d / 'parsing_annos'}: annotation folder not found")
        persons = defaultdict(list)
        for p in sorted(annos.iterdir()) if annos else ():
            if m := ANNO_NAME.match(p.name):
                persons[m["key"]].append((int(m["i"]), int(m["n"]), p))
        items = self.make_items(ids, images, None)
        for it in items:
            if annos:  # an image without annotations shows up as missing "<img>_*.png"
                found = sorted(persons.get(it.id, [])) or [(0, 0, annos / f"{it.id}_*.png")]
                it.extra.update(persons=[p for _, _, p in found], num_persons=found[0][1],
                                meta={"label_path": str(annos / f"{it.id}_*.png")})
        return items

    def load_extra(self, item: Item, sample: dict) -> None:
        super().load_extra(item, sample)
        paths = item.extra.get("persons")
        if not paths:
            return
        if len(paths) != item.extra["num_persons"]:
            raise DataError(f"{paths[0]}: {len(paths)} person files for image {item.id!r}, "
                            f"but the names say {item.extra['num_persons']}")
        size = sample["image"].shape[:2]
        label, human, people = np.zeros(size, np.uint8), np.zeros(size, np.uint8), []
        for k, p in enumerate(paths, 1):
            native = read_label(p)
            person = self.check_label(native, size, p)
            mask = native > 0
            label[mask], human[mask] = person[mask], k
            people.append(person)
        sample.update(label=label, human_ids=human, person_labels=people)
