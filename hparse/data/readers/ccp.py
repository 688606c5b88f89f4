"""Clothing Co-Parsing: ``photos/NNNN.jpg``, ``annotations/pixel-level/NNNN.mat``, split lists."""

from __future__ import annotations

import numpy as np
import scipy.io

from ...errors import DataError
from .base import READERS, Item, Reader


@READERS.register("ccp")
class CCPReader(Reader):
    native_label_set = "ccp"
    default_label_set = "ccp15"

    def split_lists(self, split: str) -> tuple:
        return (self.root / f"{split}.txt",)

    def index(self) -> list[Item]:
        ids = self.read_id_list(*self.split_lists(self.split))
        photos, annos = self.root / "photos", self.root / "annotations" / "pixel-level"
        return [Item(i, photos / f"{i}.jpg", annos / f"{i}.mat") for i in ids]

    def load_label(self, item: Item) -> np.ndarray:
        try:
            mat = scipy.io.loadmat(item.label)
        except FileNotFoundError:
            raise DataError(f"{item.label}: label file not found") from None
        except Exception as e:  # noqa: BLE001
            raise DataError(f"{item.label}: not a readable MATLAB file ({e})") from e
        if "groundtruth" not in mat:
            raise DataError(f"{item.label}: no 'groundtruth' variable")
        return np.ascontiguousarray(mat["groundtruth"], dtype=np.uint8)
