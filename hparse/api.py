"""The Python API: ``hparse.load(name_or_checkpoint).predict(images)``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .devices import resolve_device
from .engine import backends
from .engine.checkpoint import SHIPPED, model_from_checkpoint, resolve_weights  # noqa: F401 (re-exported)
from .engine.inference import make_predictor
from .engine.person_prior import PRIORS
from .engine.topdown import SmallPeopleRefiner
from .errors import HParseError, UnsupportedOutput
from .io.image import read_image, to_rgb
from .labels import DatasetMeta


class Parser:
    """A trained parser. ``predict`` takes paths, PIL images or HxWx3 uint8 RGB arrays.

    ``backend``: what runs the network, ``"torch"`` (default here), ``"onnxruntime"``, ``"onnxruntime-int8"`` (a
    shipped calibrated int8 network) or ``None`` for the fastest installed (:func:`load`'s default; see
    :mod:`hparse.engine.backends`); ``batch_size``: images per forward pass when ``predict`` gets a list.
    """

    def __init__(self, model: torch.nn.Module, config: dict, meta: DatasetMeta, device: str = "cpu",
                 tta: bool = False, backend: str | None = "torch", batch_size: int = 1, people=None):
        if batch_size < 1:
            raise HParseError(f"batch_size must be at least 1, got {batch_size}")
        if people is not None and getattr(model, "task", "semantic") != "semantic":
            raise HParseError("people: small people are parsed again by semantic models only")
        self.model, self.config, self.meta, self.device = model, config, meta, device
        self.batch_size = batch_size
        self.people = people   # a SmallPeopleRefiner (hparse.engine.topdown) or None
        self.backend = backends.resolve_backend(backend, model, device)
        channels_last = str(device) == "cpu"
        runner = None
        if getattr(model, "task", "semantic") == "semantic":
            runner = backends.make_runner(model, self.backend, config.get("model"), channels_last)
        self.predictor = make_predictor(model, config["eval"], device, tta=tta, channels_last=channels_last,
                                        runner=runner)

    def predictor_for(self, eval_cfg: dict, tta: bool = False):
        """Another predictor of this parser's network (same backend) with other test-time settings (an ``eval``
        config section: long side, scales, flip...)."""
        return make_predictor(self.model, eval_cfg, self.device, tta=tta, channels_last=str(self.device) == "cpu",
                              runner=getattr(self.predictor, "runner", None))

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

    def predict(self, images, return_probs: bool = False, probs_at: str = "image"):
        """Semantic models: label map(s) (HxW uint8, input size); with ``return_probs`` also float16 probabilities, (C,
        H, W) at the input size or, with ``probs_at="network"``, (C, h, w) on the network's output grid (the cells the
        image covers, no padding). Instance models: :class:`~hparse.structures.PersonInstances` per image. A single
        image gives a single result, a list gives a list (run ``batch_size`` images at a time)."""
        arrays, single = self._arrays(images)
        if self.people is not None and return_probs:
            raise UnsupportedOutput("probabilities are not given when small people are parsed again (people=...)")
        out = []
        for start in range(0, len(arrays), self.batch_size):
            out += self.predictor.predict(arrays[start:start + self.batch_size], return_probs=return_probs,
                                          probs_at=probs_at)
        if self.people is not None:
            out = [self.people(self.predictor, image, label) for image, label in zip(arrays, out)]
        return out[0] if single else out

    def person_probability(self, image) -> np.ndarray:
        """HxW float32 probability that each pixel of one image shows a person (1 - P(background), class 0)."""
        _, probs = self.predict(image, return_probs=True)
        return 1.0 - np.asarray(probs[0], np.float32)

    def use_int8(self, calibration, check=None, min_agreement: float = backends.MIN_INT8_AGREEMENT) -> float:
        """Switch to the network quantised to int8 (ONNX Runtime, static, calibrated on ``calibration`` images)
        if its labels agree with the current backend's on at least ``min_agreement`` of the pixels of ``check``
        (default: the calibration images); otherwise raise :class:`HParseError` and keep the current backend.
        Returns the measured agreement."""
        calib = self._arrays(calibration)[0]
        checks = calib if check is None else self._arrays(check)[0]
        runner = backends.int8_runner(self.model, self.config.get("model"), self.predictor.resizer, calib)
        reference = self.predictor.predict(checks)
        current, self.predictor.runner = self.predictor.runner, runner
        agreement = backends.label_agreement(self.predictor.predict(checks), reference)
        if agreement < min_agreement:
            self.predictor.runner = current
            raise HParseError(f"int8 labels agree with {current.name} on {agreement:.2%} of the pixels, below "
                              f"{min_agreement:.0%}: int8 not selected")
        self.backend = runner.name
        return agreement

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


def load(name_or_checkpoint: str | Path = "default", device: str | None = None, tta: bool = False,
         backend: str | None = None, batch_size: int = 1, label_set: str | None = None,
         long_side: int | None = None, people: str | Path | None = None, person_prior: str | None = None) -> Parser:
    """Load a shipped model by name, any hparse checkpoint (``best.pt``, ``last.pt``) or a released SCHP / CE2P
    checkpoint (``label_set``: ``"lip"``, ``"atr"`` or ``"pascal_person_part"``; default from its class count).
    ``backend``: ``"torch"``, ``"onnxruntime"`` (``pip install "hparse[onnx]"``; CPU), ``"onnxruntime-int8"`` (the
    calibrated int8 network shipped with a model: ``default``) or ``None`` for the fastest installed.
    ``long_side``: the network input's long side in pixels (default: the model's own; larger for photos whose
    people are small). ``people``: an instance model (shipped name or checkpoint) whose detections of small people
    are parsed again on their own crops (:class:`~hparse.engine.topdown.SmallPeopleRefiner`; labels only).
    ``person_prior``: ``"selfie"`` fuses MediaPipe's selfie segmenter's P(person) with the model's
    (:mod:`hparse.engine.person_prior`; the shipped ``default`` does by default), ``"none"`` turns it off; None keeps
    the model's own setting."""
    device = resolve_device(device)
    model, cfg, meta = model_from_checkpoint(name_or_checkpoint, device, label_set=label_set)
    if long_side is not None:
        if int(long_side) < 32:
            raise HParseError(f"long_side must be at least 32 pixels, got {long_side}")
        cfg = {**cfg, "eval": {**cfg["eval"], "long_side": int(long_side)}}
    if person_prior is not None:
        if person_prior not in (*PRIORS, "none"):
            raise HParseError(f"unknown person prior {person_prior!r}; choose from {', '.join(PRIORS)} or none")
        cfg = {**cfg, "eval": {**cfg["eval"], "person_prior": None if person_prior == "none" else person_prior}}
    refiner = None
    if people is not None:
        refiner = SmallPeopleRefiner(load(people, device=device))
    return Parser(model, cfg, meta, device, tta=tta, backend=backend, batch_size=batch_size, people=refiner)
