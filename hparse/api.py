"""The Python API: ``hparse.load(name_or_checkpoint).predict(images)``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .devices import resolve_device
from .engine.checkpoint import SHIPPED, model_from_checkpoint, resolve_weights  # noqa: F401 (re-exported)
from .engine.inference import make_predictor
from .io.image import read_image, to_rgb
from .labels import DatasetMeta


class Parser:
    """A trained parser. ``predict`` takes paths, PIL images or HxWx3 uint8 RGB arrays."""

    def __init__(self, model: torch.nn.Module, config: dict, meta: DatasetMeta, device: str = "cpu",
                 tta: bool = False):
        self.model, self.config, self.meta, self.device = model, config, meta, device
        self.predictor = make_predictor(model, config["eval"], device, tta=tta, channels_last=str(device) == "cpu")

    @property
    def classes(self) -> tuple[str, ...]:
        return self.meta.classes

    @staticmethod
    def as_rgb(image) -> np.ndarray:
        if isinstance(image, (str, Path)):
            return read_image(image)
        if isinstance(image, Image.Image):
            return to_rgb(image)
        a = np.asarray(image)
        if a.ndim == 2:
            a = np.repeat(a[..., None], 3, axis=2)
        if a.ndim != 3 or a.shape[2] not in (3, 4):
            raise ValueError(f"expected an HxWx3 RGB array, got shape {a.shape}")
        if a.dtype != np.uint8:
            raise ValueError(f"expected a uint8 array, got {a.dtype}")
        return a[..., :3]

    def _arrays(self, images) -> tuple[list[np.ndarray], bool]:
        single = not isinstance(images, (list, tuple))
        return [self.as_rgb(im) for im in ([images] if single else images)], single

    def predict(self, images, return_probs: bool = False):
        """Semantic models: label map(s) (HxW uint8, input size); with ``return_probs`` also (C, H, W)
        probabilities. Instance models: :class:`~hparse.structures.PersonInstances` per image.
        A single image gives a single result, a list gives a list."""
        arrays, single = self._arrays(images)
        if getattr(self.model, "task", "semantic") == "instance":
            out = self.predictor.predict(arrays)
        else:
            out = self.predictor.predict(arrays, return_probs=return_probs)
        return out[0] if single else out

    def predict_extras(self, images):
        """What the model outputs beyond the label map, per image at the input size (one pass, no TTA), as the
        model's ``postprocess`` decodes it, typed: :class:`~hparse.structures.Heatmap` (e.g. a boundary
        probability, structure-point heatmaps), :class:`~hparse.structures.LabelMap` (e.g. the upper levels of a
        hierarchical model, with their class names) and :class:`~hparse.structures.ScoreTable` (e.g. fusion
        gates per node and source); the README lists what each model returns. ``np.asarray(value)`` gives the
        plain array. A single image gives a dict, a list a list."""
        arrays, single = self._arrays(images)
        out = self.predictor.extras(arrays)
        return out[0] if single else out


def load(name_or_checkpoint: str | Path = "default", device: str | None = None, tta: bool = False) -> Parser:
    """Load a shipped model by name or any hparse checkpoint (``best.pt``, ``last.pt``)."""
    device = resolve_device(device)
    model, cfg, meta = model_from_checkpoint(name_or_checkpoint, device)
    return Parser(model, cfg, meta, device, tta=tta)
