"""FPN neck on a ResNet-18: levels, strides and shapes, the top-down data flow, P6/P7 variants, GN, init."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from hparse.models.backbones import build_backbone
from hparse.models.complexity import count_params
from hparse.models.fpn import FPN

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def r18_feats():
    torch.manual_seed(0)
    backbone = build_backbone("resnet18").eval()
    with torch.no_grad():
        feats = backbone(torch.randn(1, 3, 128, 256))
    return backbone, feats


@pytest.mark.parametrize("extra_from", ["p5", "c5"])
def test_fpn_p2_p7_shapes_and_reference(r18_feats, extra_from):
    backbone, feats = r18_feats
    fpn = FPN(backbone.out_channels, 32, levels=("p2", "p3", "p4", "p5", "p6", "p7"), extra_from=extra_from).eval()
    with torch.no_grad():
        out = fpn(feats)
    assert list(out) == ["p2", "p3", "p4", "p5", "p6", "p7"]
    assert fpn.strides == {f"p{i}": 2 ** i for i in range(2, 8)}
    for name, x in out.items():
        assert x.shape == (1, 32, 128 // fpn.strides[name], 256 // fpn.strides[name]), name
    assert fpn.extra["p6"].in_channels == (32 if extra_from == "p5" else 512)
    # reference data flow (maskrcnn-benchmark FPN + LastLevelP6P7)
    with torch.no_grad():
        inner = fpn.lateral["c5"](feats["c5"])
        ref = {"p5": fpn.output["p5"](inner)}
        for i in (4, 3, 2):
            inner = fpn.lateral[f"c{i}"](feats[f"c{i}"]) + F.interpolate(inner, scale_factor=2, mode="nearest")
            ref[f"p{i}"] = fpn.output[f"p{i}"](inner)
        ref["p6"] = fpn.extra["p6"](ref["p5"] if extra_from == "p5" else feats["c5"])
        ref["p7"] = fpn.extra["p7"](F.relu(ref["p6"]))
    for name in ref:
        torch.testing.assert_close(out[name], ref[name])


def test_fpn_fcos_levels_from_full_backbone(r18_feats):
    backbone, feats = r18_feats
    fpn = FPN(backbone.out_channels, 16, levels=("p3", "p4", "p5", "p6", "p7"), extra_from="c5")
    assert fpn.in_levels == ("c3", "c4", "c5") and "c2" not in fpn.lateral
    with torch.no_grad():
        out = fpn(feats)
    assert [tuple(x.shape[-2:]) for x in out.values()] == [(16, 32), (8, 16), (4, 8), (2, 4), (1, 2)]
    # default levels: every backbone level + P6 and P7 (conv) or + P6 (maxpool)
    assert FPN(backbone.out_channels, 16).levels == ("p2", "p3", "p4", "p5", "p6", "p7")
    assert FPN(backbone.out_channels, 16, p6_mode="maxpool").levels == ("p2", "p3", "p4", "p5", "p6")


def test_fpn_maxpool_p6_and_param_count(r18_feats):
    backbone, feats = r18_feats
    fpn = FPN(backbone.out_channels, 256, levels=("p2", "p3", "p4", "p5", "p6"), p6_mode="maxpool")
    lateral = sum(c * 256 + 256 for c in (64, 128, 256, 512))
    assert count_params(fpn) == lateral + 4 * (256 * 256 * 9 + 256)
    with torch.no_grad():
        out = fpn(feats)
    torch.testing.assert_close(out["p6"], out["p5"][:, :, ::2, ::2])
    assert out["p6"].shape == (1, 256, 2, 4)


def test_fpn_odd_sizes_gn_and_init():
    torch.manual_seed(1)
    backbone = build_backbone("resnet18", width=0.25)
    fpn = FPN(backbone.out_channels, 24, norm="gn")
    gns = [m for m in fpn.modules() if isinstance(m, nn.GroupNorm)]
    assert len(gns) == 8 and all(m.num_groups == 8 for m in gns)  # gcd(32, 24)
    assert all(fpn.lateral[c][0].bias is None for c in fpn.lateral)
    assert fpn.extra["p6"].bias is not None and fpn.extra["p7"].bias is not None
    for m in fpn.modules():
        if isinstance(m, nn.Conv2d):  # kaiming_uniform_(a=1): U(-sqrt(3 / fan_in), sqrt(3 / fan_in))
            bound = math.sqrt(3.0 / (m.in_channels * m.kernel_size[0] * m.kernel_size[1]))
            assert m.weight.abs().max() <= bound and m.weight.abs().max() > 0.9 * bound
            assert m.bias is None or m.bias.abs().max() == 0
    x = torch.randn(2, 3, 100, 70)  # not a multiple of 32: top-down upsamples to each lateral's size
    out = fpn(backbone(x))
    shapes = {k: tuple(v.shape) for k, v in out.items()}
    assert shapes == {"p2": (2, 24, 25, 18), "p3": (2, 24, 13, 9), "p4": (2, 24, 7, 5), "p5": (2, 24, 4, 3),
                      "p6": (2, 24, 2, 2), "p7": (2, 24, 1, 1)}
    sum(v.sum() for v in out.values()).backward()
    assert backbone.conv1.weight.grad is not None


def test_fpn_rejects_bad_configs():
    ch = {"c2": 8, "c3": 16, "c4": 32, "c5": 64}
    for kw in ({"levels": ("p3", "p5")}, {"levels": ("p6", "p7")}, {"levels": ("p2", "p3")},
               {"levels": ("p3", "p4", "p5", "p6", "p7", "p8")},
               {"p6_mode": "maxpool", "levels": ("p4", "p5", "p6", "p7")},
               {"extra_from": "c4"}, {"norm": "bn"}, {"p6_mode": "pool"}):
        with pytest.raises(ValueError):
            FPN(ch, 8, **kw)
    with pytest.raises(ValueError):
        FPN({"c2": 8, "c4": 32}, 8)
