"""Normalisation layers chosen per model (``model.norm`` in a config, a key of every model):

- ``bn``: BatchNorm as built (the papers' choice);
- ``gn``: GroupNorm (32 groups, fewer for narrow layers: :func:`batch_free_group_norm`) in place of every
  BatchNorm -- independent of the batch, so small CPU batches, or a batch split over processes, compute the same thing;
- ``frozen_bn``: BatchNorm with fixed statistics and affine (detectron2's FrozenBatchNorm2d; for fine-tuning).
"""

from __future__ import annotations

import torch
from torch import nn

NORMS = ("bn", "gn", "frozen_bn")


class FrozenBatchNorm2d(nn.Module):
    """``y = (x - mean) / sqrt(var + eps) * weight + bias`` with every term a buffer (never trained)."""

    def __init__(self, channels: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        for name, value in (("weight", 1.0), ("bias", 0.0), ("running_mean", 0.0), ("running_var", 1.0)):
            self.register_buffer(name, torch.full((channels,), value))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = self.weight * (self.running_var + self.eps).rsqrt()
        return x * scale.view(1, -1, 1, 1) + (self.bias - self.running_mean * scale).view(1, -1, 1, 1)


def batch_free_group_norm(channels: int, groups: int = 32) -> nn.GroupNorm:
    """In place of a BatchNorm: ``groups`` groups, or the largest divisor of ``channels`` below it that leaves two
    channels a group (a pooled 1x1 map still has two values to normalise; ``blocks.group_norm``'s gcd rule may
    leave one)."""
    g = max(d for d in range(1, max(1, min(groups, channels // 2)) + 1) if channels % d == 0)
    return nn.GroupNorm(g, channels)


def _replacement(bn: nn.BatchNorm2d, kind: str) -> nn.Module:
    if kind == "gn":
        return batch_free_group_norm(bn.num_features)
    frozen = FrozenBatchNorm2d(bn.num_features, bn.eps)
    for name in ("weight", "bias", "running_mean", "running_var"):
        value = getattr(bn, name)
        if value is not None:
            getattr(frozen, name).copy_(value.detach())
    return frozen


def convert_norms(module: nn.Module, kind: str) -> nn.Module:
    """Replace every BatchNorm2d below ``module`` by the ``kind`` layer (in place; returns ``module``)."""
    if kind not in NORMS:
        raise ValueError(f"norm must be one of {NORMS}, got {kind!r}")
    if kind == "bn":
        return module
    for name, child in module.named_children():
        if isinstance(child, nn.BatchNorm2d):
            setattr(module, name, _replacement(child, kind))
        else:
            convert_norms(child, kind)
    return module
