"""AIParsing (Zhang et al., TIP'22, "Anchor-free Instance-level Human Parsing"), as the paper describes it and
the authors' code (31sy/AIParsing) settles (reference-notes A.3, instance-parsers spec 2.1).

Detection head (Sec. III-A): FCOS on the FPN levels P3-P7 (:mod:`hparse.models.detection.fcos`),
L_det = L_cls (focal) + L_reg (IoU loss) + L_center (BCE), Eq. 2.

Edge-guided parsing head (Sec. III-B), on every person box:

- *detail preserving*: RoIAlign of the box on P3 only, 32 x 32 (legacy, sampling ratio 2);
- *human-part context encoding*: PGEC -- one 3x3 conv and gather-excite units of extent 4, 8, 16 and H (the
  whole RoI: five serial depthwise stride-2 convs, :class:`GatherExcite`), concatenated and fused by a 3x3
  conv (:class:`PGEC`) -- then an embedded-Gaussian non-local block with GroupNorm
  (``blocks.NonLocal2d``);
- *prediction head*: four shared 3x3 convs, GroupNorm after the last one, then the parsing and the edge
  outputs (transposed convs, bilinear up to 256 x 256). "Edge-guided" is multi-task supervision of the
  shared feature: no edge-to-parsing fusion. L_pred = alpha L_parsing (CE) + beta L_edge (class-balanced CE,
  Eq. 4), alpha = beta = 2 (Eq. 3);
- *refinement head*: the mIoU score -- two convs and three fully connected layers on the head feature and
  the max-pooled parsing logits (:class:`ParsingIoUHead`), trained by MSE towards the RoI's parsing mIoU --
  and the mIoU loss (Lovasz-softmax); L_refine = theta L_miou + gamma L_miou-score, theta = 2, gamma = 1 (Eq. 5).

The RoI losses CE / Lovasz / edge come from the config's ``loss`` list (``pred: parsing | edge``,
``target: label | edge`` = the RoI targets); the detector's and the mIoU score's are the model's.

Training RoIs: FCOS's detections (100 per image, detached) plus the ground-truth boxes, positives at IoU >= 0.5,
16 per image; targets: the matched person's part map cropped to the RoI, resized (nearest) to 256 x 256, its
edges, and the mIoU of the predicted parsing (argmax) against it. Inference: the 50 best detections per image,
score sqrt(det x clamp(predicted mIoU, 0, 1)), probabilities pasted Mask R-CNN style (1-cell pad) and argmaxed
into one part map per person; the global parsing paints people by ascending score
(``PersonInstances.to_semantic``, the instance evaluator's ``semantic_thresh``: 0.3 on CIHP).
Inference runs TopDownParser's steps (``detect``, ``roi_outputs``, ``people``), so the instance predictor's
test-time augmentation (spec 2.1.4 item 8) averages the probabilities and predicted mIoU of several scales and
flips on the base scale's boxes before the same scoring and paste.

Cost: ``count_macs(model)`` counts the detector (``network``: backbone, FPN, FCOS) at an input size;
:meth:`AIParsing.roi_head_macs` the parsing and refinement heads per RoI and :meth:`AIParsing.pgec_macs` the
PGEC alone (the paper's Table V "FLOPs").
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from ..ops import roi_align
from . import MODELS
from .blocks import ASPP, PPM, ConvBNAct, NonLocal2d, group_norm, kaiming_init
from .complexity import count_macs
from .detection import (
    FCOS,
    Detections,
    Matcher,
    TopDownParser,
    edge_targets,
    ground_truth,
    person_part_targets,
    roi_miou,
    rois_of,
    sample_positive_rois,
    zero_loss,
)

DEFAULT_BACKBONE = {"name": "resnet50", "freeze_at": 2}
DEFAULT_FPN = {"out_channels": 256, "levels": ["p3", "p4", "p5", "p6", "p7"], "extra_from": "p5"}
CONTEXTS = ("pgec", "conv", "psp", "aspp")
TARGET_CROPS = ("aligned", "clipped")


def paper_loss(edge: bool = True) -> list[dict]:
    """The RoI loss terms of Eqs. 3 and 5: CE and Lovasz (mIoU loss) on the parsing, class-balanced CE on the
    edges, each weighted 2."""
    terms = [{"type": "ce", "pred": "parsing", "target": "label", "weight": 2.0},
             {"type": "lovasz", "pred": "parsing", "target": "label", "weight": 2.0}]
    return terms + ([{"type": "balanced_edge_ce", "pred": "edge", "target": "edge", "weight": 2.0}] if edge else [])


def _conv(cin: int, cout: int, k: int = 3, stride: int = 1, groups: int = 1, bias: bool = True) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=bias)


# -- human-part context encoding -----------------------------------------------------------------------------

class GatherExcite(nn.Module):
    """A gather-excite unit: gather with ``depth`` depthwise 3x3 stride-2 convs (ReLU between), excite with
    the sigmoid of that map -- bilinearly upsampled to the input (``upsample``) or one value per channel (the
    global extent) -- as a gate on the input, then a 1x1 conv + ReLU."""

    def __init__(self, channels: int, depth: int, upsample: bool = True):
        super().__init__()
        layers: list[nn.Module] = []
        for i in range(depth):
            layers += [_conv(channels, channels, 3, 2, groups=channels)] + ([nn.ReLU(inplace=True)] if i < depth - 1
                                                                            else [])
        self.gather = nn.Sequential(*layers)
        self.upsample = upsample
        self.project = ConvBNAct(channels, channels, 1, 1, bias=True, norm=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate = self.gather(x)
        if self.upsample:
            gate = F.interpolate(gate, size=x.shape[-2:], mode="bilinear", align_corners=True)
        return self.project(x * gate.sigmoid())


class PGEC(nn.Module):
    """Pyramidal gather-excite context (Zhang et al., TCSVT'21) as AIParsing uses it: a 3x3 conv and one
    :class:`GatherExcite` unit per extent ratio in ``extents`` (``log2(e)`` convs) plus the global one
    (``global_depth`` convs, default ``ceil(log2(roi_size))``: five at 32), concatenated and fused by a
    3x3 conv + ReLU to ``out_ch`` (no norm)."""

    def __init__(self, in_ch: int = 256, out_ch: int = 512, roi_size: int = 32, extents=(4, 8, 16),
                 global_depth: int | None = None):
        super().__init__()
        global_depth = global_depth or math.ceil(math.log2(roi_size))
        if 2 ** global_depth < roi_size:
            raise ConfigError(f"PGEC: {global_depth} stride-2 convs do not gather a {roi_size}x{roi_size} RoI "
                              "into one value per channel")
        self.local = ConvBNAct(in_ch, in_ch, 3, 1, bias=True, norm=False)
        self.units = nn.ModuleList([GatherExcite(in_ch, global_depth, upsample=False)]
                                   + [GatherExcite(in_ch, int(math.log2(e))) for e in extents])
        self.fuse = ConvBNAct(in_ch * (len(self.units) + 1), out_ch, 3, 1, bias=True, norm=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fuse(torch.cat([self.local(x)] + [unit(x) for unit in self.units], 1))


def build_context(kind: str, in_ch: int, out_ch: int, roi_size: int, extents=(4, 8, 16),
                  global_depth: int | None = None) -> nn.Module:
    """The multi-scale context module: ``pgec`` (the paper), ``conv`` (one 3x3 conv + ReLU: Table VI's rows
    without PGEC), ``psp`` / ``aspp`` (Table VIII: bins 1/2/3/6, rates 6/12/18 + image pooling, no norm)."""
    if kind == "pgec":
        return PGEC(in_ch, out_ch, roi_size, extents, global_depth)
    if kind == "conv":
        return ConvBNAct(in_ch, out_ch, 3, 1, bias=True, norm=False)
    if kind == "psp":
        return PPM(in_ch, out_ch, bins=(1, 2, 3, 6), stage_ch=in_ch // 4, act="relu", norm=False)
    if kind == "aspp":
        return ASPP(in_ch, out_ch, dilations=(6, 12, 18), image_pool=True, act="relu", project_act="relu", norm=False)
    raise ConfigError(f"context must be one of {', '.join(CONTEXTS)}, got {kind!r}")


# -- prediction and refinement heads ------------------------------------------------------------------------

def _shared_convs(in_ch: int, ch: int, num_convs: int, gn: bool, gn_groups: int = 32) -> nn.Sequential:
    """``num_convs`` 3x3 convs + ReLU; with ``gn`` the last one has GroupNorm (and no bias)."""
    layers: list[nn.Module] = []
    for i in range(num_convs):
        last_gn = gn and i == num_convs - 1
        layers.append(_conv(in_ch if i == 0 else ch, ch, bias=not last_gn))
        if last_gn:
            layers.append(group_norm(ch, gn_groups))
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class AIParsingHead(nn.Module):
    """Context encoding (+ non-local) -> shared convs -> parsing (C) and edge (2) logits at ``parsing_size``.
    ``forward(rois)`` -> ``{"features": (R, ch, S, S), "parsing": (R, C, P, P)[, "edge": (R, 2, P, P)]}``."""

    def __init__(self, in_ch: int, num_classes: int, roi_size: int = 32, context: str = "pgec",
                 context_ch: int = 512, ge_extents=(4, 8, 16), ge_global_depth: int | None = None,
                 nonlocal_block: bool = True, nonlocal_ch: int | None = None, nonlocal_scale: bool = True,
                 num_convs: int = 4, ch: int = 512, gn: bool = True, parsing_size: int = 256, edge: bool = True):
        super().__init__()
        self.context = build_context(context, in_ch, context_ch, roi_size, ge_extents, ge_global_depth)
        self.relation = (NonLocal2d(context_ch, nonlocal_ch or context_ch, norm="gn", scale=nonlocal_scale)
                         if nonlocal_block else nn.Identity())
        self.convs = _shared_convs(context_ch, ch, num_convs, gn)
        self.parsing = nn.ConvTranspose2d(ch, num_classes, 4, 2, 1)
        self.edge = nn.ConvTranspose2d(ch, 2, 2, 2, 0) if edge else None
        self.parsing_size = parsing_size
        kaiming_init([*self.context.modules(), *self.convs.modules(), self.parsing, self.edge])

    def _up(self, x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(x, size=(self.parsing_size,) * 2, mode="bilinear", align_corners=True)

    def forward(self, rois: torch.Tensor) -> dict[str, torch.Tensor]:
        f = self.convs(self.relation(self.context(rois)))
        out = {"features": f, "parsing": self._up(self.parsing(f))}
        if self.edge is not None:
            out["edge"] = self._up(self.edge(f))
        return out


class ParsingIoUHead(nn.Module):
    """The mIoU score: concat(head feature, parsing logits max-pooled to the RoI grid) -> 3x3 conv + ReLU ->
    3x3 stride-2 conv + ReLU -> global average -> FC + ReLU -> FC + ReLU -> FC -> one value per RoI."""

    def __init__(self, in_ch: int, num_classes: int, conv_ch: int = 128, fc_ch: int = 256):
        super().__init__()
        self.convs = nn.Sequential(ConvBNAct(in_ch + num_classes, conv_ch, 3, 1, bias=True, norm=False),
                                   ConvBNAct(conv_ch, conv_ch, 3, 2, bias=True, norm=False))
        self.fcs = nn.Sequential(nn.Linear(conv_ch, fc_ch), nn.ReLU(inplace=True), nn.Linear(fc_ch, fc_ch),
                                 nn.ReLU(inplace=True))
        self.score = nn.Linear(fc_ch, 1)
        kaiming_init(self.convs.modules())
        for m in self.fcs:
            if isinstance(m, nn.Linear):
                nn.init.kaiming_uniform_(m.weight, a=1)
                nn.init.zeros_(m.bias)
        nn.init.normal_(self.score.weight, std=0.01)
        nn.init.zeros_(self.score.bias)

    def forward(self, features: torch.Tensor, parsing_logits: torch.Tensor) -> torch.Tensor:
        pooled = F.adaptive_max_pool2d(parsing_logits, features.shape[-2:])
        x = self.convs(torch.cat([features, pooled], 1)).mean((2, 3))
        return self.score(self.fcs(x))[:, 0]


# -- the model ---------------------------------------------------------------------------------------------

@MODELS.register("aiparsing")
class AIParsing(TopDownParser):
    """See the module docstring. Config keys: ``backbone`` (``build_backbone`` keys; default R-50, freeze_at 2),
    ``fpn`` (``BackboneFPN`` keys; default 256 channels, P3-P7, P6 from P5), ``fcos`` (``FCOS`` keys),
    ``detect_levels`` (the FPN levels FCOS runs on; default all), the RoI settings, the head's
    widths and switches (the ablation rows of Tables IV-VIII) and ``miou_score_weight`` (gamma). The boxes per
    image: ``fcos.detections_train`` (100, the training proposals) and ``fcos.detections_test`` (50)."""

    def __init__(self, meta, loss: list[dict] | None = None, backbone: dict | None = None, fpn: dict | None = None,
                 fcos: dict | None = None, detect_levels: list[str] | None = None, roi_level: str = "p3",
                 roi_size: int = 32, roi_sampling_ratio: int = 2, roi_aligned: bool = False,
                 rois_per_image: int = 16, roi_iou: float = 0.5, target_crop: str = "aligned",
                 context: str = "pgec", context_ch: int = 512, ge_extents: list[int] = (4, 8, 16),
                 ge_global_depth: int | None = None, nonlocal_block: bool = True, nonlocal_ch: int | None = None,
                 nonlocal_scale: bool = True, head_convs: int = 4, head_ch: int = 512, head_gn: bool = True,
                 parsing_size: int = 256, edge: bool = True, edge_width: int = 3, iou_head: bool = True,
                 iou_conv_ch: int = 128, iou_fc_ch: int = 256, miou_score_weight: float = 1.0,
                 paste_pad: int = 1, test_chunk: int = 16):
        if target_crop not in TARGET_CROPS:
            raise ConfigError(f"target_crop must be one of {', '.join(TARGET_CROPS)}, got {target_crop!r}")
        super().__init__(meta, loss or paper_loss(edge), {**DEFAULT_BACKBONE, **(backbone or {})},
                         {**DEFAULT_FPN, **(fpn or {})})
        strides, ch = self.body.strides, self.body.out_channels
        self.detect_levels = list(detect_levels or strides)
        unknown = [lv for lv in [*self.detect_levels, roi_level] if lv not in strides]
        if unknown:
            raise ConfigError(f"FPN level(s) {', '.join(unknown)} not built (fpn.levels: {', '.join(strides)})")
        self.fcos = FCOS(ch, [strides[lv] for lv in self.detect_levels], **(fcos or {}))
        self.roi_level, self.roi_size, self.roi_stride = roi_level, roi_size, strides[roi_level]
        self.roi_sampling_ratio, self.roi_aligned = roi_sampling_ratio, roi_aligned
        self.rois_per_image, self.matcher, self.target_crop = rois_per_image, Matcher(roi_iou, roi_iou), target_crop
        self.roi_head = AIParsingHead(ch, self.num_classes, roi_size, context, context_ch, tuple(ge_extents),
                                      ge_global_depth, nonlocal_block, nonlocal_ch, nonlocal_scale, head_convs,
                                      head_ch, head_gn, parsing_size, edge)
        self.iou_head = ParsingIoUHead(head_ch, self.num_classes, iou_conv_ch, iou_fc_ch) if iou_head else None
        self.edge_width, self.miou_score_weight = edge_width, miou_score_weight
        self.paste_pad, self.test_chunk = paste_pad, test_chunk

    # -- network ------------------------------------------------------------------------------------------
    def network(self, x: torch.Tensor) -> dict:
        """The dense part: FPN features and FCOS's raw outputs."""
        features = self.body(x)
        return {"features": features, "detector": self.fcos([features[lv] for lv in self.detect_levels])}

    def exported_outputs(self, outputs: dict) -> dict[str, torch.Tensor]:
        """The FPN levels, then per FCOS level ``fcos_logits_<level>``, ``fcos_distances_<level>`` and
        ``fcos_centerness_<level>`` (the points follow from the sizes: left out)."""
        det, named = outputs["detector"], dict(outputs["features"])
        for lv, logits, distances, centerness in zip(self.detect_levels, det.logits, det.distances, det.centerness):
            named.update({f"fcos_logits_{lv}": logits, f"fcos_distances_{lv}": distances,
                          f"fcos_centerness_{lv}": centerness})
        return named

    def detector_contract(self) -> str:
        classes = self.fcos.head.cls_logits.out_channels
        return (f"Per FCOS level L ({', '.join(self.detect_levels)}): fcos_logits_L (B, {classes}, h, w) class logits, "
                "fcos_distances_L (B, 4, h, w) left/top/right/bottom distances in input pixels, "
                "fcos_centerness_L (B, 1, h, w) centerness logits; cell (i, j) of a level of stride s is the "
                "location (x, y) = (j s + s // 2, i s + s // 2).")

    def roi_features(self, features: dict, boxes: list[torch.Tensor]) -> torch.Tensor:
        """RoIAlign of per-image boxes on the RoI level -> (R, C, S, S)."""
        return roi_align(features[self.roi_level], rois_of(boxes), self.roi_size, 1.0 / self.roi_stride,
                         self.roi_sampling_ratio, self.roi_aligned)

    def parse_rois(self, features: dict, boxes: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        """The parsing head on the boxes, plus the predicted mIoU (``"miou"``) with the refinement head."""
        out = self.roi_head(self.roi_features(features, boxes))
        if self.iou_head is not None:
            out["miou"] = self.iou_head(out["features"], out["parsing"])
        return out

    # -- training ------------------------------------------------------------------------------------------
    def losses(self, outputs: dict, batch: dict) -> dict[str, torch.Tensor]:
        gts = ground_truth(batch, batch["image"].device)
        det = outputs["detector"]
        losses = self.fcos.losses(det, [g.boxes for g in gts])
        proposals = [d.boxes for d in self.fcos.detect(det, batch["image_sizes"])]
        sampled = sample_positive_rois(proposals, gts, self.matcher, self.rois_per_image)
        if sum(len(b) for b, _ in sampled) == 0:
            return {**losses, **self._no_roi_losses()}
        head = self.parse_rois(outputs["features"], [b for b, _ in sampled])
        targets = self.roi_targets(gts, sampled)
        losses.update(self.criterion(head, targets))
        if self.iou_head is not None and self.miou_score_weight:
            losses["miou_score"] = self.miou_score_weight * self.miou_score_loss(head, targets["label"])
        return losses

    def roi_targets(self, gts, sampled) -> dict[str, torch.Tensor]:
        """``label`` (R, P, P) part targets of the sampled RoIs and their ``edge`` targets."""
        clip = self.target_crop == "clipped"
        label = torch.cat([person_part_targets(gt, boxes, person, self.roi_head.parsing_size, clip)
                           for gt, (boxes, person) in zip(gts, sampled)])
        return {"label": label, "edge": edge_targets(label, self.edge_width)}

    def miou_score_loss(self, head: dict, label: torch.Tensor) -> torch.Tensor:
        """MSE between the predicted mIoU and the parsing's mIoU (argmax vs target), over RoIs whose mIoU is > 0."""
        with torch.no_grad():
            target = roi_miou(head["parsing"].argmax(1), label, self.num_classes)
        scored = target > 0
        if not scored.any():
            return head["miou"].sum() * 0
        return F.mse_loss(head["miou"][scored], target[scored])

    def _no_roi_losses(self) -> dict[str, torch.Tensor]:
        """Zero RoI losses, one per term, when the batch has no person."""
        zero = zero_loss(self.roi_head) + (zero_loss(self.iou_head) if self.iou_head is not None else 0)
        names = [s["name"] for s in self.criterion.specs if s["weight"]]
        return dict.fromkeys(names + (["miou_score"] if self.iou_head is not None else []), zero)

    # -- inference (TopDownParser's protocol) -------------------------------------------------------------------
    def detect(self, outputs: dict, image_sizes) -> list[Detections]:
        return self.fcos.detect(outputs["detector"], image_sizes)

    def roi_outputs(self, outputs: dict, index: int, boxes: torch.Tensor
                    ) -> tuple[torch.Tensor, torch.Tensor | None, None]:
        """The heads on image ``index``'s boxes, ``test_chunk`` at a time: the parsing softmax, the raw
        predicted mIoU (None without the refinement head) and no foreground (the masks are the parsings')."""
        heads = self.heads_on(outputs, index, boxes)
        if not heads:
            size = self.roi_head.parsing_size
            return (boxes.new_zeros((0, self.num_classes, size, size)),
                    None if self.iou_head is None else boxes.new_zeros(0), None)
        probs = torch.cat([h["parsing"].float().softmax(1) for h in heads])
        return probs, torch.cat([h["miou"] for h in heads]) if "miou" in heads[0] else None, None

    # -- cost ------------------------------------------------------------------------------------------------
    def roi_head_macs(self) -> int:
        """Multiply-adds of the parsing (and refinement) head for one RoI."""
        return count_macs(_RoIHeads(self), (1, self.body.out_channels, self.roi_size, self.roi_size))

    def pgec_macs(self) -> int:
        """Multiply-adds of the context module for one RoI (Table V)."""
        return count_macs(self.roi_head.context, (1, self.body.out_channels, self.roi_size, self.roi_size))


class _RoIHeads(nn.Module):
    """The RoI heads of a model as one module (for counting)."""

    def __init__(self, model: AIParsing):
        super().__init__()
        self.roi_head, self.iou_head = model.roi_head, model.iou_head

    def forward(self, rois: torch.Tensor) -> torch.Tensor:
        out = self.roi_head(rois)
        return out["parsing"] if self.iou_head is None else self.iou_head(out["features"], out["parsing"])
