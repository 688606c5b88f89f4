"""ResNet backbones returning a dict of multi-scale features.

One class covers the variants the papers use:

- torchvision topology (7x7 stem) -- ``resnet50(num_classes=1000)`` has exactly torchvision's
  parameter count, and module names match torchvision (``conv1``, ``bn1``, ``layer1.0.downsample.0`` ...)
  so its state dicts load directly;
- the CE2P / CNIF / mmseg-ResNetV1c "deep stem" (three 3x3 convs 3->64 s2, 64->64, 64->128, each BN+ReLU,
  then maxpool; layer1 then starts from 128 channels).  The stem modules are named ``conv1/bn1``,
  ``conv2/bn2``, ``conv3/bn3`` as in CE2P's ``resnet101-imagenet.pth``;
- dilated variants: ``output_stride`` 8/16/32 or explicit per-stage ``strides`` / ``dilations``, and
  ``multi_grid`` for the last stage (block i of layer4 uses ``dilation * multi_grid[i % len]``, as in
  CE2P/CNIF; every block of a dilated stage -- including the first -- uses the stage dilation);
- a ``width`` multiplier on the base width 64 for light variants;
- detection options (Detectron / maskrcnn-benchmark): ``stride_in_1x1`` (the caffe MSRA bottleneck, stride
  on the first 1x1 conv), ResNeXt ``groups`` x ``width_per_group`` (X-101-32x8d: 32 x 8), ``freeze_at``
  (stages whose weights do not train: 1 = the stem, 2 = stem + layer1, ...; their norms stay in eval mode)
  and ``norm_eval`` (every BatchNorm in eval mode: running statistics fixed, affine still trained).
  FrozenBatchNorm is the model's ``norm: frozen_bn`` (``hparse.models.norms``). None of them changes a
  module name, so the state-dict keys are those of the plain ResNet.

``forward`` returns ``{"c2": layer1, "c3": layer2, "c4": layer3, "c5": layer4}`` (plus ``"logits"`` when
``num_classes`` is set).  ``out_channels`` and ``strides`` describe those features.

In a dilated stage, both 3x3 convs of a BasicBlock are dilated (DRN-style; mmseg dilates only the first).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from .registry import BACKBONES

NormLayer = Callable[[int], nn.Module]

_OS_PRESETS: dict[int, tuple[tuple[int, ...], tuple[int, ...]]] = {
    32: ((1, 2, 2, 2), (1, 1, 1, 1)),
    16: ((1, 2, 2, 1), (1, 1, 1, 2)),
    8: ((1, 2, 1, 1), (1, 1, 2, 4)),
}


def _conv3x3(cin: int, cout: int, stride: int = 1, dilation: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=dilation, dilation=dilation, bias=False)


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, dilation: int = 1,
                 downsample: nn.Module | None = None, norm_layer: NormLayer = nn.BatchNorm2d):
        super().__init__()
        self.conv1 = _conv3x3(inplanes, planes, stride, dilation)
        self.bn1 = norm_layer(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = _conv3x3(planes, planes, 1, dilation)
        self.bn2 = norm_layer(planes)
        self.downsample = downsample

    def last_norm(self) -> nn.Module:
        return self.bn2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """torchvision v1.5 bottleneck: the stride sits on the 3x3 conv (as in CE2P / mmseg 'pytorch' style);
    ``stride_in_1x1`` puts it on the first 1x1 conv (caffe MSRA weights). ResNeXt: the 3x3 conv has
    ``groups`` groups of ``base_width`` channels per 64 ``planes`` (torchvision's ``width``)."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, dilation: int = 1,
                 downsample: nn.Module | None = None, norm_layer: NormLayer = nn.BatchNorm2d,
                 groups: int = 1, base_width: int = 64, stride_in_1x1: bool = False):
        super().__init__()
        width = int(planes * base_width / 64) * groups
        s1, s3 = (stride, 1) if stride_in_1x1 else (1, stride)
        self.conv1 = nn.Conv2d(inplanes, width, 1, stride=s1, bias=False)
        self.bn1 = norm_layer(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride=s3, padding=dilation, dilation=dilation, groups=groups,
                               bias=False)
        self.bn2 = norm_layer(width)
        self.conv3 = nn.Conv2d(width, planes * self.expansion, 1, bias=False)
        self.bn3 = norm_layer(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def last_norm(self) -> nn.Module:
        return self.bn3

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class ResNet(nn.Module):
    """ResNet trunk; see the module docstring.

    Args:
        block: ``BasicBlock`` or ``Bottleneck``.
        layers: number of blocks per stage, e.g. ``(3, 4, 23, 3)``.
        deep_stem: CE2P / ResNetV1c stem (three 3x3 convs) instead of the 7x7 conv.
        strides, dilations: per stage (layer1..layer4).
        multi_grid: per-block dilation multipliers of layer4 (cycled if shorter than the stage).
        output_stride: 8, 16 or 32; when given it overrides ``strides`` / ``dilations``
            (OS16: layer4 s1 d2; OS8: layer3 s1 d2, layer4 s1 d4).
        width: multiplier on the base width 64 (stem and all stages).
        norm_layer: ``callable(num_channels) -> nn.Module``; default ``nn.BatchNorm2d``.
        num_classes: when an int, adds global average pooling + ``fc`` and returns ``"logits"``.
        zero_init_residual: zero the last norm weight of every block (each block starts as identity).
        in_channels: input image channels.
        groups, width_per_group: ResNeXt cardinality and channels per group (Bottleneck only).
        stride_in_1x1: stride on the first 1x1 conv of a bottleneck (caffe MSRA weights; Bottleneck only).
        freeze_at: 0 trains everything; k >= 1 freezes the stem and ``layer1`` .. ``layer{k-1}``
            (``requires_grad = False``, norms in eval mode): Detectron's ``FREEZE_AT`` (2 for detectors).
        norm_eval: keep every BatchNorm in eval mode while training (statistics fixed, affine trained).
    """

    def __init__(self, block: type[BasicBlock] | type[Bottleneck], layers: Sequence[int], *,
                 deep_stem: bool = False, strides: Sequence[int] = (1, 2, 2, 2),
                 dilations: Sequence[int] = (1, 1, 1, 1), multi_grid: Sequence[int] | None = None,
                 output_stride: int | None = None, width: float = 1.0,
                 norm_layer: NormLayer | None = None, num_classes: int | None = None,
                 zero_init_residual: bool = True, in_channels: int = 3, groups: int = 1,
                 width_per_group: int = 64, stride_in_1x1: bool = False, freeze_at: int = 0,
                 norm_eval: bool = False):
        super().__init__()
        if len(layers) != 4:
            raise ValueError(f"layers must have 4 entries, got {layers!r}")
        if output_stride is not None:
            if output_stride not in _OS_PRESETS:
                raise ValueError(f"output_stride must be one of 8, 16, 32, got {output_stride!r}")
            strides, dilations = _OS_PRESETS[output_stride]
        strides, dilations = tuple(int(s) for s in strides), tuple(int(d) for d in dilations)
        if len(strides) != 4 or len(dilations) != 4:
            raise ValueError("strides and dilations need one entry per stage (4)")
        if width <= 0:
            raise ValueError(f"width must be > 0, got {width!r}")
        if not 0 <= freeze_at <= 5:
            raise ValueError(f"freeze_at must be 0 (nothing) .. 5 (every stage), got {freeze_at!r}")
        block_options = _block_options(block, groups, width_per_group, stride_in_1x1)
        norm_layer = norm_layer or nn.BatchNorm2d
        self.deep_stem = deep_stem
        self.width = width
        self.num_classes = num_classes
        self.stage_strides = strides
        self.stage_dilations = dilations
        self.multi_grid = tuple(multi_grid) if multi_grid else (1,)

        base = max(1, int(round(64 * width)))
        self.relu = nn.ReLU(inplace=True)
        if deep_stem:
            self.conv1 = _conv3x3(in_channels, base, stride=2)
            self.bn1 = norm_layer(base)
            self.conv2 = _conv3x3(base, base)
            self.bn2 = norm_layer(base)
            self.conv3 = _conv3x3(base, 2 * base)
            self.bn3 = norm_layer(2 * base)
            self.inplanes = 2 * base
        else:
            self.conv1 = nn.Conv2d(in_channels, base, 7, stride=2, padding=3, bias=False)
            self.bn1 = norm_layer(base)
            self.inplanes = base
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)

        planes = [base, 2 * base, 4 * base, 8 * base]
        grids = ((1,), (1,), (1,), self.multi_grid)
        for i in range(4):
            self.add_module(f"layer{i + 1}", self._make_layer(block, planes[i], layers[i], strides[i],
                                                              dilations[i], grids[i], norm_layer, block_options))

        self.out_channels: dict[str, int] = {f"c{i + 2}": p * block.expansion for i, p in enumerate(planes)}
        self.strides: dict[str, int] = {}
        total = 4
        for i, s in enumerate(strides):
            total *= s
            self.strides[f"c{i + 2}"] = total

        if num_classes is not None:
            self.avgpool = nn.AdaptiveAvgPool2d(1)
            self.fc = nn.Linear(self.out_channels["c5"], num_classes)

        self._init_weights(zero_init_residual)
        self.freeze_at, self.norm_eval = int(freeze_at), bool(norm_eval)
        for module in self.frozen_modules():
            module.requires_grad_(False)

    def _make_layer(self, block, planes: int, blocks: int, stride: int, dilation: int,
                    multi_grid: Sequence[int], norm_layer: NormLayer, block_options: dict | None = None
                    ) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(
                nn.Conv2d(self.inplanes, planes * block.expansion, 1, stride=stride, bias=False),
                norm_layer(planes * block.expansion),
            )
        mods = []
        for i in range(blocks):
            d = dilation * int(multi_grid[i % len(multi_grid)])
            mods.append(block(self.inplanes, planes, stride if i == 0 else 1, d,
                              downsample if i == 0 else None, norm_layer, **(block_options or {})))
            self.inplanes = planes * block.expansion
        return nn.Sequential(*mods)

    def _init_weights(self, zero_init_residual: bool) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d | nn.GroupNorm | nn.SyncBatchNorm) and m.weight is not None:
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        if zero_init_residual:
            for m in self.modules():
                if isinstance(m, BasicBlock | Bottleneck):
                    norm = m.last_norm()
                    if getattr(norm, "weight", None) is not None:
                        nn.init.zeros_(norm.weight)

    def frozen_modules(self) -> list[nn.Module]:
        """The stem's modules and ``layer1`` .. ``layer{freeze_at - 1}`` (empty for ``freeze_at=0``)."""
        if self.freeze_at == 0:
            return []
        stem = [getattr(self, n) for n in ("conv1", "bn1", "conv2", "bn2", "conv3", "bn3") if hasattr(self, n)]
        return stem + [getattr(self, f"layer{i}") for i in range(1, self.freeze_at)]

    def train(self, mode: bool = True) -> ResNet:
        """As ``nn.Module.train``, but the norms of frozen stages (all norms with ``norm_eval``) stay in eval."""
        super().train(mode)
        if mode:
            for module in [self] if self.norm_eval else self.frozen_modules():
                for m in module.modules():
                    if isinstance(m, nn.modules.batchnorm._BatchNorm):
                        m.eval()
        return self

    def stem_features(self, x: torch.Tensor) -> torch.Tensor:
        """The stem's convolutions, before the max pool (1/2 resolution)."""
        x = self.relu(self.bn1(self.conv1(x)))
        if self.deep_stem:
            x = self.relu(self.bn2(self.conv2(x)))
            x = self.relu(self.bn3(self.conv3(x)))
        return x

    def stem(self, x: torch.Tensor) -> torch.Tensor:
        return self.maxpool(self.stem_features(x))

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        x = self.stem(x)
        c2 = self.layer1(x)
        c3 = self.layer2(c2)
        c4 = self.layer3(c3)
        c5 = self.layer4(c4)
        out = {"c2": c2, "c3": c3, "c4": c4, "c5": c5}
        if self.num_classes is not None:
            out["logits"] = self.fc(torch.flatten(self.avgpool(c5), 1))
        return out


def _block_options(block, groups: int, width_per_group: int, stride_in_1x1: bool) -> dict:
    """The keyword arguments for ``block`` of the ResNeXt / caffe options (none at their defaults)."""
    options = {}
    if groups != 1 or width_per_group != 64:
        options.update(groups=int(groups), base_width=int(width_per_group))
    if stride_in_1x1:
        options["stride_in_1x1"] = True
    if options and block is not Bottleneck:
        raise ValueError(f"groups, width_per_group and stride_in_1x1 need Bottleneck blocks, not {block.__name__}")
    return options


@BACKBONES.register("resnet18")
def resnet18(**kw) -> ResNet:
    return ResNet(BasicBlock, (2, 2, 2, 2), **kw)


@BACKBONES.register("resnet34")
def resnet34(**kw) -> ResNet:
    return ResNet(BasicBlock, (3, 4, 6, 3), **kw)


@BACKBONES.register("resnet50")
def resnet50(**kw) -> ResNet:
    return ResNet(Bottleneck, (3, 4, 6, 3), **kw)


@BACKBONES.register("resnet101")
def resnet101(**kw) -> ResNet:
    return ResNet(Bottleneck, (3, 4, 23, 3), **kw)
