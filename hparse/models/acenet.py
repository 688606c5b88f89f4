"""ACENet (Zhang, Wang, Xiong: "Affinity-aware Compression and Expansion Network for Human Parsing").

No public code exists; the paper (shared/papers/acenet.md) is the spec, reference-notes A.0/A.1 fill in
the CE2P pieces.  The model, as in the paper's Fig. 2:

- **basic parsing network** (Sec. 3.3): ResNet (Res-5 dilated, output stride 16) -> PPM on Res-5 -> fused
  with Res-2 by CE2P's decoder -> basic parsing features ``P`` (``C`` = ``decoder_ch`` channels, stride 4)
  and, by a 1x1 conv, the coarse parsing (output ``parsing_aux``; loss L_par_base);
- **boundary decoder branch**: Res-3 and Res-4 -> 1x1 channel reduction -> upsampled to Res-2's size ->
  concatenated -> two 1x1 convs -> boundary features ``E`` (``C`` channels, as the paper sets P and E equal)
  -> 1x1 conv -> 2-channel boundary map (output ``edge``; loss L_bd);
- **skeleton branch**: Res-2..Res-5 -> 1x1 to ``skeleton_ch`` -> upsampled to Res-2's size, concatenated,
  channel-shuffled (groups = number of levels), split and pooled back to each level's size (the channel
  shuffle module of Su et al., the paper's [29]: the shuffled part is concatenated with the level's own
  features) -> aggregated level by level from Res-5 down to Res-2's resolution -> skeleton features ``S``
  (stride 4) -> 1x1 conv -> structure-point heatmaps (output ``structure``; loss L_ske).
  [inference] The paper's "bottom-up structure" is read as an aggregation that ends at Res-2's resolution,
  because the heatmap targets live on the stride-4 grid and LCM multiplies S with P position by position;
- **LCM** (Sec. 3.1, Eq. 1-2) on ``(S, P)`` and **GEM** (Sec. 3.2, Eq. 3-4) on ``(P, E)``;
- **fusion**: concatenate the LCM and GEM outputs -> two 1x1 convs -> (Dropout2d, as CE2P's fusion head)
  -> 1x1 conv -> fine parsing (output ``parsing``; loss L_par_fine, CE with OHEM).

Ablation switches (the paper's Tables 1-3): ``local`` in ``none | lcm | channel_attention | concat_skeleton |
se`` with ``lcm_gc`` and ``lcm_n``; ``global_module`` in ``none | gem | spatial_attention | concat_boundary``
with ``gem_d``.  The module rows keep the boundary and skeleton branches (``edge_branch`` / ``skeleton_branch``)
and their losses, so they differ only in how the features are used; the paper's Basic Network (backbone + PPM +
classifier) also turns both branches off and drops their losses (``acenet_*_basic`` configs).  The light variant
is the same code with a light backbone and narrower widths.

All outputs are at stride 4 (Res-2's grid): ``parsing`` / ``parsing_aux`` (B, classes, h, w), ``edge``
(B, 2, h, w), ``structure`` (B, J, h, w) with ``J = num_points`` (default ``num_classes - 1``: one part centre
per foreground class; 16 for LIP joints).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from . import MODELS
from .blocks import (
    SE,
    ChannelAttention,
    ChannelShuffle,
    ConvBNAct,
    GlobalConv,
    PositionAttention,
    adaptive_avg_pool,
    upsample_like,
)
from .ce2p import CE2PTrunk
from .meta_arch import ParsingModel, boundary_heatmap, point_heatmaps

LOCAL_MODULES = ("none", "lcm", "channel_attention", "concat_skeleton", "se")
GLOBAL_MODULES = ("none", "gem", "spatial_attention", "concat_boundary")
AFFINITY_SCALES = ("none", "sqrt")


def _scale_logits(logits: torch.Tensor, length: int, scale: str) -> torch.Tensor:
    return logits * length ** -0.5 if scale == "sqrt" else logits


class LocalCompression(nn.Module):
    """Local Compression Module (Sec. 3.1).

    ``M = GC(S)`` (C_s -> N channels; a 1x1 conv when ``gc=False``, the "LCM w/o GC" row of Table 1), reshaped
    N x HW; ``P^ = conv1x1(P)`` reshaped HW x C.  Eq. 1: ``A = softmax_j(M . P^)``, N x C, each row normalised
    over the C channels (index j).  Eq. 2: ``l_c = (1/N) sum_i a_c^i p_c + p_c`` -- the raw ``P`` scaled per
    channel by the column mean of ``A`` plus the residual, i.e. ``L = P * (1 + mean_i A[i, :])``.
    ``scale="sqrt"`` divides the logits by sqrt(HW) (not in the paper, which uses the plain product).
    """

    def __init__(self, skeleton_ch: int, parsing_ch: int, n: int = 64, gc: bool = True, k: int = 7,
                 scale: str = "none"):
        super().__init__()
        if scale not in AFFINITY_SCALES:
            raise ValueError(f"scale must be one of {AFFINITY_SCALES}, got {scale!r}")
        self.n, self.scale = n, scale
        self.encode_s = GlobalConv(skeleton_ch, n, k=k) if gc else nn.Conv2d(skeleton_ch, n, 1)
        self.encode_p = nn.Conv2d(parsing_ch, parsing_ch, 1)
        self.out_channels = parsing_ch

    def affinity(self, s: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
        """``A`` (B, N, C): rows sum to 1 over the C channels (Eq. 1)."""
        s = upsample_like(s, p)
        m = self.encode_s(s).flatten(2)  # M: B, N, HW
        p_hat = self.encode_p(p).flatten(2).transpose(1, 2)  # P^: B, HW, C
        dt = torch.promote_types(m.dtype, torch.float32)  # a sum over all HW positions: fp16 could overflow
        with torch.autocast(m.device.type, enabled=False):
            logits = _scale_logits(torch.bmm(m.to(dt), p_hat.to(dt)), m.shape[-1], self.scale)  # B, N, C
        return logits.softmax(dim=2)  # over the C axis (j in Eq. 1)

    def forward(self, s: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
        a = self.affinity(s, p)
        weight = a.mean(dim=1)  # (1/N) sum_i a_c^i -> B, C
        return p * weight[:, :, None, None] + p  # Eq. 2


class GlobalExpansion(nn.Module):
    """Global Expansion Module (Sec. 3.2).

    ``P_e = conv1x1(P)``, ``E_e = conv1x1(E)`` (C -> D), reshaped D x HW.  Eq. 3: ``G = P_e^T . E_e`` (HW x HW,
    rows = parsing positions j, columns = boundary positions i), softmax over j -- **dim 1, the parsing
    positions**: each column ``G_i`` is a distribution over positions, ``sum_j G[j, i] = 1``.  ``K = conv1x1(P)``
    (D x HW); ``R = K . G`` (``R[:, i] = sum_j K[:, j] G[j, i]``, a convex combination of K), reshaped D x H x W.
    Eq. 4: ``X = delta([P, R])``, delta = 1x1 conv (C + D -> C) + BN + activation.
    ``scale="sqrt"`` divides the logits by sqrt(D) (not in the paper).
    """

    def __init__(self, parsing_ch: int, boundary_ch: int, d: int = 64, act: str = "leaky", scale: str = "none"):
        super().__init__()
        if scale not in AFFINITY_SCALES:
            raise ValueError(f"scale must be one of {AFFINITY_SCALES}, got {scale!r}")
        self.d, self.scale = d, scale
        self.encode_p = nn.Conv2d(parsing_ch, d, 1)
        self.encode_e = nn.Conv2d(boundary_ch, d, 1)
        self.value = nn.Conv2d(parsing_ch, d, 1)
        self.fuse = ConvBNAct(parsing_ch + d, parsing_ch, 1, act=act)
        self.out_channels = parsing_ch

    def affinity(self, p: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        """``G`` (B, HW_j, HW_i): each column sums to 1 over the parsing positions j (dim 1, Eq. 3)."""
        pe = self.encode_p(p).flatten(2)  # P_e: B, D, HW
        ee = self.encode_e(upsample_like(e, p)).flatten(2)  # E_e: B, D, HW
        # computed as G^T = softmax over the last axis of E_e^T P_e (B, HW_i, HW_j): the same numbers, but a
        # softmax over contiguous memory (about 3x faster on the CPU than over dim 1)
        logits_t = _scale_logits(torch.bmm(ee.transpose(1, 2), pe), self.d, self.scale)  # B, HW_i, HW_j
        return logits_t.softmax(dim=2).transpose(1, 2)  # G: B, HW_j, HW_i, normalised over the parsing positions j

    def expand(self, p: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        """``R = K . G`` reshaped (B, D, H, W)."""
        b, _, h, w = p.shape
        g = self.affinity(p, e)
        k = self.value(p).flatten(2)  # K: B, D, HW
        return torch.bmm(k, g).reshape(b, self.d, h, w)

    def forward(self, p: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        return self.fuse(torch.cat([p, self.expand(p, e)], dim=1))  # Eq. 4: X = delta([P, R])


class BoundaryDecoder(nn.Module):
    """Boundary decoder branch: each input level -> 1x1 conv + BN + act to ``reduce_ch`` -> upsampled to
    ``size_ref``'s size (Res-2) -> concatenated -> 1x1 ``out_ch`` -> 1x1 ``out_ch`` (the boundary features E)
    -> 1x1 conv (bias) -> 2-channel boundary logits.  ``forward(levels, size_ref) -> (logits, E)``."""

    def __init__(self, in_chs: Sequence[int], reduce_ch: int, out_ch: int, act: str = "leaky"):
        super().__init__()
        self.reduce = nn.ModuleList(ConvBNAct(c, reduce_ch, 1, act=act) for c in in_chs)
        self.decode = nn.Sequential(ConvBNAct(len(in_chs) * reduce_ch, out_ch, 1, act=act),
                                    ConvBNAct(out_ch, out_ch, 1, act=act))
        self.classifier = nn.Conv2d(out_ch, 2, 1)
        self.out_channels = out_ch

    def forward(self, levels: Sequence[torch.Tensor], size_ref: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.cat([upsample_like(m(f), size_ref) for m, f in zip(self.reduce, levels)], dim=1)
        e = self.decode(x)
        return self.classifier(e), e


class SkeletonBranch(nn.Module):
    """Skeleton (structure-point) branch; see the module docstring.

    Levels ``[Res-2, ..., Res-5]`` -> 1x1 to ``ch`` -> upsampled to Res-2's size and concatenated (L*ch) ->
    channel shuffle with L groups (each of the L chunks then holds ch/L channels of every level) -> chunk l
    adaptive-average-pooled back to level l's size -> ``lateral_l = 1x1([own_l, shuffled_l])`` -> from the
    deepest level: ``x = smooth_l(lateral_l + up(x))`` (3x3 conv) down to Res-2 -> ``S`` (ch, stride 4) ->
    1x1 conv (bias) -> ``num_points`` heatmaps.  ``forward(levels) -> (heatmaps, S)``.
    """

    def __init__(self, in_chs: Sequence[int], ch: int, num_points: int, act: str = "leaky"):
        super().__init__()
        n = len(in_chs)
        self.reduce = nn.ModuleList(ConvBNAct(c, ch, 1, act=act) for c in in_chs)
        self.shuffle = ChannelShuffle(n)
        self.lateral = nn.ModuleList(ConvBNAct(2 * ch, ch, 1, act=act) for _ in in_chs)
        self.smooth = nn.ModuleList(ConvBNAct(ch, ch, 3, act=act) for _ in range(n - 1))
        self.head = nn.Conv2d(ch, num_points, 1)
        self.out_channels = ch

    def forward(self, levels: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        own = [m(f) for m, f in zip(self.reduce, levels)]
        ref = own[0]
        shuffled = self.shuffle(torch.cat([upsample_like(x, ref) for x in own], dim=1)).chunk(len(own), dim=1)
        lat = [m(torch.cat([x, adaptive_avg_pool(y, x.shape[-2:])], dim=1))
               for m, x, y in zip(self.lateral, own, shuffled)]
        x = lat[-1]
        for i in range(len(lat) - 2, -1, -1):
            x = self.smooth[i](lat[i] + upsample_like(x, lat[i]))
        return self.head(x), x


@MODELS.register("acenet")
class ACENet(ParsingModel):
    """ACENet; see the module docstring.

    Args:
        meta: the label set (its classes are the parsing classes); loss: the config's loss list.
        backbone: backbone config (default: deep-stem ResNet-101, OS16).
        ppm_ch, ppm_stage_ch: PPM output / per-bin widths.
        decoder_ch: ``C``, the width of the basic parsing features P (and of E, LCM/GEM outputs).
        low_reduce: Res-2 reduction in the CE2P decoder.
        edge_ch: per-level channel reduction in the boundary decoder; ``edge_levels``: its input levels.
        skeleton_ch: width of the skeleton branch (and of S).
        num_points: structure points J (default ``num_classes - 1``: part centres).
        local: ``none | lcm | channel_attention | concat_skeleton | se`` (Table 1).
        lcm_gc, lcm_n, lcm_k: LCM with the GC block (else a 1x1 conv), N, GC kernel size.
        global_module: ``none | gem | spatial_attention | concat_boundary`` (Table 2).
        gem_d: D of GEM.
        affinity_scale: ``none`` (paper) or ``sqrt`` for LCM/GEM logits.
        fusion_ch: width of the two 1x1 fusion convs; ``dropout`` before the classifier.
        edge_branch, skeleton_branch: keep the supervised side branches (needed by the modules that read
            E or S); off only for a plain PPM baseline without the ``edge`` / ``structure`` losses.
    """

    extra_outputs = ("edge", "structure")
    renamed_weights = {"backbone.": "trunk.backbone.", "context.": "trunk.context.", "decoder.": "trunk.decoder."}

    def __init__(self, meta, loss: list[dict] | None = None, backbone: dict | None = None, ppm_ch: int = 512,
                 ppm_stage_ch: int = 512,
                 decoder_ch: int = 256, low_reduce: int = 48, edge_ch: int = 256,
                 edge_levels: Sequence[str] = ("c3", "c4"), skeleton_ch: int = 256, num_points: int | None = None,
                 local: str = "lcm", lcm_gc: bool = True, lcm_n: int = 64, lcm_k: int = 7,
                 global_module: str = "gem", gem_d: int = 64, affinity_scale: str = "none",
                 fusion_ch: int = 256, dropout: float = 0.1, act: str = "leaky",
                 edge_branch: bool = True, skeleton_branch: bool = True):
        super().__init__(meta, loss)
        if local not in LOCAL_MODULES:
            raise ValueError(f"local must be one of {LOCAL_MODULES}, got {local!r}")
        if global_module not in GLOBAL_MODULES:
            raise ValueError(f"global_module must be one of {GLOBAL_MODULES}, got {global_module!r}")
        if local in ("lcm", "concat_skeleton") and not skeleton_branch:
            raise ValueError(f"local={local!r} reads the skeleton features: skeleton_branch must be on")
        if global_module in ("gem", "concat_boundary") and not edge_branch:
            raise ValueError(f"global_module={global_module!r} reads the boundary features: edge_branch must be on")
        num_classes = self.num_classes
        self.num_points = num_classes - 1 if num_points is None else int(num_points)
        self.local, self.global_module = local, global_module
        c = decoder_ch

        # basic parsing network: CE2P's trunk without its edge module (the boundary decoder below replaces it)
        self.trunk = CE2PTrunk(num_classes, backbone, ppm_ch, ppm_stage_ch, decoder_ch=c, low_reduce=low_reduce,
                               act=act, edge=False)
        ch = self.trunk.backbone.out_channels

        self.edge_levels = tuple(edge_levels)
        self.boundary = (BoundaryDecoder([ch[k] for k in self.edge_levels], edge_ch, c, act=act)
                         if edge_branch else None)
        self.skeleton = (SkeletonBranch([ch[k] for k in ("c2", "c3", "c4", "c5")], skeleton_ch, self.num_points,
                                        act=act) if skeleton_branch else None)

        if local == "lcm":
            self.local_module: nn.Module | None = LocalCompression(skeleton_ch, c, lcm_n, lcm_gc, lcm_k,
                                                                   affinity_scale)
        elif local == "channel_attention":
            self.local_module = ChannelAttention()
        elif local == "concat_skeleton":
            self.local_module = ConvBNAct(c + skeleton_ch, c, 1, act=act)
        elif local == "se":
            self.local_module = SE(c)
        else:
            self.local_module = None
        if global_module == "gem":
            self.global_block: nn.Module | None = GlobalExpansion(c, c, gem_d, act, affinity_scale)
        elif global_module == "spatial_attention":
            # DANet's position attention module on P (the paper's Table 2 competitor): query/key C -> C/8, value
            # C -> C, gamma learnt from 0
            self.global_block = PositionAttention(c)
        elif global_module == "concat_boundary":
            self.global_block = ConvBNAct(2 * c, c, 1, act=act)
        else:
            self.global_block = None

        n_in = (local != "none") + (global_module != "none") or 1
        self.fusion = nn.Sequential(ConvBNAct(n_in * c, fusion_ch, 1, act=act),
                                    ConvBNAct(fusion_ch, fusion_ch, 1, act=act),
                                    nn.Dropout2d(dropout), nn.Conv2d(fusion_ch, num_classes, 1))

    def _local(self, p: torch.Tensor, s: torch.Tensor | None) -> torch.Tensor:
        if self.local == "lcm":
            return self.local_module(s, p)
        if self.local == "concat_skeleton":
            return self.local_module(torch.cat([p, upsample_like(s, p)], dim=1))
        return self.local_module(p)  # channel_attention, se

    def _global(self, p: torch.Tensor, e: torch.Tensor | None) -> torch.Tensor:
        if self.global_module == "gem":
            return self.global_block(p, e)
        if self.global_module == "concat_boundary":
            return self.global_block(torch.cat([p, upsample_like(e, p)], dim=1))
        return self.global_block(p)  # spatial_attention

    def network(self, x: torch.Tensor) -> dict:
        t = self.trunk(x)
        f, p = t["features"], t["decoder_features"]  # basic parsing features P
        out = {"parsing_aux": t["parsing_aux"]}
        e = s = None
        if self.boundary is not None:
            out["edge"], e = self.boundary([f[k] for k in self.edge_levels], f["c2"])
        if self.skeleton is not None:
            out["structure"], s = self.skeleton([f["c2"], f["c3"], f["c4"], f["c5"]])
        feats = []
        if self.local_module is not None:
            feats.append(self._local(p, s))
        if self.global_block is not None:
            feats.append(self._global(p, e))
        out["parsing"] = self.fusion(torch.cat(feats, dim=1) if feats else p)
        return out

    def postprocess(self, extras: dict) -> dict:
        out = {}
        if "edge" in extras:
            out["boundary"] = boundary_heatmap(extras["edge"])
        if "structure" in extras:
            out["structure"] = point_heatmaps(extras["structure"])
        return out
