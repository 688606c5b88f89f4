"""CNIF (Wang et al., ICCV'19, "Learning Compositional Neural Information Fusion for Human Parsing").

Paper Sections 3.2-3.4 (Eq. 7-18); reference-notes A.4 (the authors' direct-inference network).

**Hierarchy** (from the label set's :class:`~hparse.labels.DatasetMeta`, never re-typed here):

- level 1: the ``C`` classes of the label set (0 = background) -- the leaves;
- level 2: ``meta.level_classes(2)`` = background / upper-body / lower-body;
- level 3: ``meta.level_classes(3)`` = background / full-body -- the root level.

Background is a node of every level (bg1 -> bg2 -> bg3); part ``c`` hangs under level-2 node
``meta.hierarchy_lut(2)[c]``, and level-2 node ``k`` under ``meta.hierarchy_lut(3)`` of its parts.
Level-``l`` label maps are ``meta.hierarchy_lut(l)[label]`` (``HierarchyTarget`` adds them to a sample as
``label_l2`` / ``label_l3``; :func:`level_label_maps` gives names and LUTs per level).

**Network** (K x K input; everything after the backbone at K/8):

- ``h_I = up2(ASPP(c5)) + alpha * c3`` -- ResNet at OS16, ASPP compressed by a 1x1 conv + ReLU to ``feat_ch``,
  x2 upsampled and added to the Res-2 block (layer2, stride 8) features (a 1x1 projection when widths differ;
  ``alpha`` is the learnable scalar of the official code, initialised to 1) (Eq. 8).
- ``h^l = LSF_l(h_I)``: a 3x3 conv + BN + ReLU per level (Eq. 9); ``h_v = SE_v(h^l)``: one SE block per node
  (Eq. 10).
- direct ``F⊕(h_v)``: three 1x1 convs -> one logit map per node (Eq. 11).
- top-down ``F↓([ỹ_u, h_v])`` with ``u`` the parent (levels 1 and 2; the root level has none) and bottom-up
  ``F↑([max_w ỹ_w, h_v])``, position-wise max over the children (levels 2 and 3; the leaves have none): three
  convs 3x3, 3x3, 1x1 (Eq. 12-14).  ``ỹ`` is the direct estimate: the softmax over the level's nodes of the
  direct logits (``message="prob"``, default) or the logits themselves (``message="logit"``).
- gates (Eq. 15-16): ``δ⊕_v = σ(FC_v(CAP(h_v)))``, ``δ↓ = σ(FC↓_u(CAP(h_u)))`` of the parent ``u`` (shared by
  its children), ``δ↑_v = σ(FC↑_v(CAP([h_w]_children)))``; CAP = channel-wise global average pooling.
- fusion ``F∪(δ⊕ F⊕, δ↓ F↓, δ↑ F↑)``: three 1x1 convs with ReLU (Eq. 17); softmax over each level's nodes.

The paper writes the inference networks with one set of weights (``W⊕``, ``W↓``, ``W↑``, ``W∪``) and the
SE blocks and gate FCs per node, so by default (``head_sharing="level"``) each head is shared by the nodes of a
level (node features are folded into the batch); ``head_sharing="node"`` gives every node its own weights
(grouped convs, same multiply-adds).

**Modes** (paper Table 6 and Fig. 4e):

=================  =====================================================================================
``backbone``       level 1 only (LSF + node SE + direct head): "direct inference w/o hierarchy"
``direct``         direct inference on all three levels
``direct_bu``      + bottom-up; each node's sources fused by F∪ without gates (Table 6: the full model but
                   for "+ conditional fusion")
``direct_td``      + top-down; F∪ without gates
``direct_bu_td``   + both; F∪ without gates
``fixed``          + both, F∪ with input-independent learnt gates σ(w_v,s) (Fig. 4e)
``full``           + both, conditional fusion: F∪ with the input-conditioned gates (the paper's model)
=================  =====================================================================================

**Outputs** (logits at K/8; ``N_l`` nodes on level ``l``: ``C``, 3, 2):

- ``parsing`` (B, C, h, w): level-1 (part) logits, the final part parsing; ``level2`` (B, 3, h, w) and
  ``level3`` (B, 2, h, w).  In ``backbone`` mode ``level2``/``level3`` are the log-marginals of the part
  softmax (sums over each node's parts; no parameters, not trained).
- ``direct_l1``, ``direct_l2``, ``direct_l3``; ``td_l1``, ``td_l2``; ``bu_l2``, ``bu_l3`` (those the mode has).
- ``sources_l{1,2,3}`` (B, S_l, N_l, h, w): every prediction of the level that Eq. 18 supervises, stacked --
  the fused output first, then direct / top-down / bottom-up (``model.loss_sources[l]`` names them; just
  ``direct`` where a level has one source, e.g. every level in ``direct`` mode, level 1 in ``direct_bu``).
  Loss: one ``hier_ce`` term per level.
- ``gates`` (B, N_1 + N_2 + N_3, 3), modes ``fixed`` and ``full``: per node (level-1 nodes, then level 2,
  then level 3; ``model.node_names``) the gate of its direct / top-down / bottom-up source; 0 where the node
  has no such source (``model.gate_mask``).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..labels import DatasetMeta
from ..structures import ScoreTable
from . import MODELS
from .backbones import build_backbone
from .blocks import ASPP, SE, ConvBNAct, upsample_like
from .meta_arch import ParsingModel, label_map

LEVELS = (1, 2, 3)
SOURCES = ("direct", "td", "bu")
SOURCE_NAMES = ("direct", "top-down", "bottom-up")
# mode -> (extra inference processes, how a node's sources are combined)
MODES: dict[str, tuple[tuple[str, ...], str | None]] = {
    "backbone": ((), None),
    "direct": ((), None),
    "direct_bu": (("bu",), "ungated"),
    "direct_td": (("td",), "ungated"),
    "direct_bu_td": (("td", "bu"), "ungated"),
    "fixed": (("td", "bu"), "fixed"),
    "full": (("td", "bu"), "conditional"),
}


class Hierarchy:
    """The three-level node graph of a label set (see the module docstring).

    ``names[l]``: node names of level ``l``; ``parent[l][v]``: index of node ``v``'s parent on level ``l + 1``
    (``l`` = 1, 2); ``children[l][v]``: indices of its children on level ``l - 1`` (``l`` = 2, 3);
    ``groups[l][v]``: the level-1 classes under node ``v``; ``luts[l]``: 256-entry part label -> level label.
    """

    def __init__(self, meta: DatasetMeta):
        if not meta.hierarchy:
            raise ValueError(f"label set {meta.name!r} has no hierarchy")
        self.meta = meta
        self.names = {lvl: tuple(meta.level_classes(lvl)) for lvl in LEVELS}
        self.sizes = {lvl: len(self.names[lvl]) for lvl in LEVELS}
        self.luts = {lvl: meta.hierarchy_lut(lvl) for lvl in LEVELS}
        n1 = meta.num_classes
        self.groups = {lvl: [[c for c in range(n1) if int(self.luts[lvl][c]) == v] for v in range(self.sizes[lvl])]
                       for lvl in LEVELS}
        p1 = [int(self.luts[2][c]) for c in range(n1)]
        p2 = []
        for k, parts in enumerate(self.groups[2]):
            ups = {int(self.luts[3][c]) for c in parts}
            if len(ups) != 1:
                raise ValueError(f"{meta.name}: level-2 node {self.names[2][k]!r} has parts under {sorted(ups)} "
                                 "on level 3 (needs exactly one parent)")
            p2.append(ups.pop())
        self.parent = {1: p1, 2: p2}
        self.children = {lvl: [[w for w, p in enumerate(self.parent[lvl - 1]) if p == v]
                               for v in range(self.sizes[lvl])] for lvl in (2, 3)}
        for lvl in (2, 3):
            for v, ch in enumerate(self.children[lvl]):
                if not ch:
                    raise ValueError(f"{meta.name}: level-{lvl} node {self.names[lvl][v]!r} has no children")

    def node_names(self) -> list[str]:
        return [f"l{lvl}:{n}" for lvl in LEVELS for n in self.names[lvl]]


def level_label_maps(meta: DatasetMeta) -> dict[int, tuple[tuple[str, ...], np.ndarray]]:
    """``{level: (class names, 256-entry uint8 LUT part label -> level label)}`` for levels 1-3; ignore stays
    ``meta.ignore_index``.  Score a model's ``level2`` output against ``lut[label]`` with ``names`` as classes."""
    h = Hierarchy(meta)
    return {lvl: (h.names[lvl], h.luts[lvl]) for lvl in LEVELS}


