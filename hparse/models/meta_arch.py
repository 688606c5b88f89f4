"""The model contract every hparse model follows (after detectron2's meta-architectures).

A model is built from the ``MODELS`` registry by :func:`hparse.models.build_model` with its label-set
metadata (``meta``), its config section and the config's ``loss`` list. It

- normalises its own input: ``batch["image"]`` is float RGB in 0..255, ``(B, 3, H, W)``; ``pixel_mean`` /
  ``pixel_std`` (0..1 units) are model config keys, the one source for training and inference;
- in training mode, ``model(batch)`` returns the named, weighted losses (``{name: tensor}``; the training
  loss is their sum) -- targets are read from ``batch`` inside the model, so a detector can assign them;
- in eval mode returns typed results: :class:`SemanticResult` (part logits + named raw extras) here, or
  :class:`~hparse.structures.PersonInstances` for instance models (``task = "instance"``);
- turns raw extras into what users get with :meth:`ParsingModel.postprocess` (the caller has already
  brought spatial extras to the image's size), so no code outside the model decodes them;
- may own a training-time companion (:meth:`ParsingModel.training_companion`, e.g. MMAN's discriminators):
  trained beside the model, never part of its weights or of an exported network.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from ..config_schema import IMAGENET_MEAN, IMAGENET_STD
from ..losses import build_loss
from ..structures import Heatmap, LabelMap, PersonInstances


@dataclass
class SemanticResult:
    """Inference output of a semantic model: ``logits`` (B, C, h, w) at any resolution and ``extras``,
    raw named outputs: spatial ones ``(B, K, h, w)`` (resized like the logits by the caller) or
    per-image ones ``(B, ...)``."""

    logits: torch.Tensor
    extras: dict[str, torch.Tensor] = field(default_factory=dict)


class TrainingLosses(dict):
    """The named losses of a training forward; ``outputs`` keeps the raw outputs they came from, for the
    trainer's hooks (e.g. adversarial training). A dict, so it passes through DistributedDataParallel."""

    def __init__(self, losses: dict[str, torch.Tensor], outputs: dict[str, torch.Tensor]):
        super().__init__(losses)
        self.outputs = outputs


class ParsingModel(nn.Module):
    """Base of every model; subclasses implement :meth:`network` (and, for extras, :meth:`postprocess`).

    ``extra_outputs`` names the raw outputs of :meth:`network` kept as inference extras.
    """

    task = "semantic"
    extra_outputs: tuple[str, ...] = ()
    config_forwards_to = None  # the callable that receives a subclass's **kwargs (config validation)
    # weight names of older versions: ``{old prefix: new prefix, or None to drop}``, applied when loading
    renamed_weights: dict[str, str | None] = {}

    def __init__(self, meta, loss: list[dict] | None = None):
        super().__init__()
        self.__dict__["meta"] = meta    # plain attribute: the label set is data, not a module
        self.num_classes = meta.num_classes
        self.register_buffer("pixel_mean", torch.empty(1, 3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.empty(1, 3, 1, 1), persistent=False)
        self.set_input_normalization()
        self.criterion = build_loss(loss) if loss else None
        if self.renamed_weights:
            self._register_load_state_dict_pre_hook(self._rename_legacy_weights)

    def set_input_normalization(self, pixel_mean: Sequence[float] = IMAGENET_MEAN,
                                pixel_std: Sequence[float] = IMAGENET_STD) -> None:
        """The config keys ``pixel_mean`` / ``pixel_std`` of every model (RGB, 0..1 units)."""
        with torch.no_grad():
            self.pixel_mean.copy_(torch.tensor(pixel_mean, dtype=torch.float32).view(1, 3, 1, 1) * 255)
            self.pixel_std.copy_(torch.tensor(pixel_std, dtype=torch.float32).view(1, 3, 1, 1) * 255)

    def _rename_legacy_weights(self, state_dict, prefix, *args) -> None:
        for key in [k for k in state_dict if k.startswith(prefix)]:
            name = key[len(prefix):]
            for old, new in self.renamed_weights.items():
                if name.startswith(old):
                    value = state_dict.pop(key)
                    if new is not None:
                        state_dict[prefix + new + name[len(old):]] = value
                    break

    # -- the network ---------------------------------------------------------------------------
    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """0..255 RGB -> the network's input."""
        return (images - self.pixel_mean) / self.pixel_std

    def network(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Normalised images -> raw named outputs; ``"parsing"`` holds the part logits."""
        raise NotImplementedError

    def prepare(self, batch: dict) -> tuple[torch.Tensor, dict]:
        """``(network input, batch)``: the normalised images, and the batch as the losses and inference read it."""
        return self.normalize(batch["image"]), batch

    def forward(self, batch: dict):
        x, batch = self.prepare(batch)
        outputs = self.network(x)
        if self.training:
            return TrainingLosses(self.losses(outputs, batch), outputs)
        return self.inference(outputs, batch)

    def forward_train(self, batch: dict) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """``(losses, raw outputs)`` of a training forward, whatever the module's mode."""
        x, batch = self.prepare(batch)
        outputs = self.network(x)
        return self.losses(outputs, batch), outputs

    # -- training --------------------------------------------------------------------------------
    def losses(self, outputs: dict, batch: dict) -> dict[str, torch.Tensor]:
        if self.criterion is None:
            raise RuntimeError(f"{type(self).__name__} was built without a loss (give the config's loss list)")
        return self.criterion(outputs, batch)

    def training_companion(self) -> nn.Module | None:
        """A module trained beside this one but not part of it (None: plain training)."""
        return None

    # -- inference -------------------------------------------------------------------------------
    def inference(self, outputs: dict, batch: dict) -> SemanticResult:
        return SemanticResult(outputs["parsing"], {k: outputs[k] for k in self.extra_outputs if k in outputs})

    def postprocess(self, extras: dict[str, torch.Tensor]) -> dict:
        """One image's raw extras (spatial ones at the image's size, batch dimension dropped) -> what users
        get: :class:`~hparse.structures.Heatmap`, :class:`~hparse.structures.LabelMap`,
        :class:`~hparse.structures.ScoreTable`."""
        return {}


class InstanceParsingModel(ParsingModel):
    """Base of instance-level models: in eval mode ``model(batch)`` returns one
    :class:`~hparse.structures.PersonInstances` per image in network-input pixels (``batch["image_sizes"]``
    gives each image's ``(h, w)`` inside the padded batch); :meth:`postprocess` brings them to the image."""

    task = "instance"

    def inference(self, outputs: dict, batch: dict) -> list[PersonInstances]:
        raise NotImplementedError

    def postprocess(self, instances: PersonInstances, input_size, image_size) -> PersonInstances:
        return instances.rescaled(input_size, image_size)


# -- decoders shared by models -------------------------------------------------------------------

def boundary_heatmap(edge_logits: torch.Tensor) -> Heatmap:
    """2-channel boundary logits (h, w) -> the boundary probability."""
    return Heatmap(edge_logits.float().softmax(0)[1].cpu().numpy())


def point_heatmaps(maps: torch.Tensor) -> Heatmap:
    """Regressed heatmaps (K, h, w) -> non-negative maps."""
    return Heatmap(maps.float().clamp(min=0).cpu().numpy())


def label_map(logits: torch.Tensor, classes: Sequence[str]) -> LabelMap:
    return LabelMap(logits.argmax(0).to(torch.uint8).cpu().numpy(), tuple(classes))
