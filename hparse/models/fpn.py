"""Feature Pyramid Network neck (Lin et al. 2017), as maskrcnn-benchmark / FCOS / Detectron2 build it.

- Lateral 1x1 conv per backbone level ``c_i`` -> ``out_channels``; top-down: the coarser merged map is
  upsampled (nearest, to the lateral's size -- x2 for even sizes) and added; a 3x3 output conv gives ``p_i``.
- Extra levels above the top backbone level, for ``p6_mode="conv"``: P6 = 3x3 stride-2 conv of P5
  (``extra_from="p5"``: FCOS) or of C5 (``"c5"``: RetinaNet), P7 = 3x3 stride-2 conv of ReLU(P6)
  (``LastLevelP6P7``); for ``p6_mode="maxpool"``: P6 = max-pool(k=1, s=2) of P5 (Faster / Mask R-CNN
  ``LastLevelMaxPool``; no P7).  With a backbone ending below C5, "p5"/"c5" mean its top level.
- ``norm="gn"``: GroupNorm(32, or gcd with the width) after the lateral and output convs (then bias-free);
  P6/P7 convs never have a norm.  Every conv: Kaiming-uniform ``a=1``, bias 0
  (maskrcnn-benchmark ``conv_with_kaiming_uniform``).

``levels`` picks the outputs, a contiguous run like ``("p3", ..., "p7")``: backbone levels below the
lowest one are ignored (so a full ``c2..c5`` backbone dict works for FCOS's P3-P7).  ``forward`` takes the
backbone's dict and returns ``{"p3": ..., "p7": ...}``; ``strides`` gives each level's nominal stride
``2 ** i`` (true for an undilated backbone).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .blocks import ConvBNAct, group_norm, upsample_like


def _level(name: str, prefix: str) -> int:
    if len(name) < 2 or name[0] != prefix or not name[1:].isdigit():
        raise ValueError(f"expected a level name like {prefix}3, got {name!r}")
    return int(name[1:])


class FPN(nn.Module):
    def __init__(self, in_channels: Mapping[str, int], out_channels: int = 256, levels: Sequence[str] | None = None,
                 extra_from: str = "p5", p6_mode: str = "conv", norm: str | None = None, gn_groups: int = 32):
        super().__init__()
        if extra_from not in ("p5", "c5"):
            raise ValueError(f"extra_from must be 'p5' or 'c5', got {extra_from!r}")
        if p6_mode not in ("conv", "maxpool"):
            raise ValueError(f"p6_mode must be 'conv' or 'maxpool', got {p6_mode!r}")
        if norm not in (None, "none", "gn"):
            raise ValueError(f"norm must be None or 'gn', got {norm!r}")
        avail = sorted(_level(k, "c") for k in in_channels)
        if avail != list(range(avail[0], avail[-1] + 1)):
            raise ValueError(f"backbone levels must be contiguous, got {sorted(in_channels)}")
        top = avail[-1]
        if levels is None:
            levels = [f"p{i}" for i in range(avail[0], top + (3 if p6_mode == "conv" else 2))]
        lv = [_level(k, "p") for k in levels]
        lo, hi = lv[0], lv[-1]
        if lv != list(range(lo, hi + 1)) or lo < avail[0] or lo > top or hi < top:
            raise ValueError(f"levels {list(levels)} must be contiguous, start at a backbone level "
                             f"({avail[0]}..{top}) and reach p{top}")
        if p6_mode == "maxpool" and hi > top + 1:
            raise ValueError(f"p6_mode='maxpool' gives only one extra level (p{top + 1}), asked for {list(levels)}")
        if hi > top + 2:
            raise ValueError(f"at most two extra levels above p{top}, asked for {list(levels)}")
        self.levels = tuple(f"p{i}" for i in lv)
        self.in_levels = tuple(f"c{i}" for i in range(lo, top + 1))
        self.extra_from, self.p6_mode = extra_from, p6_mode
        self.out_channels = out_channels
        self.strides = {f"p{i}": 2 ** i for i in lv}

        gn = norm == "gn"
        norm_fn = (lambda c: group_norm(c, gn_groups)) if gn else False
        self.lateral = nn.ModuleDict({c: ConvBNAct(in_channels[c], out_channels, 1, act=None, bias=not gn,
                                                   norm=norm_fn) for c in self.in_levels})
        self.output = nn.ModuleDict({f"p{i}": ConvBNAct(out_channels, out_channels, 3, act=None, bias=not gn,
                                                        norm=norm_fn) for i in range(lo, top + 1)})
        self.extra = nn.ModuleDict()
        if p6_mode == "conv":
            extra_in = out_channels if extra_from == "p5" else in_channels[f"c{top}"]
            for i in range(top + 1, hi + 1):
                self.extra[f"p{i}"] = nn.Conv2d(extra_in if i == top + 1 else out_channels, out_channels, 3, 2, 1)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_uniform_(m.weight, a=1)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward(self, feats: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        names = self.in_levels
        out: dict[str, torch.Tensor] = {}
        inner = None
        for c in reversed(names):
            lat = self.lateral[c](feats[c])
            inner = lat if inner is None else lat + upsample_like(inner, lat, mode="nearest")
            out[f"p{c[1:]}"] = self.output[f"p{c[1:]}"](inner)
        top = int(names[-1][1:])
        for name in self.levels[len(names):]:
            i = int(name[1:])
            if self.p6_mode == "maxpool":
                out[name] = F.max_pool2d(out[f"p{top}"], kernel_size=1, stride=2)
            elif i == top + 1:
                out[name] = self.extra[name](out[f"p{top}"] if self.extra_from == "p5" else feats[names[-1]])
            else:
                out[name] = self.extra[name](F.relu(out[f"p{i - 1}"]))
        return {k: out[k] for k in self.levels}

    def extra_repr(self) -> str:
        return f"levels={self.levels}, extra_from={self.extra_from!r}, p6_mode={self.p6_mode!r}"
