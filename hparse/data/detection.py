"""The detection data step: multi-scale resizing, person boxes from the augmented instance maps, and batches of
images of different sizes.

Transform steps (put them in ``data.train_transforms``; ``PersonBoxes`` after every geometric step, before
``ToTensor``):

=====================  =============================================================================
step                   does
=====================  =============================================================================
``RandomShortSide``    resize so the short side is drawn from ``range`` (uniform integer, both ends
                       included) or ``choices``, the long side capped at ``max_size`` (maskrcnn-benchmark's
                       multi-scale training: AIParsing ``range: [640, 800]``, ``max_size: 1333``)
``PersonBoxes``        adds ``boxes`` (N, 4) float32, the tight box of each person's pixels in ``human_ids``
                       (x2 / y2 exclusive), and ``person_ids`` (N,) their ids; people left without a pixel
                       by the augmentation get no box. Drops ``person_labels`` (they are ``label`` where
                       ``human_ids`` is the person: models rebuild the maps they need, for the RoIs only)
=====================  =============================================================================

:func:`detection_collate` batches such samples: images zero-padded bottom-right to a common size divisible by
``size_divisibility`` with ``image_sizes`` [(h, w)], ``label`` (padding 255) and ``human_ids`` (padding 0)
padded alike and stacked as uint8, and the variable-length ``boxes`` / ``person_ids`` as lists; other keys as
:func:`hparse.data.dataset.collate` keeps them. :func:`build_collate` picks a collate by name (a model's
``collate`` attribute: ``"detection"`` for the top-down parsers).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

import numpy as np
import scipy.ndimage as ndi
import torch
import torch.nn.functional as F

from ..errors import ConfigError
from ..labels import IGNORE_INDEX
from .dataset import collate
from .transform_base import TRANSFORMS, Transform

#: padded per-pixel keys -> fill value
PADDED_MAPS = {"label": IGNORE_INDEX, "human_ids": 0}


def short_side_size(height: int, width: int, short: int, max_size: int | None = None) -> tuple[int, int]:
    """``(h, w)`` with the short side ``short`` (less if the long side would pass ``max_size``), aspect kept."""
    lo, hi = min(height, width), max(height, width)
    if max_size is not None and hi * short / lo > max_size:
        short = max_size * lo / hi
    scale = short / lo
    return max(1, round(height * scale)), max(1, round(width * scale))


@TRANSFORMS.register("RandomShortSide")
class RandomShortSide(Transform):
    """Resize to a random short side (``range: [lo, hi]`` or ``choices: [...]``), long side <= ``max_size``."""

    def __init__(self, range: Sequence[int] | None = None, choices: Sequence[int] | None = None,  # noqa: A002
                 max_size: int | None = None):
        if (range is None) == (choices is None):
            raise ConfigError("RandomShortSide: give exactly one of range, choices")
        if range is not None and (len(range) != 2 or range[0] > range[1]):
            raise ConfigError(f"RandomShortSide: range must be [lo, hi] with lo <= hi, got {list(range)}")
        self.range = None if range is None else (int(range[0]), int(range[1]))
        self.choices = None if choices is None else tuple(int(c) for c in choices)
        self.max_size = max_size

    def draw(self, rng: np.random.Generator) -> int:
        if self.range is not None:
            return int(rng.integers(self.range[0], self.range[1] + 1))
        return int(self.choices[rng.integers(len(self.choices))])

    def apply(self, sample, rng):
        from .transforms import Resize  # the transforms module registers this one: no import cycle

        h, w = sample["image"].shape[:2]
        return Resize(size=short_side_size(h, w, self.draw(rng), self.max_size)).apply(sample, rng)


def person_boxes(human_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(boxes (N, 4) float32, ids (N,) int64)``: the tight box of every id > 0 present in ``human_ids``."""
    slices = ndi.find_objects(np.asarray(human_ids).astype(np.int32))
    found = [(k + 1, s) for k, s in enumerate(slices) if s is not None]
    boxes = np.array([(s[1].start, s[0].start, s[1].stop, s[0].stop) for _, s in found], np.float32)
    return boxes.reshape(-1, 4), np.array([k for k, _ in found], np.int64)


@TRANSFORMS.register("PersonBoxes")
class PersonBoxes(Transform):
    """Adds ``boxes`` and ``person_ids`` from ``human_ids``; drops ``person_labels`` (module docstring)."""

    def apply(self, sample, rng):
        if "human_ids" not in sample:
            raise ConfigError("PersonBoxes needs human_ids: an instance-level dataset (cihp, mhp_v2, vip layouts)")
        sample["boxes"], sample["person_ids"] = person_boxes(sample["human_ids"])
        sample.pop("person_labels", None)
        return sample


def _pad_to(t: torch.Tensor, h: int, w: int, fill) -> torch.Tensor:
    return F.pad(t, (0, w - t.shape[-1], 0, h - t.shape[-2]), value=fill)


def detection_collate(samples: list[dict], size_divisibility: int = 32) -> dict:
    """Samples of different sizes (after ``ToTensor``) -> one padded batch (see the module docstring)."""
    images = [torch.as_tensor(s["image"]) for s in samples]
    sizes = [tuple(int(v) for v in im.shape[-2:]) for im in images]
    d = max(1, int(size_divisibility))
    h = -(-max(s[0] for s in sizes) // d) * d
    w = -(-max(s[1] for s in sizes) // d) * d
    out = collate([{k: v for k, v in s.items() if k not in ("image", "boxes", "person_ids", *PADDED_MAPS)}
                   for s in samples])
    out["image"] = torch.stack([_pad_to(im.float(), h, w, 0.0) for im in images])
    out["image_sizes"] = sizes
    for key, fill in PADDED_MAPS.items():
        if key in samples[0]:
            out[key] = torch.stack([_pad_to(torch.as_tensor(s[key]).to(torch.uint8), h, w, fill) for s in samples])
    for key in ("boxes", "person_ids"):
        if key in samples[0]:
            out[key] = [torch.as_tensor(s[key]) for s in samples]
    return out


COLLATES: dict[str, Callable[..., dict]] = {"default": collate, "detection": detection_collate}


def build_collate(name: str = "default", size_divisibility: int = 32) -> Callable[[list[dict]], dict]:
    """The collate function called ``name`` (``default`` or ``detection``, with its ``size_divisibility``)."""
    if name not in COLLATES:
        raise ConfigError(f"unknown collate {name!r}; known: {', '.join(COLLATES)}")
    fn = COLLATES[name]
    return functools.partial(fn, size_divisibility=size_divisibility) if fn is detection_collate else fn
