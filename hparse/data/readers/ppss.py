"""PPSS (Pedestrian Parsing in Surveillance Scenes): 8 classes, 171 videos.

Layout: ``TrainData/<1..100>/<name>.jpg`` with labels ``<name>_m.png`` (split train) and
``TestData/<101..171>/...`` (split test); sample ids are ``<video>/<name>``. The label PNGs
store grey values [0, 9, 19, 29, 50, 39, 60, 62] for classes 0..7 (50 comes before 39); any
other value becomes 255. Label and image sizes can differ: with ``label_to_image=True`` (HHP's
training behaviour) the label is resized NEAREST to the image; with ``False`` (HHP's testing
behaviour) the image is resized to the label, so evaluation runs at label resolution.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from ...io.image import read_image
from .base import READERS, Item, Reader, SplitNotFoundError

GREY_VALUES = (0, 9, 19, 29, 50, 39, 60, 62)
GREY_LUT = np.full(256, 255, dtype=np.uint8)
GREY_LUT[list(GREY_VALUES)] = np.arange(len(GREY_VALUES))
FOLDERS = {"train": "TrainData", "test": "TestData"}


@READERS.register("ppss")
class PPSSReader(Reader):
    native_label_set = "ppss"
    splits = ("train", "test")

    def __init__(self, root, split: str = "train", label_set: str | None = None, label_to_image: bool = True):
        self.label_to_image = label_to_image
        super().__init__(root, split, label_set)

    def index(self) -> list[Item]:
        d = self.root / FOLDERS[self.split]
        if not d.is_dir():
            raise SplitNotFoundError(f"{d}: PPSS split folder not found")
        videos = sorted((v for v in d.iterdir() if v.is_dir()),
                        key=lambda v: (not v.name.isdigit(), int(v.name) if v.name.isdigit() else 0, v.name))
        return [Item(f"{v.name}/{p.stem}", p, p.with_name(f"{p.stem}_m.png"))
                for v in videos for p in sorted(v.glob("*.jpg"))]

    def load_label(self, item: Item) -> np.ndarray:
        # Grey values, whatever the PNG mode (L, RGB or a grey palette): channel 0 of the RGB.
        return GREY_LUT[read_image(item.label)[..., 0]]

    def align(self, item, image, label):
        if label is None or label.shape == image.shape[:2]:
            return image, label
        if self.label_to_image:
            h, w = image.shape[:2]
            return image, np.asarray(Image.fromarray(label).resize((w, h), Image.NEAREST))
        h, w = label.shape
        return np.asarray(Image.fromarray(image).resize((w, h), Image.BILINEAR)), label
