"""The Python API: ``hparse.load(name_or_checkpoint).predict(images)``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .engine.checkpoint import load_checkpoint
from .engine.trainer import make_predictor
from .errors import HParseError
from .io.image import read_image, to_rgb
from .labels import DatasetMeta, get_meta
from .models import build_model

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
SHIPPED = {"default": WEIGHTS_DIR / "default.pt"}


def resolve_weights(name_or_path: str | Path) -> Path:
    if str(name_or_path) in SHIPPED:
        path = SHIPPED[str(name_or_path)]
        if not path.is_file():
            raise HParseError(f"shipped model {name_or_path!r} is missing from the installation ({path})")
        return path
    path = Path(name_or_path)
    if not path.is_file():
        raise HParseError(f"{name_or_path!r} is neither a shipped model ({', '.join(SHIPPED)}) nor a "
                          "checkpoint file")
    return path


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


class Parser:
    """A trained parser. ``predict`` takes paths, PIL images or HxWx3 uint8 RGB arrays."""

    def __init__(self, model: torch.nn.Module, config: dict, meta: DatasetMeta, device: str = "cpu",
                 tta: bool = False):
        self.model, self.config, self.meta, self.device = model, config, meta, device
        self.predictor = make_predictor(model, meta, config, device, tta=tta, channels_last=str(device) == "cpu")

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

    def predict(self, images, return_probs: bool = False):
        """Label map(s) (HxW uint8, input size); with ``return_probs`` also (C, H, W) probabilities.

        A single image gives a single result, a list gives a list.
        """
        single = not isinstance(images, (list, tuple))
        arrays = [self.as_rgb(im) for im in ([images] if single else images)]
        out = self.predictor.predict(arrays, return_probs=return_probs)
        return out[0] if single else out

    def predict_extras(self, images):
        """What the model outputs beyond the label map, per image at the input size (one pass, no TTA):
        ``boundary`` (HxW edge probability, ACENet / CE2P), ``structure`` ((J, H, W) structure-point
        heatmaps, ACENet), ``level2`` / ``level3`` (HxW labels of the upper hierarchy levels, CNIF;
        names in ``level_classes``) and ``gates`` ((nodes, 3) fusion gates, CNIF; ``gate_names``).
        A single image gives a dict, a list a list of dicts."""
        single = not isinstance(images, (list, tuple))
        out = self.predictor.extras([self.as_rgb(im) for im in ([images] if single else images)])
        return out[0] if single else out

    @property
    def level_classes(self) -> dict[int, tuple[str, ...]]:
        """Class names of each hierarchy level (1 = the parts)."""
        return {lvl: self.meta.level_classes(lvl) for lvl in (1, 2, 3)} if self.meta.hierarchy else {}

    @property
    def gate_names(self) -> list[str]:
        """Node names of the rows of ``gates`` (CNIF); empty for other models."""
        return list(getattr(self.model, "node_names", []))


def load(name_or_checkpoint: str | Path = "default", device: str | None = None, tta: bool = False) -> Parser:
    """Load a shipped model by name or any hparse checkpoint (``best.pt``, ``last.pt``)."""
    ck = load_checkpoint(resolve_weights(name_or_checkpoint))
    meta = get_meta(ck["label_set"])
    model = build_model(ck["config"]["model"], meta.num_classes)
    model.load_state_dict({k: v.float() for k, v in ck["model"].items()})
    device = device or default_device()
    return Parser(model.to(device).eval(), ck["config"], meta, device, tta=tta)
