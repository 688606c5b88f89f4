"""Shared blocks: shapes, pinned behaviours, MAC counter."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from hparse.models.blocks import (
    ASPP,
    PPM,
    SE,
    CE2PDecoder,
    CE2PEdge,
    ChannelShuffle,
    ConvBNAct,
    GlobalConv,
    NonLocal2d,
    channel_shuffle,
    upsample_like,
)
from hparse.models.complexity import count_macs, count_params, format_count

torch.set_num_threads(2)


def test_conv_bn_act_variants():
    m = ConvBNAct(4, 8, 3, stride=2, dilation=2, act="leaky")
    assert isinstance(m[1], nn.BatchNorm2d) and isinstance(m[2], nn.LeakyReLU)
    assert m[2].negative_slope == 0.01 and m[0].padding == (2, 2) and m[0].bias is None
    assert m(torch.randn(2, 4, 16, 16)).shape == (2, 8, 8, 8)
    m = ConvBNAct(4, 8, 1, act="none", norm=False, bias=True)
    assert len(m) == 1 and m[0].bias is not None
    m = ConvBNAct(4, 8, act="relu", norm=lambda c: nn.GroupNorm(2, c))
    assert isinstance(m[1], nn.GroupNorm) and isinstance(m[2], nn.ReLU)
    with pytest.raises(ValueError):
        ConvBNAct(4, 8, act="swish!")


def test_ppm_shape_and_structure():
    m = PPM(32, out_ch=16, stage_ch=8).eval()
    assert [s[0].output_size for s in m.stages] == [1, 2, 3, 6]
    assert isinstance(m.bottleneck[2], nn.LeakyReLU) and m.bottleneck[0].in_channels == 32 + 4 * 8
    assert m.bottleneck[0].kernel_size == (3, 3)
    assert not any(isinstance(x, nn.Dropout2d) for x in m.modules())
    with torch.no_grad():
        assert m(torch.randn(1, 32, 12, 10)).shape == (1, 16, 12, 10)


def test_aspp_shapes_and_branches():
    m = ASPP(16, 8, dilations=(2, 4, 6)).eval()
    assert len(m.branches) == 4 and m.image_pool is not None
    assert [b[0].dilation[0] for b in m.branches[1:]] == [2, 4, 6]
    assert m.project[0][0].in_channels == 5 * 8
    with torch.no_grad():
        assert m(torch.randn(1, 16, 9, 11)).shape == (1, 8, 9, 11)
    cnif = ASPP(16, 8, project_3x3=True, project_act="leaky", image_pool=False)
    assert cnif.project[0][0].in_channels == 4 * 8 and cnif.project[1][0].kernel_size == (3, 3)
    assert cnif(torch.randn(2, 16, 5, 5)).shape == (2, 8, 5, 5)


def test_ce2p_edge():
    m = CE2PEdge(in_chs=(8, 12, 16), mid=4, out=2).eval()
    x1, x2, x3 = torch.randn(1, 8, 16, 16), torch.randn(1, 12, 8, 8), torch.randn(1, 16, 4, 4)
    with torch.no_grad():
        edge, feats = m(x1, x2, x3)
        edge2, _ = m([x1, x2, x3])
    assert edge.shape == (1, 2, 16, 16) and feats.shape == (1, 12, 16, 16) and m.out_channels == 12
    assert torch.equal(edge, edge2)
    assert m.shared.kernel_size == (3, 3) and m.shared.bias is not None and m.fuse.in_channels == 6
    # one shared 3x3 conv: the only conv with 2 outputs besides the fuse conv
    assert sum(1 for x in m.modules() if isinstance(x, nn.Conv2d) and x.out_channels == 2) == 2


def test_ce2p_decoder():
    m = CE2PDecoder(num_classes=5, ctx_ch=16, low_ch=8, mid=12, low_reduce=4).eval()
    with torch.no_grad():
        logits, feats = m(torch.randn(1, 16, 4, 4), torch.randn(1, 8, 16, 16))
    assert logits.shape == (1, 5, 16, 16) and feats.shape == (1, 12, 16, 16)
    assert m.conv3[0][0].in_channels == 16 and m.conv4.bias is not None


def test_se():
    m = SE(32, reduction=16)
    assert m.fc1.out_channels == 2
    x = torch.randn(2, 32, 5, 5)
    y = m(x)
    g = m.gate(x)
    assert y.shape == x.shape and g.shape == (2, 32, 1, 1) and torch.all((g > 0) & (g < 1))
    assert torch.allclose(y, x * g)


def test_nonlocal_shapes_affinity_and_identity():
    torch.manual_seed(0)
    m = NonLocal2d(32, 16, norm="gn")
    assert m.norm.num_groups == 32
    x = torch.randn(2, 32, 8, 6)
    attn, g = m.affinity(x)
    assert attn.shape == (2, 48, 12) and g.shape == (2, 16, 12)  # phi/g on the 2x2 max-pooled input
    assert torch.allclose(attn.sum(-1), torch.ones(2, 48), atol=1e-5)
    assert m(x).shape == x.shape
    assert abs(m.theta.weight.std().item() - 0.01) < 0.003 and torch.all(m.theta.bias == 0)
    z = NonLocal2d(32, 16, zero_init=True)
    assert torch.equal(z(x), x)
    full = NonLocal2d(8, 4, subsample=False, norm=None)
    assert full.affinity(torch.randn(1, 8, 4, 4))[0].shape == (1, 16, 16)
    assert NonLocal2d(48, 8, norm="gn").norm.num_groups == 16
    with pytest.raises(ValueError):
        NonLocal2d(8, 4, out_ch=16)


def test_channel_shuffle_pinned_and_inverse():
    x = torch.arange(6.0).view(1, 6, 1, 1)
    y = channel_shuffle(x, 2)
    assert y.flatten().tolist() == [0, 3, 1, 4, 2, 5]
    assert torch.equal(channel_shuffle(y, 3), x)
    z = torch.randn(2, 12, 3, 3)
    assert torch.equal(ChannelShuffle(4)(ChannelShuffle(3)(z)), z)
    with pytest.raises(ValueError):
        channel_shuffle(z, 5)


@pytest.mark.parametrize("k", [3, 7])
def test_global_conv_receptive_field(k):
    torch.manual_seed(0)
    m = GlobalConv(1, 2, k=k, bias=False)
    x = torch.zeros(1, 1, 15, 15)
    x[0, 0, 7, 7] = 1.0
    with torch.no_grad():
        y = m(x)
    assert y.shape == (1, 2, 15, 15)
    support = (y.abs().sum(1)[0] > 0)
    expected = torch.zeros(15, 15, dtype=torch.bool)
    r = k // 2
    expected[7 - r:8 + r, 7 - r:8 + r] = True
    assert torch.equal(support, expected)  # exactly the k x k square around the impulse
    assert count_params(m) == 2 * (1 * 2 * k + 2 * 2 * k)
    with pytest.raises(ValueError):
        GlobalConv(1, 2, k=4)


def test_upsample_like():
    x = torch.randn(1, 3, 4, 4)
    assert upsample_like(x, torch.zeros(1, 1, 8, 6)).shape == (1, 3, 8, 6)
    assert upsample_like(x, (4, 4)) is x
    y = upsample_like(x, (7, 7))
    assert torch.allclose(y[..., 0, 0], x[..., 0, 0]) and torch.allclose(y[..., -1, -1], x[..., -1, -1])
    assert upsample_like(x, (8, 8), mode="nearest").shape == (1, 3, 8, 8)


def test_count_macs_hand_computed():
    conv = nn.Conv2d(3, 8, 3, stride=2, padding=1)
    assert count_macs(conv, (1, 3, 16, 16)) == 8 * 8 * 8 * 3 * 9
    dw = nn.Conv2d(8, 8, 3, padding=2, dilation=2, groups=8)
    assert count_macs(dw, (2, 8, 10, 10)) == 2 * 8 * 10 * 10 * 1 * 9
    lin = nn.Linear(10, 4)
    assert count_macs(lin, (5, 10)) == 5 * 10 * 4
    convt = nn.ConvTranspose2d(4, 6, 4, stride=2, padding=1)
    assert count_macs(convt, (1, 4, 5, 5)) == 4 * 5 * 5 * 6 * 16
    seq = nn.Sequential(conv, nn.BatchNorm2d(8), nn.ReLU())
    assert count_macs(seq, (1, 3, 16, 16), include_norm=True) == 8 * 8 * 8 * 3 * 9 + 8 * 8 * 8
    seq.train()
    per = {}
    assert count_macs(seq, (1, 3, 16, 16), per_module=per) == 8 * 8 * 8 * 27
    assert per == {"0": 8 * 8 * 8 * 27} and seq.training


def test_count_macs_dict_model_and_format():
    from hparse.models.backbones import build_backbone
    m = build_backbone("resnet18", width=0.25)
    assert count_macs(m, (1, 3, 32, 32)) > 0
    assert format_count(4_710_000) == "4.71M"
    assert format_count(2_350_000_000) == "2.35G"
    assert format_count(1500) == "1.50K" and format_count(12) == "12"


def test_position_attention_is_danets_pam():
    """E_j = gamma * sum_i s_ji V_i + x_j with s_ji = softmax_i(Q_j . K_i), Q, K at C/8 channels; gamma from 0."""
    from hparse.models.blocks import PositionAttention

    torch.manual_seed(0)
    pam = PositionAttention(16)
    assert pam.query.out_channels == pam.key.out_channels == 2 and pam.value.out_channels == 16
    x = torch.randn(2, 16, 3, 4)
    torch.testing.assert_close(pam(x), x)                     # gamma = 0: the identity at the start
    with torch.no_grad():
        pam.gamma.fill_(0.5)
        q, k, v = (m(x).flatten(2) for m in (pam.query, pam.key, pam.value))     # B, C', N
        expected = torch.empty_like(x.flatten(2))
        for b in range(2):
            for j in range(12):
                s = torch.softmax(q[b, :, j] @ k[b], 0)                           # over positions i
                expected[b, :, j] = 0.5 * (v[b] * s).sum(1) + x[b].flatten(1)[:, j]
        torch.testing.assert_close(pam(x), expected.view_as(x))