class NodeConvs(nn.Module):
    """A conv stack run on every node of a level: (B, N, C, H, W) -> (B, N, H, W), one logit map per node.

    ``kernels`` gives the kernel size of each layer; all but the last are conv + (BN) + ReLU to ``mid_ch``, the
    last maps to one channel (with bias).  ``shared``: the same weights for all nodes (the nodes are folded into
    the batch); otherwise each node has its own weights (grouped convs, ``groups = N``).
    """

    def __init__(self, in_ch: int, mid_ch: int, nodes: int, kernels=(1, 1, 1), shared: bool = True,
                 norm: bool = True):
        super().__init__()
        self.in_ch, self.nodes, self.shared = in_ch, nodes, shared
        g = 1 if shared else nodes
        layers: list[nn.Module] = []
        c = in_ch
        for k in kernels[:-1]:
            layers.append(ConvBNAct(c * g, mid_ch * g, k, groups=g, act="relu", norm=norm, bias=not norm))
            c = mid_ch
        k = kernels[-1]
        layers.append(nn.Conv2d(c * g, g, k, padding=k // 2, groups=g))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c, h, w = x.shape
        if n != self.nodes or c != self.in_ch:
            raise ValueError(f"NodeConvs expects (B, {self.nodes}, {self.in_ch}, H, W), got {tuple(x.shape)}")
        if self.shared:
            return self.net(x.reshape(b * n, c, h, w)).view(b, n, h, w)
        return self.net(x.reshape(b, n * c, h, w))


class NodeGates(nn.Module):
    """One small fully connected layer per node (Eq. 15-16): ``[σ(fc_v(x_v))]_v`` -> (B, N)."""

    def __init__(self, in_features: list[int]):
        super().__init__()
        self.fcs = nn.ModuleList(nn.Linear(d, 1) for d in in_features)

    def forward(self, xs: list[torch.Tensor]) -> torch.Tensor:
        return torch.sigmoid(torch.cat([fc(x) for fc, x in zip(self.fcs, xs)], 1))


@MODELS.register("cnif")
class CNIF(ParsingModel):
    """CNIF; see the module docstring.

    Args:
        meta: the label set; its classes are level 1 and its hierarchy gives levels 2-3.
        loss: the config's loss list.
        mode: ``backbone``, ``direct``, ``direct_bu``, ``direct_td``, ``direct_bu_td``, ``fixed``, ``full``.
        backbone: backbone config (default: deep-stem ResNet-101 at OS16).
        aspp_dilations, aspp_branch_ch: ASPP rates (OS16: 6, 12, 18) and branch width (default ``feat_ch``).
        feat_ch: width of ``h_I`` (paper 512); level_ch: width of ``h^l`` and ``h_v`` (paper 512).
        se_reduction: SE reduction ratio.  head_ch, td_ch, bu_ch: hidden widths of F⊕, F↓, F↑;
        fusion_ch: hidden width of F∪.
        head_sharing: ``level`` (one F⊕/F↓/F↑/F∪ per level, shared by its nodes) or ``node``.
        message: ``prob`` (softmax of the direct logits) or ``logit`` -- what top-down/bottom-up read.
        node_logits: ``signed`` (plain conv outputs) or ``relu`` (the paper's logits in R>=0, Eq. 11-14 and 17:
            each inference network's and the fusion's output through a ReLU). With non-negative sources a gate
            (Eq. 15-16) can only shrink a source's evidence for a node towards "none"; with signed ones, shrinking a
            negative logit raises that node's score, so a low gate also means "less against".
    """

    extra_outputs = ("level2", "level3", "gates")

    def __init__(self, meta: DatasetMeta, loss: list[dict] | None = None, mode: str = "full",
                 backbone: dict | None = None,
                 aspp_dilations=(6, 12, 18), aspp_branch_ch: int | None = None, feat_ch: int = 512,
                 level_ch: int = 512, se_reduction: int = 16, head_ch: int = 128, td_ch: int = 64, bu_ch: int = 64,
                 fusion_ch: int = 32, head_sharing: str = "level", message: str = "prob",
                 node_logits: str = "signed"):
        if mode not in MODES:
            raise ValueError(f"cnif: unknown mode {mode!r}; choose from {', '.join(MODES)}")
        levels = (1,) if mode == "backbone" else LEVELS
        # Eq. 18 sums over the levels the model has: the backbone mode drops the terms of levels 2-3
        absent = {f"sources_l{lvl}" for lvl in LEVELS if lvl not in levels}
        loss = [t for t in loss or () if t.get("pred") not in absent]
        super().__init__(meta, loss or None)
        if head_sharing not in ("level", "node"):
            raise ValueError(f"cnif: head_sharing must be 'level' or 'node', not {head_sharing!r}")
        if message not in ("prob", "logit"):
            raise ValueError(f"cnif: message must be 'prob' or 'logit', not {message!r}")
        if node_logits not in ("signed", "relu"):
            raise ValueError(f"cnif: node_logits must be 'signed' or 'relu', not {node_logits!r}")
        self.node_logits = node_logits
        self.hierarchy = hier = Hierarchy(meta)
        self.mode, self.message = mode, message
        extra, self.fusion = MODES[mode]
        self.levels = levels
        shared = head_sharing == "level"

        backbone = dict(backbone or {"name": "resnet101", "deep_stem": True, "output_stride": 16})
        self.backbone = build_backbone(backbone.pop("name"), **backbone)
        ch = self.backbone.out_channels
        self.aspp = ASPP(ch["c5"], feat_ch, tuple(aspp_dilations), image_pool=True, branch_ch=aspp_branch_ch,
                         act="relu", project_act="relu")
        self.low_proj = nn.Identity() if ch["c3"] == feat_ch else ConvBNAct(ch["c3"], feat_ch, 1, act=None)
        self.alpha = nn.Parameter(torch.ones(()))

        n = hier.sizes
        self.sources = {lvl: ("direct",) + (("td",) if "td" in extra and lvl < 3 else ())
                        + (("bu",) if "bu" in extra and lvl > 1 else ()) for lvl in self.levels}
        # what Eq. 18 supervises per level; a level with a single source has fused == direct
        self.loss_sources = {lvl: (("fused",) if len(self.sources[lvl]) > 1 else ()) + self.sources[lvl]
                             for lvl in self.levels}
        self.lsf = nn.ModuleDict({f"l{lvl}": ConvBNAct(feat_ch, level_ch, 3, act="relu") for lvl in self.levels})
        self.se = nn.ModuleDict({f"l{lvl}": nn.ModuleList(SE(level_ch, se_reduction) for _ in range(n[lvl]))
                                 for lvl in self.levels})
        self.direct = nn.ModuleDict({f"l{lvl}": NodeConvs(level_ch, head_ch, n[lvl], (1, 1, 1), shared)
                                     for lvl in self.levels})
        self.td = nn.ModuleDict({f"l{lvl}": NodeConvs(level_ch + 1, td_ch, n[lvl], (3, 3, 1), shared)
                                 for lvl in self.levels if "td" in self.sources[lvl]})
        self.bu = nn.ModuleDict({f"l{lvl}": NodeConvs(level_ch + 1, bu_ch, n[lvl], (3, 3, 1), shared)
                                 for lvl in self.levels if "bu" in self.sources[lvl]})
        if self.fusion is not None:  # F∪ (Eq. 17), gated or not
            self.fuse = nn.ModuleDict({f"l{lvl}": NodeConvs(len(self.sources[lvl]), fusion_ch, n[lvl], (1, 1, 1),
                                                            shared, norm=False)
                                       for lvl in self.levels if len(self.sources[lvl]) > 1})
        if self.fusion == "conditional":
            self.gate_direct = nn.ModuleDict({f"l{lvl}": NodeGates([level_ch] * n[lvl]) for lvl in self.levels})
            # gate_td["l1"][u]: the FC of level-2 node u, gating the top-down message to its level-1 children
            self.gate_td = nn.ModuleDict({k: NodeGates([level_ch] * n[int(k[1]) + 1]) for k in self.td})
            self.gate_bu = nn.ModuleDict({k: NodeGates([level_ch * len(c) for c in hier.children[int(k[1])]])
                                          for k in self.bu})
        if self.fusion == "fixed":  # sigma(0) = 0.5 for every (node, source)
            self.fixed_gates = nn.ParameterDict({f"l{lvl}": nn.Parameter(torch.zeros(n[lvl], len(self.sources[lvl])))
                                                 for lvl in self.levels})
        self.node_names = hier.node_names()
        mask = torch.zeros(sum(n.values()), len(SOURCES), dtype=torch.bool)
        off = 0
        for lvl in LEVELS:
            for s in self.sources.get(lvl, ()):
                mask[off:off + n[lvl], SOURCES.index(s)] = True
            off += n[lvl]
        self.gate_mask = mask  # (N_total, 3): which (node, source) gates exist

    # -------------------------------------------------------------------------------------------
    def _logits(self, t: torch.Tensor) -> torch.Tensor:
        """A node's logits as the model is asked for: signed, or in R>=0 (Eq. 11-14, 17)."""
        return F.relu(t) if self.node_logits == "relu" else t

    def _gates(self, lvl: int, caps: dict[int, torch.Tensor], b: int) -> torch.Tensor:
        """(B, N_l, S_l) gate values of level ``lvl``'s sources."""
        k = f"l{lvl}"
        if self.fusion == "fixed":
            return torch.sigmoid(self.fixed_gates[k]).unsqueeze(0).expand(b, -1, -1)
        hier, out = self.hierarchy, []
        for s in self.sources[lvl]:
            if s == "direct":
                c = caps[lvl]
                out.append(self.gate_direct[k]([c[:, v] for v in range(c.shape[1])]))
            elif s == "td":
                c = caps[lvl + 1]
                per_parent = self.gate_td[k]([c[:, u] for u in range(c.shape[1])])
                out.append(per_parent[:, hier.parent[lvl]])
            else:
                c = caps[lvl - 1]
                out.append(self.gate_bu[k]([c[:, ch].flatten(1) for ch in hier.children[lvl]]))
        return torch.stack(out, 2)

    @staticmethod
    def _gate_table(g: torch.Tensor, srcs: tuple[str, ...]) -> torch.Tensor:
        """(B, N, S) gates of a level's sources -> (B, N, len(SOURCES)), 0 where a source is absent (built
        from ``g`` alone, so an exported network keeps a dynamic batch)."""
        zero = torch.zeros_like(g[..., 0])
        return torch.stack([g[..., srcs.index(s)] if s in srcs else zero for s in SOURCES], -1)

    def _marginals(self, logits: torch.Tensor, lvl: int) -> torch.Tensor:
        """Log-probabilities of the level-``lvl`` nodes from part logits (sum of the parts' softmax)."""
        lp = logits.log_softmax(1)
        return torch.stack([lp[:, g].logsumexp(1) for g in self.hierarchy.groups[lvl]], 1)

    def network(self, x: torch.Tensor) -> dict:
        hier = self.hierarchy
        f = self.backbone(x)
        h = upsample_like(self.aspp(f["c5"]), f["c3"], align_corners=True) + self.alpha * self.low_proj(f["c3"])
        b = x.shape[0]
        out: dict[str, torch.Tensor] = {}
        feats, caps, direct = {}, {}, {}
        for lvl in self.levels:
            k = f"l{lvl}"
            hl = self.lsf[k](h)
            s = torch.stack([se.gate(hl) for se in self.se[k]], 1)  # (B, N, C, 1, 1) node channel attention
            feats[lvl] = hl.unsqueeze(1) * s  # h_v, (B, N, C, H, W)
            caps[lvl] = F.adaptive_avg_pool2d(hl, 1).flatten(1).unsqueeze(1) * s.flatten(2)  # CAP(h_v), (B, N, C)
            direct[lvl] = self._logits(self.direct[k](feats[lvl]))
            out[f"direct_l{lvl}"] = direct[lvl]

        if self.fusion is None:
            out["parsing"] = direct[1]
            if self.mode == "backbone":
                out["level2"], out["level3"] = self._marginals(direct[1], 2), self._marginals(direct[1], 3)
            else:
                out["level2"], out["level3"] = direct[2], direct[3]
            for lvl in self.levels:
                out[f"sources_l{lvl}"] = direct[lvl].unsqueeze(1)
            return out

        msg = {lvl: direct[lvl].softmax(1) if self.message == "prob" else direct[lvl] for lvl in self.levels}
        preds: dict[int, dict[str, torch.Tensor]] = {lvl: {"direct": direct[lvl]} for lvl in self.levels}
        for k, head in self.td.items():  # top-down: parent's direct estimate + node feature (Eq. 12)
            lvl = int(k[1])
            parent = msg[lvl + 1][:, hier.parent[lvl]]
            preds[lvl]["td"] = self._logits(head(torch.cat([parent.unsqueeze(2), feats[lvl]], 2)))
        for k, head in self.bu.items():  # bottom-up: position-wise max over the children (Eq. 13-14)
            lvl = int(k[1])
            pmp = torch.stack([msg[lvl - 1][:, ch].amax(1) for ch in hier.children[lvl]], 1)
            preds[lvl]["bu"] = self._logits(head(torch.cat([pmp.unsqueeze(2), feats[lvl]], 2)))

        gates = []
        fused = {}
        for lvl in self.levels:
            srcs = self.sources[lvl]
            stack = torch.stack([preds[lvl][s] for s in srcs], 2)  # (B, N, S, H, W)
            if len(srcs) == 1:  # a level with one source (e.g. level 1 of direct_bu): no fusion
                fused[lvl] = preds[lvl]["direct"]
                out[f"sources_l{lvl}"] = stack.transpose(1, 2)
                continue
            if self.fusion == "ungated":
                fused[lvl] = self._logits(self.fuse[f"l{lvl}"](stack))
            else:
                g = self._gates(lvl, caps, b)  # (B, N, S)
                fused[lvl] = self._logits(self.fuse[f"l{lvl}"](stack * g[..., None, None]))
                gates.append(self._gate_table(g, srcs))
            for s in srcs[1:]:
                out[f"{s}_l{lvl}"] = preds[lvl][s]
            out[f"sources_l{lvl}"] = torch.cat([fused[lvl].unsqueeze(1), stack.transpose(1, 2)], 1)
        out["parsing"], out["level2"], out["level3"] = fused[1], fused[2], fused[3]
        if gates:
            out["gates"] = torch.cat(gates, 1)
        return out

    def postprocess(self, extras: dict) -> dict:
        """Levels 2-3 as label maps; the gates as a (node, source) table."""
        names = self.hierarchy.names
        out = {f"level{lvl}": label_map(extras[f"level{lvl}"], names[lvl]) for lvl in (2, 3)
               if f"level{lvl}" in extras}
        if "gates" in extras:
            out["gates"] = ScoreTable(extras["gates"].float().cpu().numpy(), tuple(self.node_names), SOURCE_NAMES)
        return out
