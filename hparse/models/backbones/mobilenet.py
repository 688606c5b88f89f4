"""MobileNetV2 and EfficientNet-Lite0 backbones (inverted-residual trunks) returning a dict of multi-scale features.

Topology and module names follow torchvision (``features.0`` stem, ``features.1..17`` inverted residuals,
``features.18`` the final 1x1 conv to 1280, ``classifier.1`` the fc), so torchvision state dicts load
directly.  With ``num_classes=1000`` at width 1.0 the parameter count is torchvision's 3,504,872.

EfficientNet-Lite0 (Tan & Le 2019; the "lite" variant for mobile CPUs: no squeeze-excitation, ReLU6, fixed stem
and head) is the same topology with other stage settings (3x3 and 5x5 depthwise kernels, 24/40/80/112/192/320
channels), BatchNorm eps 1e-3 and TensorFlow's "same" padding on the stride-2 convolutions (pad one pixel less
before than after: the layout its ImageNet weights were trained with). Its ImageNet weights come from
:mod:`hparse.models.backbones.pretrained` (``train.init_from: imagenet:efficientnet_lite0``).

Features: ``c2`` = end of the 24-channel stage (stride 4), ``c3`` = 32-channel stage (stride 8),
``c4`` = 96-channel stage (stride 16), ``c5`` = 320-channel stage (stride 32), or the 1280-channel final
conv when ``last_conv`` is on (default: only when ``num_classes`` is set -- at stride 16/8 that conv is
a large share of the cost and segmentation heads do not need it).

Dilation follows mmseg: ``output_stride=16`` turns the stride of the 160-channel stage into dilation 2
(for it and the 320 stage); ``output_stride=8`` also turns the stride of the 64-channel stage into
dilation 2 (64 and 96 stages) and uses dilation 4 for the 160 and 320 stages.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import torch
from torch import nn

from .registry import BACKBONES

NormLayer = Callable[[int], nn.Module]

# (expand ratio t, channels c, repeats n, stride s, depthwise kernel k) -- the MobileNetV2 paper's table 2
MOBILENETV2_SETTINGS = ((1, 16, 1, 1, 3), (6, 24, 2, 2, 3), (6, 32, 3, 2, 3), (6, 64, 4, 2, 3), (6, 96, 3, 1, 3),
                        (6, 160, 3, 2, 3), (6, 320, 1, 1, 3))
# EfficientNet-B0's table 1 (the lite variant keeps it, without squeeze-excitation)
EFFICIENTNET_LITE0_SETTINGS = ((1, 16, 1, 1, 3), (6, 24, 2, 2, 3), (6, 40, 2, 2, 5), (6, 80, 3, 2, 3),
                               (6, 112, 3, 1, 5), (6, 192, 4, 2, 5), (6, 320, 1, 1, 3))
# stage index whose output gives c2, c3, c4, c5
_TAPS = {"c2": 1, "c3": 2, "c4": 4, "c5": 6}
_OS_PRESETS: dict[int, tuple[tuple[int, ...], tuple[int, ...]]] = {
    32: ((1, 2, 2, 2, 1, 2, 1), (1, 1, 1, 1, 1, 1, 1)),
    16: ((1, 2, 2, 2, 1, 1, 1), (1, 1, 1, 1, 1, 2, 2)),
    8: ((1, 2, 2, 1, 1, 1, 1), (1, 1, 1, 2, 2, 4, 4)),
}


def make_divisible(v: float, divisor: int = 8, min_value: int | None = None) -> int:
    """Round channels to a multiple of ``divisor`` without going more than 10% down (torchvision rule)."""
    min_value = min_value or divisor
    new_v = max(min_value, int(v + divisor / 2) // divisor * divisor)
    if new_v < 0.9 * v:
        new_v += divisor
    return new_v


def _conv_bn_relu6(cin: int, cout: int, k: int = 3, stride: int = 1, dilation: int = 1, groups: int = 1,
                   norm_layer: NormLayer = nn.BatchNorm2d, tf_padding: bool = False) -> nn.Sequential:
    """Conv -> norm -> ReLU6; ``tf_padding``: a stride-2 conv pads ``k // 2 - 1`` before and ``k // 2`` after
    (TensorFlow's "same" on an even input) instead of ``k // 2`` on both sides."""
    pad = dilation * (k - 1) // 2
    conv = nn.Conv2d(cin, cout, k, stride, pad, dilation=dilation, groups=groups, bias=False)
    if tf_padding and stride == 2 and k > 1:
        conv.padding = (0, 0)
        conv = nn.Sequential(nn.ZeroPad2d((pad - 1, pad, pad - 1, pad)), conv)
    return nn.Sequential(conv, norm_layer(cout), nn.ReLU6(inplace=True))


class InvertedResidual(nn.Module):
    def __init__(self, inp: int, oup: int, stride: int, expand_ratio: int, dilation: int = 1,
                 norm_layer: NormLayer = nn.BatchNorm2d, kernel: int = 3, tf_padding: bool = False):
        super().__init__()
        if stride not in (1, 2):
            raise ValueError(f"stride must be 1 or 2, got {stride}")
        hidden = int(round(inp * expand_ratio))
        self.use_res_connect = stride == 1 and inp == oup
        layers: list[nn.Module] = []
        if expand_ratio != 1:
            layers.append(_conv_bn_relu6(inp, hidden, 1, norm_layer=norm_layer))
        layers += [
            _conv_bn_relu6(hidden, hidden, kernel, stride, dilation, groups=hidden, norm_layer=norm_layer,
                           tf_padding=tf_padding),
            nn.Conv2d(hidden, oup, 1, bias=False),
            norm_layer(oup),
        ]
        self.conv = nn.Sequential(*layers)
        self.out_channels = oup

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.use_res_connect:
            return x + self.conv(x)
        return self.conv(x)


class MobileNetV2(nn.Module):
    """MobileNetV2 trunk (or, with other ``settings``, another inverted-residual trunk such as EfficientNet-Lite0).

    Args:
        width: width multiplier (channels rounded to multiples of ``round_nearest``).
        output_stride: 8, 16 or 32 (dilated beyond it).
        num_classes: when an int, adds the classifier (dropout 0.2 + linear) and returns ``"logits"``.
        last_conv: include the final 1x1 conv to 1280*max(1, width) channels;
            default ``num_classes is not None``.
        norm_layer: ``callable(num_channels) -> nn.Module``; default ``nn.BatchNorm2d``.
        settings: per stage ``(expand ratio, channels, repeats, stride, depthwise kernel)``, 7 stages.
        tf_padding: TensorFlow's "same" padding on the stride-2 convs (see :func:`_conv_bn_relu6`).
    """

    def __init__(self, width: float = 1.0, *, output_stride: int = 32, num_classes: int | None = None,
                 last_conv: bool | None = None, norm_layer: NormLayer | None = None, round_nearest: int = 8,
                 in_channels: int = 3, dropout: float = 0.2, settings=MOBILENETV2_SETTINGS,
                 tf_padding: bool = False):
        super().__init__()
        if output_stride not in _OS_PRESETS:
            raise ValueError(f"output_stride must be one of 8, 16, 32, got {output_stride!r}")
        norm_layer = norm_layer or nn.BatchNorm2d
        strides, dilations = _OS_PRESETS[output_stride]
        self.width = width
        self.num_classes = num_classes
        self.last_conv = num_classes is not None if last_conv is None else bool(last_conv)

        input_channel = make_divisible(32 * width, round_nearest)
        features: list[nn.Module] = [_conv_bn_relu6(in_channels, input_channel, 3, 2, norm_layer=norm_layer,
                                                    tf_padding=tf_padding)]
        self._tap_index: dict[str, int] = {}
        self.out_channels: dict[str, int] = {}
        self.strides: dict[str, int] = {}
        total_stride = 2
        for si, ((t, c, n, _, k), s, d) in enumerate(zip(settings, strides, dilations)):
            oc = make_divisible(c * width, round_nearest)
            for i in range(n):
                features.append(InvertedResidual(input_channel, oc, s if i == 0 else 1, t, d, norm_layer, k,
                                                  tf_padding))
                input_channel = oc
            total_stride *= s
            for name, tap in _TAPS.items():
                if tap == si:
                    self._tap_index[name] = len(features) - 1
                    self.out_channels[name] = oc
                    self.strides[name] = total_stride
        if self.last_conv:
            last_channel = make_divisible(1280 * max(1.0, width), round_nearest)
            features.append(_conv_bn_relu6(input_channel, last_channel, 1, norm_layer=norm_layer))
            self._tap_index["c5"] = len(features) - 1
            self.out_channels["c5"] = last_channel
        self.features = nn.Sequential(*features)
        if num_classes is not None:
            self.classifier = nn.Sequential(nn.Dropout(dropout),
                                            nn.Linear(self.out_channels["c5"], num_classes))
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d | nn.GroupNorm | nn.SyncBatchNorm) and m.weight is not None:
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        taps = {idx: name for name, idx in self._tap_index.items()}
        out: dict[str, torch.Tensor] = {}
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in taps:
                out[taps[i]] = x
        if self.num_classes is not None:
            out["logits"] = self.classifier(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))
        return out


@BACKBONES.register("mobilenetv2")
def mobilenetv2(**kw) -> MobileNetV2:
    return MobileNetV2(**kw)


@BACKBONES.register("efficientnet_lite0")
def efficientnet_lite0(**kw) -> MobileNetV2:
    """EfficientNet-Lite0: the MobileNetV2 topology with B0's stages, BatchNorm eps 1e-3, TensorFlow padding."""
    kw.setdefault("norm_layer", partial(nn.BatchNorm2d, eps=1e-3))
    return MobileNetV2(settings=EFFICIENTNET_LITE0_SETTINGS, tf_padding=True, **kw)
