"""VIP (Video Instance-level Parsing): the CIHP classes, annotated frames of 404 videos.

Layout: ``VIP_Fine/Images/<video>/<frame>.jpg`` and
``VIP_Fine/Annotations/{Category_ids,Human_ids,Instance_ids}/<video>/<frame>.png`` (Instance_ids
also holds ``<frame>.txt``, lines "inst_id class_id human_id"); the root may be ``VIP_Fine`` or
its parent. Lists ``VIP_Fine/lists/{split}_id.txt`` or ``{split}_id.txt`` with lines
``<video>/<frame>``; without lists every split holds all videos. Sample ids are
``<video>/<frame>`` and ``meta["video"]`` names the video. Human ids are not consistent across
the frames of a video (a known property of the annotations).
"""

from __future__ import annotations

from ...errors import DataError
from .base import READERS, Item, Reader, instance_extra, optional_dir


@READERS.register("vip")
class VIPReader(Reader):
    native_label_set = "vip"
    splits = ("train", "val", "test")

    def index(self) -> list[Item]:
        base = self.root / "VIP_Fine" if (self.root / "VIP_Fine").is_dir() else self.root
        images, ann = self.require(base / "Images", "image folder"), base / "Annotations"
        s = self.split
        lists = [p for p in (base / "lists" / f"{s}_id.txt", base / f"{s}_id.txt", self.root / f"{s}_id.txt")
                 if p.is_file()]
        if lists:
            ids = self.read_id_list(lists[0])
        else:
            ids = sorted(f"{v.name}/{p.stem}" for v in images.iterdir() if v.is_dir()
                         for p in v.glob("*.jpg"))
        labels = optional_dir(ann / "Category_ids")
        if labels is None and s != "test":
            raise DataError(f"{ann / 'Category_ids'}: label folder not found")
        human, inst = optional_dir(ann / "Human_ids"), optional_dir(ann / "Instance_ids")
        items = self.make_items(ids, images, labels)
        for it in items:
            it.extra.update(instance_extra(human, inst, it.id), meta={"video": it.id.split("/")[0]})
        return items
