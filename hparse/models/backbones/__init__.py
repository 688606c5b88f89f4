"""Backbone registry.  Every backbone returns ``{"c2", "c3", "c4", "c5"}`` features (strides 4/8/16/32
unless dilated) and exposes ``out_channels`` / ``strides`` dicts."""

from __future__ import annotations

from torch import nn

from ...registry import Registry
from .mobilenet import InvertedResidual, MobileNetV2, mobilenetv2
from .resnet import BasicBlock, Bottleneck, ResNet, resnet18, resnet34, resnet50, resnet101

BACKBONES = Registry("backbone")
for _name, _fn in (("resnet18", resnet18), ("resnet34", resnet34), ("resnet50", resnet50),
                   ("resnet101", resnet101), ("mobilenetv2", mobilenetv2)):
    BACKBONES.register(_name)(_fn)


def build_backbone(name: str, **kw) -> nn.Module:
    """Build a registered backbone by name; ``kw`` go to its factory (``output_stride``, ``deep_stem``)."""
    return BACKBONES.build(name, **kw)


__all__ = [
    "BACKBONES", "BasicBlock", "Bottleneck", "InvertedResidual", "MobileNetV2", "ResNet", "build_backbone",
    "mobilenetv2", "resnet18", "resnet34", "resnet50", "resnet101",
]
