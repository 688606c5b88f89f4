"""Shared building blocks (one place for every paper's heads).

- ``ConvBNAct``: conv + norm + activation; ``act="leaky"`` is LeakyReLU(0.01), so
  ``ConvBNAct(..., act="leaky")`` is CE2P's ``InPlaceABNSync`` (BN followed by LeakyReLU(0.01)).
- ``PPM``: CE2P's PSP module (reference notes A.0).
- ``ASPP``: DeepLabv3 / CNIF ASPP with image pooling (A.4).
- ``CE2PEdge``, ``CE2PDecoder``: CE2P's edge and decoder modules (A.0).
- ``SE``: squeeze-and-excitation (CNIF node heads, ACENet ablation).
- ``NonLocal2d``: Parsing R-CNN / AIParsing non-local block with GN (A.3).
- ``channel_shuffle`` / ``ChannelShuffle`` and ``GlobalConv``: ACENet blocks (A.1).
- ``ChannelAttention``: DANet's channel attention module (CAM; ACENet's Table 1 competitor).
- ``upsample_like``: bilinear resize to a reference size (align_corners=True by default, as CE2P).
- ``adaptive_avg_pool`` / ``AdaptiveAvgPool``: adaptive average pooling that stays correct at every input
  size when the network is traced for export (``exporting()``); in eager mode it is PyTorch's own op.

Attribute names stay close to CE2P's to ease porting checkpoints: each ``ConvBNAct`` is a ``Sequential``
``(conv, bn[, act])`` indexed 0/1 like CE2P's ``nn.Sequential(conv, InPlaceABNSync)``; ``PPM`` has
``stages[i].1`` / ``bottleneck``; ``CE2PEdge`` has ``conv1..3`` with CE2P's ``conv4``/``conv5`` named
``shared``/``fuse``; ``CE2PDecoder`` has ``conv1``, ``conv2``, ``conv3.{0,1}`` (CE2P: ``conv3.{0,1}``,
``conv3.{2,3}``) and ``conv4``.  (CE2P's PSP stages are ``stages[i].{1: conv, 2: ABN}``.)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

NormSpec = bool | Callable[[int], nn.Module]


def group_norm(channels: int, groups: int = 32) -> nn.GroupNorm:
    """GroupNorm with ``groups`` groups, or their gcd with ``channels`` for a width they do not divide."""
    return nn.GroupNorm(math.gcd(groups, channels), channels)


def kaiming_init(modules) -> None:
    """Kaiming-normal (fan out, ReLU) weights and zero biases for the (transposed) convs among ``modules``."""
    for m in modules:
        if isinstance(m, nn.Conv2d | nn.ConvTranspose2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def make_act(act: str | None) -> nn.Module | None:
    """``"relu"``, ``"leaky"`` (LeakyReLU(0.01), the InPlaceABN default), ``"relu6"``, ``"gelu"``,
    ``"sigmoid"`` or ``"none"``/``None``."""
    if act is None or act == "none":
        return None
    if act == "relu":
        return nn.ReLU(inplace=True)
    if act == "leaky":
        return nn.LeakyReLU(0.01, inplace=True)
    if act == "relu6":
        return nn.ReLU6(inplace=True)
    if act == "gelu":
        return nn.GELU()
    if act == "sigmoid":
        return nn.Sigmoid()
    raise ValueError(f"unknown activation {act!r}")


class ConvBNAct(nn.Sequential):
    """Conv2d (padding ``dilation*(k-1)//2``) + norm + activation.

    ``norm``: ``True`` for BatchNorm2d, ``False`` for none, or a ``callable(channels) -> nn.Module``.
    ``act``: see ``make_act``; ``"leaky"`` = LeakyReLU(0.01) = InPlaceABN's default.
    """

    def __init__(self, in_ch: int, out_ch: int, k: int = 1, stride: int = 1, dilation: int = 1,
                 groups: int = 1, act: str | None = "relu", bias: bool = False, norm: NormSpec = True):
        pad = dilation * (k - 1) // 2
        mods: list[nn.Module] = [nn.Conv2d(in_ch, out_ch, k, stride, pad, dilation=dilation, groups=groups,
                                           bias=bias)]
        if norm:
            mods.append(nn.BatchNorm2d(out_ch) if norm is True else norm(out_ch))
        a = make_act(act)
        if a is not None:
            mods.append(a)
        super().__init__(*mods)
        self.in_channels, self.out_channels = in_ch, out_ch


def exporting() -> bool:
    """True while the network is traced for export (TorchScript or ONNX): shapes are then symbolic, so code
    must not branch on them or turn them into Python numbers (the trace would bake the traced size in)."""
    return torch.jit.is_tracing() or torch.onnx.is_in_onnx_export()


def upsample_like(x: torch.Tensor, ref: torch.Tensor | Sequence[int], mode: str = "bilinear",
                  align_corners: bool | None = True) -> torch.Tensor:
    """Resize ``x`` to the spatial size of ``ref`` (a tensor or an ``(H, W)`` size); no-op if equal (when
    exporting it always resizes: a resize to the same size is the identity, and the size is symbolic)."""
    size = tuple(ref.shape[-2:]) if isinstance(ref, torch.Tensor) else tuple(int(s) for s in ref)
    if not exporting() and tuple(x.shape[-2:]) == size:
        return x
    if mode in ("nearest", "area", "nearest-exact"):
        align_corners = None
    return F.interpolate(x, size=size, mode=mode, align_corners=align_corners)


def _pooling_matrix(n_in, n_out, like: torch.Tensor) -> torch.Tensor:
    """(n_out, n_in) weights of adaptive average pooling along one axis: row i averages the inputs
    ``floor(i * n_in / n_out) .. ceil((i + 1) * n_in / n_out) - 1`` (PyTorch's bins); sizes may be symbolic."""
    i = torch.arange(n_out, device=like.device)
    start = torch.div(i * n_in, n_out, rounding_mode="floor")
    end = torch.div((i + 1) * n_in + n_out - 1, n_out, rounding_mode="floor")
    pos = torch.arange(n_in, device=like.device)
    inside = ((pos[None] >= start[:, None]) & (pos[None] < end[:, None])).to(like.dtype)
    return inside / inside.sum(1, keepdim=True)


def adaptive_avg_pool(x: torch.Tensor, size) -> torch.Tensor:
    """``F.adaptive_avg_pool2d(x, size)``; when exporting, the same bins as two matrix products whose weights
    are computed from the (symbolic) input size, because exporters bake a fixed kernel into the graph."""
    out_h, out_w = (size, size) if isinstance(size, int) else tuple(size)
    if not exporting() or (isinstance(out_h, int) and isinstance(out_w, int) and out_h == out_w == 1):
        return F.adaptive_avg_pool2d(x, size)
    rows = _pooling_matrix(x.shape[-2], out_h, x)
    cols = _pooling_matrix(x.shape[-1], out_w, x)
    return rows @ x @ cols.transpose(0, 1)


class AdaptiveAvgPool(nn.AdaptiveAvgPool2d):
    """``nn.AdaptiveAvgPool2d`` that exports correctly at every input size (see :func:`adaptive_avg_pool`)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return adaptive_avg_pool(x, self.output_size)


class PPM(nn.Module):
    """CE2P PSP module: for each bin, adaptive avg-pool -> 1x1 conv + ABN -> bilinear up (align_corners=True);
    concat ``[stages..., input]`` (CE2P's order) -> 3x3 conv to ``out_ch`` + ABN.  No dropout.

    Note: BatchNorm on the 1x1-pooled stage needs batch > 1 in training (CE2P used synchronised BN).
    """

    def __init__(self, in_ch: int, out_ch: int = 512, bins: Sequence[int] = (1, 2, 3, 6), stage_ch: int = 512,
                 act: str | None = "leaky", norm: NormSpec = True):
        super().__init__()
        self.bins = tuple(bins)
        self.stages = nn.ModuleList(
            nn.Sequential(AdaptiveAvgPool(b), ConvBNAct(in_ch, stage_ch, 1, act=act, norm=norm))
            for b in self.bins
        )
        self.bottleneck = ConvBNAct(in_ch + len(self.bins) * stage_ch, out_ch, 3, act=act, norm=norm)
        self.out_channels = out_ch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        priors = [upsample_like(stage(x), x, align_corners=True) for stage in self.stages] + [x]
        return self.bottleneck(torch.cat(priors, dim=1))


class ASPP(nn.Module):
    """Atrous spatial pyramid pooling (DeepLabv3 / CNIF).

    Branches: 1x1; a 3x3 conv per entry of ``dilations``; image pooling (global avg-pool -> 1x1, broadcast
    back) when ``image_pool``.  Each branch is conv + norm + ``act``.  Concatenate -> 1x1 to ``out_ch`` +
    norm + ``project_act`` -> optional 3x3 ``out_ch -> out_ch`` + norm + ``project_act`` (CNIF's head:
    ``project_3x3=True``, ``project_act="leaky"``) -> optional Dropout2d.

    DeepLabv3: ``ASPP(2048, 256, (12, 24, 36), dropout=0.5)`` (OS8 rates; (6, 12, 18) at OS16).
    """

    def __init__(self, in_ch: int, out_ch: int, dilations: Sequence[int] = (12, 24, 36),
                 image_pool: bool = True, branch_ch: int | None = None, act: str | None = "relu",
                 project_act: str | None = "relu", project_3x3: bool = False, dropout: float = 0.0,
                 norm: NormSpec = True):
        super().__init__()
        bc = branch_ch or out_ch
        self.branches = nn.ModuleList([ConvBNAct(in_ch, bc, 1, act=act, norm=norm)])
        for d in dilations:
            self.branches.append(ConvBNAct(in_ch, bc, 3, dilation=d, act=act, norm=norm))
        self.image_pool = (nn.Sequential(nn.AdaptiveAvgPool2d(1), ConvBNAct(in_ch, bc, 1, act=act, norm=norm))
                           if image_pool else None)
        n = len(self.branches) + (1 if image_pool else 0)
        proj: list[nn.Module] = [ConvBNAct(n * bc, out_ch, 1, act=project_act, norm=norm)]
        if project_3x3:
            proj.append(ConvBNAct(out_ch, out_ch, 3, act=project_act, norm=norm))
        if dropout > 0:
            proj.append(nn.Dropout2d(dropout))
        self.project = nn.Sequential(*proj)
        self.out_channels = out_ch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outs = [b(x) for b in self.branches]
        if self.image_pool is not None:
            outs.append(self.image_pool(x).expand(-1, -1, x.shape[-2], x.shape[-1]))
        return self.project(torch.cat(outs, dim=1))


class CE2PEdge(nn.Module):
    """CE2P edge module.

    ``forward(x1, x2, x3)`` (e.g. layer1/2/3): each input -> its own 1x1 conv + ABN (``mid`` channels, the
    edge features); ONE shared 3x3 conv ``mid -> out`` (bias) applied to each; maps and features upsampled
    to ``x1``'s size (align_corners=True); the concatenated maps -> 1x1 conv (bias) -> ``out`` = edge logits.
    Returns ``(edge_logits, edge_features)`` with ``len(in_chs) * mid`` feature channels.
    """

    def __init__(self, in_chs: Sequence[int] = (256, 512, 1024), mid: int = 256, out: int = 2,
                 act: str | None = "leaky", norm: NormSpec = True):
        super().__init__()
        self.in_chs = tuple(in_chs)
        for i, c in enumerate(self.in_chs):
            self.add_module(f"conv{i + 1}", ConvBNAct(c, mid, 1, act=act, norm=norm))
        n = len(self.in_chs)
        self.shared = nn.Conv2d(mid, out, 3, padding=1, bias=True)  # CE2P "conv4"
        self.fuse = nn.Conv2d(n * out, out, 1, bias=True)  # CE2P "conv5"
        self.out_channels = n * mid
        self.num_outputs = out

    def forward(self, *xs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if len(xs) == 1 and isinstance(xs[0], list | tuple):
            xs = tuple(xs[0])
        if len(xs) != len(self.in_chs):
            raise ValueError(f"CE2PEdge expects {len(self.in_chs)} inputs, got {len(xs)}")
        ref = xs[0]
        maps, feats = [], []
        for i, x in enumerate(xs):
            f = getattr(self, f"conv{i + 1}")(x)
            maps.append(upsample_like(self.shared(f), ref, align_corners=True))
            feats.append(upsample_like(f, ref, align_corners=True))
        return self.fuse(torch.cat(maps, dim=1)), torch.cat(feats, dim=1)


class CE2PDecoder(nn.Module):
    """CE2P decoder: context (``ctx_ch``) -> 1x1 ``mid`` + ABN, upsampled to the low-level size; low-level
    (``low_ch``) -> 1x1 ``low_reduce`` + ABN; concat -> 1x1 ``mid`` + ABN -> 1x1 ``mid`` + ABN (the decoder
    features) -> 1x1 ``num_classes`` (bias).  ``forward(ctx, low) -> (logits, features)``."""

    def __init__(self, num_classes: int, ctx_ch: int = 512, low_ch: int = 256, mid: int = 256,
                 low_reduce: int = 48, act: str | None = "leaky", norm: NormSpec = True):
        super().__init__()
        self.conv1 = ConvBNAct(ctx_ch, mid, 1, act=act, norm=norm)
        self.conv2 = ConvBNAct(low_ch, low_reduce, 1, act=act, norm=norm)
        self.conv3 = nn.Sequential(ConvBNAct(mid + low_reduce, mid, 1, act=act, norm=norm),
                                   ConvBNAct(mid, mid, 1, act=act, norm=norm))
        self.conv4 = nn.Conv2d(mid, num_classes, 1, bias=True)
        self.out_channels = mid
        self.num_classes = num_classes

    def forward(self, ctx: torch.Tensor, low: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = upsample_like(self.conv1(ctx), low, align_corners=True)
        x = self.conv3(torch.cat([x, self.conv2(low)], dim=1))
        return self.conv4(x), x


class SE(nn.Module):
    """Squeeze-and-excitation: GAP -> 1x1 ``ch -> ch//reduction`` (bias) -> ReLU -> 1x1 back -> sigmoid
    -> channel-wise scale."""

    def __init__(self, ch: int, reduction: int = 16):
        super().__init__()
        hidden = max(1, ch // reduction)
        self.fc1 = nn.Conv2d(ch, hidden, 1)
        self.fc2 = nn.Conv2d(hidden, ch, 1)

    def gate(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.fc2(F.relu(self.fc1(F.adaptive_avg_pool2d(x, 1)))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate(x)


class NonLocal2d(nn.Module):
    """Embedded-Gaussian non-local block (Parsing R-CNN / AIParsing, reference notes A.3).

    theta, phi, g: 1x1 convs ``in_ch -> inter_ch`` (bias); phi and g read a 2x2 max-pooled input when
    ``subsample``.  Affinity ``softmax(theta^T phi / sqrt(inter_ch))`` over the (pooled) positions;
    ``y = g . affinity^T`` -> 1x1 conv to ``out_ch`` -> norm (``"gn"`` GroupNorm(32 or gcd), ``"bn"``, None)
    -> ``+ x``.  Convs init N(0, 0.01), bias 0.  ``zero_init=True`` zeroes the norm weight (or the output
    conv without a norm) so the block starts as the identity.
    """

    def __init__(self, in_ch: int, inter_ch: int, out_ch: int | None = None, subsample: bool = True,
                 norm: str | None = "gn", scale: bool = True, gn_groups: int = 32, zero_init: bool = False):
        super().__init__()
        out_ch = out_ch or in_ch
        if out_ch != in_ch:
            raise ValueError(f"NonLocal2d adds a residual, so out_ch ({out_ch}) must equal in_ch ({in_ch})")
        self.inter_ch, self.scale = inter_ch, scale
        self.theta = nn.Conv2d(in_ch, inter_ch, 1)
        self.phi = nn.Conv2d(in_ch, inter_ch, 1)
        self.g = nn.Conv2d(in_ch, inter_ch, 1)
        self.pool = nn.MaxPool2d(2, 2) if subsample else nn.Identity()
        self.out = nn.Conv2d(inter_ch, out_ch, 1)
        if norm == "gn":
            self.norm: nn.Module = group_norm(out_ch, gn_groups)
        elif norm == "bn":
            self.norm = nn.BatchNorm2d(out_ch)
        elif norm is None or norm == "none":
            self.norm = nn.Identity()
        else:
            raise ValueError(f"unknown norm {norm!r}")
        for m in (self.theta, self.phi, self.g, self.out):
            nn.init.normal_(m.weight, 0, 0.01)
            nn.init.zeros_(m.bias)
        if zero_init:
            target = self.norm if isinstance(self.norm, nn.GroupNorm | nn.BatchNorm2d) else self.out
            nn.init.zeros_(target.weight)

    def affinity(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``(affinity (B, HW, hw) with rows summing to 1, g (B, inter, hw))``."""
        b = x.shape[0]
        theta = self.theta(x).flatten(2).transpose(1, 2)  # B, HW, C
        px = self.pool(x)
        phi = self.phi(px).flatten(2)  # B, C, hw
        g = self.g(px).flatten(2)  # B, C, hw
        logits = torch.bmm(theta, phi)
        if self.scale:
            logits = logits * self.inter_ch ** -0.5
        return logits.softmax(dim=-1), g.reshape(b, self.inter_ch, -1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        attn, g = self.affinity(x)
        y = torch.bmm(g, attn.transpose(1, 2)).reshape(b, self.inter_ch, h, w)
        return self.norm(self.out(y)) + x


class PositionAttention(nn.Module):
    """DANet's position attention module (Fu et al. CVPR'19, Sec. 3.2): query and key 1x1 convs ``C -> C /
    reduction``, value 1x1 ``C -> C``; ``S = softmax(Q^T K)`` over the positions (no scaling); ``E = gamma (V S^T)
    + x`` with the scalar ``gamma`` learnt from 0 (the block starts as the identity)."""

    def __init__(self, ch: int, reduction: int = 8):
        super().__init__()
        self.query = nn.Conv2d(ch, max(1, ch // reduction), 1)
        self.key = nn.Conv2d(ch, max(1, ch // reduction), 1)
        self.value = nn.Conv2d(ch, ch, 1)
        self.gamma = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        q = self.query(x).flatten(2).transpose(1, 2)                 # B, N, C'
        attention = torch.bmm(q, self.key(x).flatten(2)).softmax(-1)  # B, N, N: row i over the positions j
        out = torch.bmm(self.value(x).flatten(2), attention.transpose(1, 2)).view(b, c, h, w)
        return self.gamma * out + x


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    """ShuffleNet channel shuffle: (B, g, C/g, H, W) -> transpose(1, 2) -> (B, C, H, W).
    For C=6, groups=2 the new channel order is [0, 3, 1, 4, 2, 5]; ``groups=C/g`` undoes it."""
    b, c = x.shape[:2]
    if c % groups:
        raise ValueError(f"channels ({c}) not divisible by groups ({groups})")
    rest = x.shape[2:]
    return x.reshape(b, groups, c // groups, *rest).transpose(1, 2).reshape(b, c, *rest)


class ChannelShuffle(nn.Module):
    def __init__(self, groups: int):
        super().__init__()
        self.groups = groups

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return channel_shuffle(x, self.groups)

    def extra_repr(self) -> str:
        return f"groups={self.groups}"


class GlobalConv(nn.Module):
    """Global Convolutional Network block (Peng et al. 2017; ACENet's LCM): branch A = 1xk then kx1,
    branch B = kx1 then 1xk, summed.  No norm/activation in between.  Each output pixel sees a k x k window.
    ``mid_ch`` (default ``out_ch``) is the width between the two separable convs; ``k`` must be odd."""

    def __init__(self, in_ch: int, out_ch: int, k: int = 7, mid_ch: int | None = None, bias: bool = True):
        super().__init__()
        if k % 2 == 0:
            raise ValueError(f"k must be odd, got {k}")
        mid = mid_ch or out_ch
        p = k // 2
        self.a1 = nn.Conv2d(in_ch, mid, (1, k), padding=(0, p), bias=bias)
        self.a2 = nn.Conv2d(mid, out_ch, (k, 1), padding=(p, 0), bias=bias)
        self.b1 = nn.Conv2d(in_ch, mid, (k, 1), padding=(p, 0), bias=bias)
        self.b2 = nn.Conv2d(mid, out_ch, (1, k), padding=(0, p), bias=bias)
        self.out_channels = out_ch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.a2(self.a1(x)) + self.b2(self.b1(x))


class ChannelAttention(nn.Module):
    """DANet channel attention module (CAM, Fu et al. 2019), as in the authors' code: ``energy = X X^T``
    (C x C, X the input reshaped C x HW), ``attn = softmax(max_row(energy) - energy)`` over the last axis
    (rows sum to 1; the max shift only changes numerics, so this is ``softmax(-energy)``), ``out = attn X``,
    ``y = gamma * out + x`` with a learnable scalar ``gamma`` initialised to 0 (the block starts as the
    identity).  No parameters besides ``gamma``."""

    def __init__(self, gamma_init: float = 0.0):
        super().__init__()
        self.gamma = nn.Parameter(torch.tensor(float(gamma_init)))

    def attention(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, C) attention, rows summing to 1."""
        q = x.flatten(2)
        energy = torch.bmm(q, q.transpose(1, 2))
        return (energy.amax(dim=-1, keepdim=True) - energy).softmax(dim=-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.bmm(self.attention(x), x.flatten(2)).reshape(x.shape)
        return self.gamma * out + x
