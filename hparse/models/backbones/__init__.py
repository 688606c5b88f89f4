"""Backbone registry.  Every backbone returns ``{"c2", "c3", "c4", "c5"}`` features (strides 4/8/16/32
unless dilated) and exposes ``out_channels`` / ``strides`` dicts."""

from __future__ import annotations

from torch import nn

from .mobilenet import InvertedResidual, MobileNetV2, mobilenetv2
from .registry import BACKBONES
from .resnet import BasicBlock, Bottleneck, ResNet, resnet18, resnet34, resnet50, resnet101


def build_backbone(name: str, **kw) -> nn.Module:
    """Build a registered backbone by name; ``kw`` go to its factory (``output_stride``, ``deep_stem``)."""
    return BACKBONES.build(name, **kw)


__all__ = [
    "BACKBONES", "BasicBlock", "Bottleneck", "InvertedResidual", "MobileNetV2", "ResNet", "build_backbone",
    "mobilenetv2", "resnet18", "resnet34", "resnet50", "resnet101",
]
