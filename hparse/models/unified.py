"""The unified top-down framework of Qin et al. (BMVC'19, "A Top-down Unified Framework for Instance-level Human
Parsing"), as the paper describes it (instance-parsers spec 2.2; no public code exists).

Detection branch: Faster R-CNN with FPN (:mod:`~hparse.models.detection.rpn`,
:mod:`~hparse.models.detection.fast_rcnn`): RPN on P2-P6 (P6 = max-pool of P5), the Fast R-CNN box head on
512 RoIs per image at 1:3, class-specific deltas. L_d = RPN objectness + RPN box + box CE + box smooth-L1.

Attention (foreground) branch (Sec. 3.2): RoIAlign 14x14 at the RoI's canonical level, 4 x (conv3x3 + ReLU),
ConvTranspose 2x2 s2 + ReLU, conv1x1 -> one logit at 28x28; A = sigmoid(logit) is the person's foreground.
L_a = BCE on the matched person's mask (28x28).

Parsing branch: RoIAlign 28x28 on every level P2-P5 fused by the elementwise max (PANet), 4 x (conv3x3 +
GroupNorm + ReLU) -> F, fused with the attention map (Table 5, ``fusion``):

- ``concat_after_conv4`` (the paper's choice): concat(F, A);
- ``concat_after_conv4_trans``: concat(F, the attention branch's transposed-conv feature);
- ``dot_after_conv4_sum``: F + F * A;
- ``dot_after_conv3_sum``: the same before the last conv ("conv4" is the last conv, "conv3" the one before);
- ``none``: no attention branch at all (Table 1 "w/o attention"; L_a = 0);

then ConvTranspose 2x2 s2 + ReLU and conv1x1 -> C logits at 56x56. L_p = CE on the matched person's part map
(56x56). The attention map is not detached (end-to-end). L = L_d + L_a + alpha L_p, alpha = 5 (Eq. 1): the
parsing CE is the config's ``loss`` list (weight 5), the other terms the model's.

Training RoIs for the attention and parsing branches: the foreground RoIs of the box branch's sample (their
proposals, not refined), at most ``max_parsing_rois`` per image (None: all, the paper). Inference
(Mask R-CNN style): RPN proposals -> box head -> detections (>= 0.05, NMS 0.5, <= 100) -> attention and parsing
on the final boxes; parsing softmax pasted and argmaxed, person score = detection score; the person's mask is
the pasted attention probability > 0.5 (``PersonInstances.masks``: instance segmentation and APh read it).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from ..ops import max_roi_align
from . import MODELS
from .blocks import group_norm, kaiming_init
from .complexity import count_macs
from .detection import (
    RPN,
    Detections,
    FastRCNN,
    TopDownParser,
    ground_truth,
    person_mask_targets,
    person_part_targets,
    rois_of,
    zero_loss,
)
from .detection.fast_rcnn import PooledFeatures

DEFAULT_BACKBONE = {"name": "resnet101", "freeze_at": 2}
DEFAULT_FPN = {"out_channels": 256, "levels": ["p2", "p3", "p4", "p5", "p6"], "p6_mode": "maxpool"}
FUSIONS = ("concat_after_conv4", "concat_after_conv4_trans", "dot_after_conv4_sum", "dot_after_conv3_sum", "none")
ROI_LEVELS = ("p2", "p3", "p4", "p5")


def paper_loss(alpha: float = 5.0) -> list[dict]:
    """L_p of Eq. 1: CE on the 56x56 parsing logits, weighted alpha."""
    return [{"type": "ce", "pred": "parsing", "target": "label", "weight": alpha}]


def _convs(in_ch: int, ch: int, num: int, gn: bool) -> nn.ModuleList:
    """``num`` x (conv3x3 [+ GroupNorm] + ReLU), one module per conv (fusion may come between them)."""
    return nn.ModuleList(
        nn.Sequential(nn.Conv2d(in_ch if i == 0 else ch, ch, 3, padding=1, bias=not gn),
                      *([group_norm(ch)] if gn else []), nn.ReLU(inplace=True))
        for i in range(num))


class AttentionHead(nn.Module):
    """``forward(rois)`` -> (logit (R, 1, 2S, 2S), transposed-conv feature (R, ch, 2S, 2S)) (module docstring)."""

    def __init__(self, in_ch: int, ch: int = 256, num_convs: int = 4):
        super().__init__()
        self.convs = nn.Sequential(*_convs(in_ch, ch, num_convs, gn=False))
        self.up = nn.ConvTranspose2d(ch, ch, 2, 2)
        self.logit = nn.Conv2d(ch, 1, 1)
        kaiming_init(self.modules())

    def forward(self, rois: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        feature = F.relu(self.up(self.convs(rois)))
        return self.logit(feature), feature


class ParsingHead(nn.Module):
    """``forward(rois, attention, attention_feature)`` -> C logits at twice the RoI size, with the fusion of
    the module docstring (``attention``: the foreground probability at the RoI size)."""

    def __init__(self, in_ch: int, num_classes: int, ch: int = 256, num_convs: int = 4,
                 fusion: str = "concat_after_conv4", attention_ch: int = 256):
        super().__init__()
        if fusion not in FUSIONS:
            raise ConfigError(f"fusion must be one of {', '.join(FUSIONS)}, got {fusion!r}")
        self.fusion = fusion
        self.convs = _convs(in_ch, ch, num_convs, gn=True)
        extra = {"concat_after_conv4": 1, "concat_after_conv4_trans": attention_ch}.get(fusion, 0)
        self.up = nn.ConvTranspose2d(ch + extra, ch, 2, 2)
        self.logits = nn.Conv2d(ch, num_classes, 1)
        kaiming_init(self.modules())

    def forward(self, rois: torch.Tensor, attention: torch.Tensor | None = None,
                attention_feature: torch.Tensor | None = None) -> torch.Tensor:
        x = rois
        for i, conv in enumerate(self.convs):
            if self.fusion == "dot_after_conv3_sum" and i == len(self.convs) - 1:
                x = x + x * attention
            x = conv(x)
        if self.fusion == "dot_after_conv4_sum":
            x = x + x * attention
        elif self.fusion == "concat_after_conv4":
            x = torch.cat([x, attention], 1)
        elif self.fusion == "concat_after_conv4_trans":
            x = torch.cat([x, attention_feature], 1)
        return self.logits(F.relu(self.up(x)))


@MODELS.register("unified")
class UnifiedParser(TopDownParser):
    """See the module docstring. Config keys: ``backbone`` / ``fpn`` (default R-101, FPN 256 on P2-P6 with
    P6 max-pooled), ``rpn`` (``RPN`` keys; ``rpn_levels`` the levels it runs on, ``anchor_sizes`` one per level),
    ``box`` (``FastRCNN`` keys: ``box_head`` 2fc | 4conv1fc, ``roi_size``, ``fc_dim``, the sampler and test
    thresholds), the attention and parsing widths, ``fusion`` (Table 5 / Table 1 "w/o attention":
    ``none``), ``attention_weight`` (L_a's weight) and ``max_parsing_rois``."""

    def __init__(self, meta, loss: list[dict] | None = None, backbone: dict | None = None, fpn: dict | None = None,
                 rpn: dict | None = None, rpn_levels: list[str] = ("p2", "p3", "p4", "p5", "p6"),
                 anchor_sizes: list[float] = (32, 64, 128, 256, 512), box: dict | None = None,
                 roi_sampling_ratio: int = 2, roi_aligned: bool = False, attention_size: int = 14,
                 attention_ch: int = 256, attention_convs: int = 4, parsing_roi_size: int = 28, parsing_ch: int = 256,
                 parsing_convs: int = 4, fusion: str = "concat_after_conv4", attention_weight: float = 1.0,
                 max_parsing_rois: int | None = None, paste_pad: int = 1, mask_threshold: float = 0.5,
                 test_chunk: int = 16):
        super().__init__(meta, loss or paper_loss(), {**DEFAULT_BACKBONE, **(backbone or {})},
                         {**DEFAULT_FPN, **(fpn or {})})
        strides, ch = self.body.strides, self.body.out_channels
        missing = [lv for lv in [*rpn_levels, *ROI_LEVELS] if lv not in strides]
        if missing:
            raise ConfigError(f"FPN level(s) {', '.join(sorted(set(missing)))} not built "
                              f"(fpn.levels: {', '.join(strides)})")
        self.rpn_levels = list(rpn_levels)
        self.rpn = RPN(ch, [strides[lv] for lv in self.rpn_levels], anchor_sizes, **(rpn or {}))
        scales = [1.0 / strides[lv] for lv in ROI_LEVELS]
        self.roi_scales = scales
        self.box = FastRCNN(ch, scales, sampling_ratio=roi_sampling_ratio, roi_aligned=roi_aligned, **(box or {}))
        self.with_attention = fusion != "none"
        self.attention_pool = PooledFeatures(scales, attention_size, roi_sampling_ratio, roi_aligned)
        self.attention = AttentionHead(ch, attention_ch, attention_convs) if self.with_attention else None
        self.parsing_roi_size = parsing_roi_size
        self.roi_sampling_ratio, self.roi_aligned = roi_sampling_ratio, roi_aligned
        self.parsing = ParsingHead(ch, self.num_classes, parsing_ch, parsing_convs, fusion, attention_ch)
        if self.with_attention and 2 * attention_size != parsing_roi_size:
            raise ConfigError(f"the attention map ({2 * attention_size}x{2 * attention_size}) must match the parsing "
                              f"RoIs ({parsing_roi_size}x{parsing_roi_size}) it is fused with")
        self.attention_weight, self.max_parsing_rois = attention_weight, max_parsing_rois
        self.paste_pad, self.mask_threshold, self.test_chunk = paste_pad, mask_threshold, test_chunk

    # -- network ------------------------------------------------------------------------------------------
    def network(self, x: torch.Tensor) -> dict:
        """The dense part: FPN features and the RPN's raw outputs."""
        features = self.body(x)
        return {"features": features, "rpn": self.rpn([features[lv] for lv in self.rpn_levels])}

    def exported_outputs(self, outputs: dict) -> dict[str, torch.Tensor]:
        """The FPN levels, then per RPN level ``rpn_objectness_<level>`` and ``rpn_deltas_<level>`` (the
        anchors follow from the sizes: left out)."""
        rpn, named = outputs["rpn"], dict(outputs["features"])
        for lv, objectness, deltas in zip(self.rpn_levels, rpn["objectness"], rpn["deltas"]):
            named.update({f"rpn_objectness_{lv}": objectness, f"rpn_deltas_{lv}": deltas})
        return named

    def detector_contract(self) -> str:
        rpn = self.rpn
        return (f"Per RPN level L ({', '.join(self.rpn_levels)}): rpn_objectness_L (B, h w A) objectness logits and "
                "rpn_deltas_L (B, h w A, 4) box deltas (dx, dy, dw, dh; weights 1), cells row-major, the A = "
                f"{len(rpn.aspect_ratios)} anchors of a cell together: height / width {list(rpn.aspect_ratios)}, "
                f"area size^2 with size {list(rpn.anchor_sizes)} per level, centred on the cell's corner "
                "(j stride, i stride).")

    def _roi_levels(self, features: dict) -> list[torch.Tensor]:
        return [features[lv] for lv in ROI_LEVELS]

    def parse_rois(self, features: dict, boxes: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        """The attention and parsing branches on per-image boxes: ``parsing`` (R, C, 2S, 2S) logits and, with
        attention, ``attention`` (R, 1, S, S) logits."""
        levels = self._roi_levels(features)
        out, attention, attention_feature = {}, None, None
        if self.with_attention:
            out["attention"], attention_feature = self.attention(self.attention_pool(levels, boxes))
            attention = out["attention"].sigmoid()
        rois = max_roi_align(levels, rois_of(boxes), self.parsing_roi_size, self.roi_scales,
                             self.roi_sampling_ratio, self.roi_aligned)
        out["parsing"] = self.parsing(rois, attention, attention_feature)
        return out

    # -- training ------------------------------------------------------------------------------------------
    def losses(self, outputs: dict, batch: dict) -> dict[str, torch.Tensor]:
        gts = ground_truth(batch, batch["image"].device)
        losses = self.rpn.losses(outputs["rpn"], [g.boxes for g in gts])
        proposals = self.rpn.proposals(outputs["rpn"], batch["image_sizes"])
        sampled = self.box.sample(proposals, gts)
        levels = self._roi_levels(outputs["features"])
        losses.update(self.box.losses(levels, sampled, gts))
        positives = [self._capped(*s.positives()) for s in sampled]
        if sum(len(b) for b, _ in positives) == 0:
            return {**losses, **self._no_roi_losses()}
        head = self.parse_rois(outputs["features"], [b for b, _ in positives])
        size = head["parsing"].shape[-1]
        label = torch.cat([person_part_targets(gt, b, p, size) for gt, (b, p) in zip(gts, positives)])
        losses.update(self.criterion(head, {"label": label}))
        if self.with_attention and self.attention_weight:
            mask = torch.cat([person_mask_targets(gt, b, p, head["attention"].shape[-1])
                              for gt, (b, p) in zip(gts, positives)])
            losses["attention"] = self.attention_weight * self.attention_loss(head["attention"][:, 0], mask)
        return losses

    def _capped(self, boxes: torch.Tensor, person: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """At most ``max_parsing_rois`` of an image's foreground RoIs, drawn at random."""
        if self.max_parsing_rois is None or len(boxes) <= self.max_parsing_rois:
            return boxes, person
        pick = torch.randperm(len(boxes))[:self.max_parsing_rois].to(boxes.device)
        return boxes[pick], person[pick]

    @staticmethod
    def attention_loss(logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """BCE with logits over the valid cells (ignore 255)."""
        valid = mask != 255
        if not valid.any():
            return logits.sum() * 0
        return F.binary_cross_entropy_with_logits(logits[valid].float(), mask[valid].float())

    def _no_roi_losses(self) -> dict[str, torch.Tensor]:
        """Zero branch losses, one per term, when the batch has no foreground RoI."""
        zero = zero_loss(self.parsing) + (zero_loss(self.attention) if self.with_attention else 0)
        names = [s["name"] for s in self.criterion.specs if s["weight"]]
        return dict.fromkeys(names + (["attention"] if self.with_attention and self.attention_weight else []), zero)

    # -- inference (TopDownParser's protocol) -------------------------------------------------------------------
    def detect(self, outputs: dict, image_sizes) -> list[Detections]:
        proposals = self.rpn.proposals(outputs["rpn"], image_sizes)
        return self.box.detect(self._roi_levels(outputs["features"]), proposals, image_sizes)

    def roi_outputs(self, outputs: dict, index: int, boxes: torch.Tensor
                    ) -> tuple[torch.Tensor, None, torch.Tensor | None]:
        """The branches on image ``index``'s boxes, ``test_chunk`` at a time: the parsing softmax, no quality,
        and the foreground probability (None without attention)."""
        heads = self.heads_on(outputs, index, boxes)
        if not heads:
            size = 2 * self.parsing_roi_size
            return (boxes.new_zeros((0, self.num_classes, size, size)), None,
                    boxes.new_zeros((0, 1, size // 2, size // 2)) if self.with_attention else None)
        probs = torch.cat([h["parsing"].float().softmax(1) for h in heads])
        foreground = torch.cat([h["attention"].float().sigmoid() for h in heads]) if self.with_attention else None
        return probs, None, foreground

    # -- cost ------------------------------------------------------------------------------------------------
    def roi_head_macs(self) -> int:
        """Multiply-adds of the attention and parsing branches for one detected person (RoIAlign left out)."""
        return count_macs(_Branches(self), (1, self.body.out_channels, self.parsing_roi_size, self.parsing_roi_size))

    def box_head_macs(self) -> int:
        """Multiply-adds of the box head for one proposal (it runs on every proposal: ``rpn.post_nms_top_n``)."""
        size = self.box.pool.size
        return count_macs(self.box.head, (1, self.body.out_channels, size, size))


class _Branches(nn.Module):
    """The attention and parsing branches of a model as one module on the parsing RoIs (for counting; the
    attention RoIs are those pooled to its size)."""

    def __init__(self, model: UnifiedParser):
        super().__init__()
        self.attention, self.parsing = model.attention, model.parsing
        self.attention_size = model.attention_pool.size

    def forward(self, rois: torch.Tensor) -> torch.Tensor:
        if self.attention is None:
            return self.parsing(rois)
        logit, feature = self.attention(F.adaptive_avg_pool2d(rois, self.attention_size))
        return self.parsing(rois, logit.sigmoid(), feature)
