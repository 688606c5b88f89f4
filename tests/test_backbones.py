"""Backbones: pinned parameter counts, feature shapes / strides, registry."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from hparse.errors import ConfigError
from hparse.models.backbones import BACKBONES, build_backbone
from hparse.models.backbones.mobilenet import MobileNetV2
from hparse.models.complexity import count_params

torch.set_num_threads(2)


@pytest.mark.parametrize("name,expected", [
    ("resnet18", 11_689_512), ("resnet34", 21_797_672), ("resnet50", 25_557_032),
    ("resnet101", 44_549_160), ("mobilenetv2", 3_504_872),
])
def test_param_counts_match_torchvision(name, expected):
    assert count_params(build_backbone(name, num_classes=1000)) == expected


def test_registry_names():
    assert BACKBONES.names() == ["efficientnet_lite0", "mobilenetv2", "resnet101", "resnet18", "resnet34", "resnet50"]
    with pytest.raises(ConfigError):
        build_backbone("resnet9000")


def test_torchvision_key_layout():
    keys = set(build_backbone("resnet50", num_classes=1000).state_dict())
    for k in ("conv1.weight", "bn1.running_mean", "layer1.0.downsample.0.weight", "layer4.2.bn3.weight",
              "fc.weight", "fc.bias"):
        assert k in keys
    mkeys = set(build_backbone("mobilenetv2", num_classes=1000).state_dict())
    for k in ("features.0.0.weight", "features.1.conv.0.0.weight", "features.2.conv.3.weight",
              "features.18.1.running_var", "classifier.1.weight"):
        assert k in mkeys


@pytest.mark.parametrize("os_,expected", [
    (32, {"c2": 16, "c3": 8, "c4": 4, "c5": 2}),
    (16, {"c2": 16, "c3": 8, "c4": 4, "c5": 4}),
    (8, {"c2": 16, "c3": 8, "c4": 8, "c5": 8}),
])
def test_resnet18_deep_stem_output_strides(os_, expected):
    m = build_backbone("resnet18", deep_stem=True, output_stride=os_).eval()
    with torch.no_grad():
        feats = m(torch.randn(1, 3, 64, 64))
    assert list(feats) == ["c2", "c3", "c4", "c5"]
    assert m.out_channels == {"c2": 64, "c3": 128, "c4": 256, "c5": 512}
    for k, f in feats.items():
        assert f.shape == (1, m.out_channels[k], expected[k], expected[k])
        assert m.strides[k] == 64 // expected[k]


def test_dilation_layout():
    m = build_backbone("resnet18", output_stride=8)
    assert m.layer3[0].conv1.stride == (1, 1) and m.layer3[0].conv1.dilation == (2, 2)
    assert m.layer4[1].conv2.dilation == (4, 4) and m.layer4[1].conv2.padding == (4, 4)
    m = build_backbone("resnet18", output_stride=16)
    assert m.layer3[0].conv1.stride == (2, 2) and m.layer4[0].conv1.stride == (1, 1)
    assert m.layer4[0].conv1.dilation == (2, 2)
    # CNIF: OS8 with multi-grid (1, 2, 4) on layer4 -> dilations 4, 8, 16
    m = build_backbone("resnet50", output_stride=8, multi_grid=(1, 2, 4), width=0.125)
    assert [b.conv2.dilation[0] for b in m.layer4] == [4, 8, 16]


def test_deep_stem_and_width():
    m = build_backbone("resnet50", deep_stem=True, width=0.25)
    assert [m.conv1.out_channels, m.conv2.out_channels, m.conv3.out_channels] == [16, 16, 32]
    assert m.conv1.stride == (2, 2) and m.conv3.kernel_size == (3, 3)
    assert m.layer1[0].conv1.in_channels == 32 and m.layer1[0].downsample[0].in_channels == 32
    full = build_backbone("resnet18", deep_stem=True)
    assert full.layer1[0].conv1.in_channels == 128 and full.layer1[0].downsample is not None
    assert full.conv3.out_channels == 128
    assert build_backbone("resnet18").layer1[0].conv1.in_channels == 64
    assert build_backbone("resnet18", width=0.5).out_channels == {"c2": 32, "c3": 64, "c4": 128, "c5": 256}
    assert m.out_channels == {"c2": 64, "c3": 128, "c4": 256, "c5": 512}


def test_zero_init_residual_and_bn_init():
    m = build_backbone("resnet18")
    assert torch.count_nonzero(m.layer1[0].bn2.weight) == 0
    assert torch.all(m.layer1[0].bn1.weight == 1) and torch.all(m.bn1.bias == 0)
    m = build_backbone("resnet18", zero_init_residual=False)
    assert torch.all(m.layer1[0].bn2.weight == 1)


def test_custom_norm_and_classification_logits():
    m = build_backbone("resnet18", width=0.25, num_classes=7,
                       norm_layer=lambda c: nn.GroupNorm(4, c)).eval()
    assert isinstance(m.layer2[0].bn1, nn.GroupNorm)
    with torch.no_grad():
        out = m(torch.randn(2, 3, 32, 32))
    assert out["logits"].shape == (2, 7)


def test_bad_output_stride():
    with pytest.raises(ValueError):
        build_backbone("resnet18", output_stride=4)
    with pytest.raises(ValueError):
        build_backbone("mobilenetv2", output_stride=12)


@pytest.mark.parametrize("os_", [8, 16, 32])
def test_mobilenet_output_strides(os_):
    m = build_backbone("mobilenetv2", output_stride=os_).eval()
    assert m.out_channels == {"c2": 24, "c3": 32, "c4": 96, "c5": 320}
    exp = {"c2": 4, "c3": 8, "c4": min(16, os_), "c5": os_}
    assert m.strides == exp
    with torch.no_grad():
        feats = m(torch.randn(1, 3, 64, 64))
    assert list(feats) == ["c2", "c3", "c4", "c5"]
    for k, f in feats.items():
        assert f.shape == (1, m.out_channels[k], 64 // exp[k], 64 // exp[k])


def test_mobilenet_width_last_conv_and_logits():
    m = MobileNetV2(width=0.5, last_conv=True, num_classes=5).eval()
    assert m.out_channels == {"c2": 16, "c3": 16, "c4": 48, "c5": 1280}
    with torch.no_grad():
        out = m(torch.randn(1, 3, 32, 32))
    assert out["c5"].shape == (1, 1280, 1, 1) and out["logits"].shape == (1, 5)
    assert count_params(MobileNetV2()) == 1_811_712  # no final 1x1 conv, no classifier
