"""Objects kept until evaluation with their image-sized arrays zlib-compressed (label maps shrink
20-100x), rebuilt one at a time: what lets AP hold every image of a split in memory."""

from __future__ import annotations

import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np


@dataclass
class _Blob:
    data: bytes
    dtype: np.dtype
    shape: tuple


class Packed:
    """An object rebuilt on demand by ``build(**fields)``, its image-sized arrays zlib-compressed."""

    def __init__(self, build: Callable, **fields):
        self.build = build
        self.fields = {k: _Blob(zlib.compress(np.ascontiguousarray(v).tobytes(), 1), v.dtype, v.shape)
                       if isinstance(v, np.ndarray) and v.ndim >= 2 else v for k, v in fields.items()}

    def unpack(self):
        return self.build(**{k: np.frombuffer(zlib.decompress(v.data), v.dtype).reshape(v.shape)
                             if isinstance(v, _Blob) else v for k, v in self.fields.items()})


class Unpacked(Sequence):
    """A list of :class:`Packed` (or None) seen unpacked, one item at a time."""

    def __init__(self, items: list):
        self.items = items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i):
        item = self.items[i]
        return None if item is None else item.unpack()
