"""The frame of detect-then-parse ("one-stage top-down") models: a backbone with an FPN, padded detection
batches in, the model contract out (named losses in training, one ``PersonInstances`` per image in eval).

:class:`TopDownParser` normalises the padded batch (``batch["image_sizes"]`` marks each image; the padding
becomes the mean pixel, 0 after normalisation) and hands the raw outputs of :meth:`network` to
:meth:`losses` or :meth:`inference` with the image sizes in the batch. Subclasses (AIParsing, the unified
framework) build their detector and RoI heads on ``self.body``. ``collate`` names the data collate its
training batches need (``hparse.data.detection``: images padded to a multiple of ``size_divisibility``).

Cost: :meth:`network` is the dense part (backbone, FPN, detection head), so ``count_macs(model)`` counts
it at the given input size; the per-RoI heads are counted by the subclass (AIParsing: ``roi_head_macs``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ..backbones import build_backbone
from ..fpn import FPN
from ..meta_arch import InstanceParsingModel
from .inputs import image_sizes, zero_padding


class BackboneFPN(nn.Module):
    """``build_backbone(**backbone)`` + :class:`~hparse.models.fpn.FPN` on its features; ``forward`` returns
    the FPN levels ``{"p3": ..., ...}``; ``strides`` / ``out_channels`` describe them."""

    def __init__(self, backbone: dict, out_channels: int = 256, levels: Sequence[str] = ("p3", "p4", "p5", "p6", "p7"),
                 extra_from: str = "p5", p6_mode: str = "conv", norm: str | None = None):
        super().__init__()
        backbone = dict(backbone)
        self.backbone = build_backbone(backbone.pop("name"), **backbone)
        self.fpn = FPN(self.backbone.out_channels, out_channels, levels, extra_from, p6_mode, norm)
        self.strides, self.out_channels = dict(self.fpn.strides), out_channels

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.fpn(self.backbone(x))


class TopDownParser(InstanceParsingModel):
    """Base class; see the module docstring. Subclasses implement ``network``, ``losses`` and ``inference``."""

    collate = "detection"       # hparse.data.detection.build_collate(collate, size_divisibility)
    size_divisibility = 32

    def __init__(self, meta, loss: list[dict] | None, backbone: dict, fpn: dict):
        super().__init__(meta, loss)
        self.body = BackboneFPN(backbone, **fpn)

    def prepare(self, batch: dict) -> tuple[torch.Tensor, dict]:
        """The padding of each image zeroed after normalisation; ``image_sizes`` in the batch."""
        sizes = image_sizes(batch)
        return zero_padding(self.normalize(batch["image"]), sizes), {**batch, "image_sizes": sizes}


def zero_loss(module: nn.Module) -> torch.Tensor:
    """A zero that reaches every parameter of ``module`` (a loss with nothing to score keeps the graph whole,
    as DistributedDataParallel wants)."""
    return sum(p.sum() * 0 for p in module.parameters())
