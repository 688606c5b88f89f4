"""CE2P (Liu et al., AAAI'19) as in liutinglt/CE2P: ResNet + PPM context, an edge branch on
Res-2..Res-4, a decoder fusing the context with Res-2, and a fusion head over decoder and
edge features (reference-notes A.0). The light variant swaps the backbone and narrows heads.
"""

from __future__ import annotations

import torch
from torch import nn

from . import MODELS
from .backbones import build_backbone
from .blocks import PPM, CE2PDecoder, CE2PEdge, ConvBNAct
from .meta_arch import ParsingModel, boundary_heatmap

DEFAULT_BACKBONE = {"name": "resnet101", "deep_stem": True, "output_stride": 16}


class CE2PTrunk(nn.Module):
    """Backbone + PPM + decoder (+ CE2P's edge module unless ``edge=False``); shared by CE2P and the models
    that extend it (ACENet)."""

    def __init__(self, num_classes: int, backbone: dict | None = None, ppm_ch: int = 512,
                 ppm_stage_ch: int = 512, edge_ch: int = 256, decoder_ch: int = 256, low_reduce: int = 48,
                 act: str = "leaky", edge: bool = True):
        super().__init__()
        backbone = dict(backbone or DEFAULT_BACKBONE)
        self.backbone = build_backbone(backbone.pop("name"), **backbone)
        ch = self.backbone.out_channels
        self.context = PPM(ch["c5"], ppm_ch, stage_ch=ppm_stage_ch, act=act)
        self.edge = CE2PEdge((ch["c2"], ch["c3"], ch["c4"]), mid=edge_ch, act=act) if edge else None
        self.decoder = CE2PDecoder(num_classes, ppm_ch, ch["c2"], decoder_ch, low_reduce, act=act)
        self.edge_feature_ch = 3 * edge_ch if edge else 0
        self.decoder_ch = decoder_ch

    def forward(self, x: torch.Tensor) -> dict:
        f = self.backbone(x)
        parsing, dec_feat = self.decoder(self.context(f["c5"]), f["c2"])
        out = {"features": f, "parsing_aux": parsing, "decoder_features": dec_feat}
        if self.edge is not None:
            out["edge"], out["edge_features"] = self.edge([f["c2"], f["c3"], f["c4"]])
        return out


@MODELS.register("ce2p")
class CE2P(ParsingModel):
    """Outputs ``parsing`` (fusion head), ``parsing_aux`` (decoder) and ``edge`` (2-channel boundary logits),
    all at stride 4; the boundary probability is an inference extra."""

    extra_outputs = ("edge",)
    config_forwards_to = CE2PTrunk

    def __init__(self, meta, loss: list[dict] | None = None, fusion_ch: int = 256, dropout: float = 0.1, **trunk):
        super().__init__(meta, loss)
        self.trunk = CE2PTrunk(self.num_classes, **trunk)
        self.fusion = nn.Sequential(
            ConvBNAct(self.trunk.decoder_ch + self.trunk.edge_feature_ch, fusion_ch, act="leaky"),
            nn.Dropout2d(dropout), nn.Conv2d(fusion_ch, self.num_classes, 1))

    def network(self, x: torch.Tensor) -> dict:
        t = self.trunk(x)
        fused = self.fusion(torch.cat([t["decoder_features"], t["edge_features"]], 1))
        return {"parsing": fused, "parsing_aux": t["parsing_aux"], "edge": t["edge"]}

    def postprocess(self, extras: dict) -> dict:
        return {"boundary": boundary_heatmap(extras["edge"])} if "edge" in extras else {}

