"""Model complexity: parameter and multiply-accumulate (MAC) counts.

``count_macs`` runs one forward pass under ``torch.no_grad()`` (in eval mode; the mode is restored) with
forward hooks on the layers that dominate the cost:

- ``Conv2d``: ``out.numel() * (C_in / groups) * kh * kw`` (dilation and padding do not change it);
- ``ConvTranspose2d``: ``in.numel() * (C_out / groups) * kh * kw`` (each input element
  meets every kernel tap);
- ``Linear``: ``out.numel() * in_features``;
- with ``include_norm=True``: ``BatchNorm`` / ``GroupNorm`` / ``InstanceNorm`` / ``LayerNorm`` count one MAC
  per output element (a per-channel scale and shift; foldable into a conv at deploy time, so off by default).

Bias additions, activations, pooling, resizing and functional ops (e.g. the matmuls inside attention) are
not counted.  One MAC = one multiply + one add (1 GMAC ~ 2 GFLOPs).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

_NORMS = (nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.modules.instancenorm._InstanceNorm, nn.LayerNorm)


def count_params(module: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (shared parameters counted once)."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


def _conv_macs(m: nn.Conv2d, inp: tuple, out: torch.Tensor) -> int:
    kh, kw = m.kernel_size
    return out.numel() * (m.in_channels // m.groups) * kh * kw


def _convT_macs(m: nn.ConvTranspose2d, inp: tuple, out: torch.Tensor) -> int:
    kh, kw = m.kernel_size
    return inp[0].numel() * (m.out_channels // m.groups) * kh * kw


def _linear_macs(m: nn.Linear, inp: tuple, out: torch.Tensor) -> int:
    return out.numel() * m.in_features


def _norm_macs(m: nn.Module, inp: tuple, out: torch.Tensor) -> int:
    return out.numel()


def count_macs(model: nn.Module, input_size: Sequence[int] = (1, 3, 512, 512), *, include_norm: bool = False,
               inputs: torch.Tensor | None = None, per_module: dict[str, int] | None = None) -> int:
    """Multiply-accumulates of one forward pass on a zero tensor of ``input_size`` (or on ``inputs``).

    The model may return anything (tensor, dict, tuple).  ``per_module``, when a dict, is filled with the
    MACs of each counted leaf module by qualified name.
    """
    try:
        param = next(model.parameters())
        device, dtype = param.device, param.dtype
    except StopIteration:
        device, dtype = torch.device("cpu"), torch.float32
    x = inputs if inputs is not None else torch.zeros(tuple(input_size), device=device, dtype=dtype)

    total = [0]
    handles = []

    def add(name, fn):
        def hook(m, inp, out):
            n = int(fn(m, inp, out))
            total[0] += n
            if per_module is not None:
                per_module[name] = per_module.get(name, 0) + n
        return hook

    for name, m in model.named_modules():
        if isinstance(m, nn.Conv2d):
            handles.append(m.register_forward_hook(add(name, _conv_macs)))
        elif isinstance(m, nn.ConvTranspose2d):
            handles.append(m.register_forward_hook(add(name, _convT_macs)))
        elif isinstance(m, nn.Linear):
            handles.append(m.register_forward_hook(add(name, _linear_macs)))
        elif include_norm and isinstance(m, _NORMS):
            handles.append(m.register_forward_hook(add(name, _norm_macs)))

    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return total[0]


def format_count(n: float, precision: int = 2) -> str:
    """``4_710_000 -> "4.71M"``, ``2_350_000_000 -> "2.35G"``; decimal units K/M/G/T."""
    for unit, scale in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.{precision}f}{unit}"
    return str(int(n)) if float(n).is_integer() else f"{n:.{precision}f}"
