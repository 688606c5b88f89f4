"""The transform registry and base class, shared by :mod:`.transforms` and :mod:`.targets` (which both
register steps in it; importing :mod:`.transforms` registers them all)."""

from __future__ import annotations

import numpy as np

from ..labels import DatasetMeta
from ..registry import Registry

TRANSFORMS = Registry("transform")


class Transform:
    """Base class: ``__call__`` copies the dict (and its meta) and calls ``apply``."""

    def __call__(self, sample: dict, rng: np.random.Generator | None = None) -> dict:
        rng = np.random.default_rng() if rng is None else rng
        return self.apply({**sample, "meta": dict(sample.get("meta") or {})}, rng)

    def apply(self, sample: dict, rng: np.random.Generator) -> dict:
        raise NotImplementedError

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items()
                         if not k.startswith("_") and not isinstance(v, DatasetMeta))
        return f"{type(self).__name__}({args})"
