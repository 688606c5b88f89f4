"""The frame of detect-then-parse ("one-stage top-down") models: a backbone with an FPN, padded detection
batches in, the model contract out (named losses in training, one ``PersonInstances`` per image in eval).

:class:`TopDownParser` normalises the padded batch (``batch["image_sizes"]`` marks each image; the padding
becomes the mean pixel, 0 after normalisation) and hands the raw outputs of :meth:`network` to
:meth:`losses` or :meth:`inference` with the image sizes in the batch. Subclasses (AIParsing, the unified
framework) build their detector and RoI heads on ``self.body``. ``collate`` names the data collate its
training batches need (``hparse.data.detection``: images padded to a multiple of ``size_divisibility``).

Inference is three steps, which the instance predictor's test-time augmentation (``InstancePredictor``) also
calls, one pass at a time, to average the RoI probabilities of several inputs on the base pass's boxes:

- :meth:`~TopDownParser.detect` ``(outputs, image_sizes) -> [Detections]`` (subclass);
- :meth:`~TopDownParser.roi_outputs` ``(outputs, index, boxes) -> (probs (R, C, h, w), quality (R,) or None,
  foreground (R, 1, h', w') or None)``: the class probabilities over image ``index``'s boxes (input pixels), the
  raw predicted quality and the foreground probability of a model that predicts the person's mask (subclass);
- :meth:`~TopDownParser.people` ``(size, boxes, det_scores, roi_outputs) -> PersonInstances``: per chunk of
  ``test_chunk`` boxes, ``roi_outputs(rois)`` gives their ``(probs, quality, foreground)``, scored
  (:meth:`~TopDownParser.score`) and pasted into the image before the next chunk (the foreground as the
  people's ``masks``, else their masks are their parsings' foreground).

Cost: :meth:`network` is the dense part (backbone, FPN, detection head), so ``count_macs(model)`` counts
it at the given input size; the per-RoI heads are counted by the subclass (AIParsing: ``roi_head_macs``).

Export (``hparse.engine.export``): the dense part is what ONNX / TorchScript get. :meth:`exported_outputs`
(subclass) names its tensors -- the FPN levels, then the detector head's raw outputs per level, without what
follows from the sizes alone (points, anchors) -- and :meth:`export_contract` says what they hold.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from ...structures import PersonInstances
from ..backbones import build_backbone
from ..fpn import FPN
from ..meta_arch import InstanceParsingModel
from .fcos import Detections
from .inputs import image_sizes, zero_padding
from .rois import paste_masks, paste_parsings


class BackboneFPN(nn.Module):
    """``build_backbone(**backbone)`` + :class:`~hparse.models.fpn.FPN` on its features; ``forward`` returns
    the FPN levels ``{"p3": ..., ...}``; ``strides`` / ``out_channels`` describe them."""

    def __init__(self, backbone: dict, out_channels: int = 256, levels: Sequence[str] = ("p3", "p4", "p5", "p6", "p7"),
                 extra_from: str = "p5", p6_mode: str = "conv", norm: str | None = None):
        super().__init__()
        backbone = dict(backbone)
        self.backbone = build_backbone(backbone.pop("name"), **backbone)
        self.fpn = FPN(self.backbone.out_channels, out_channels, levels, extra_from, p6_mode, norm)
        self.strides, self.out_channels = dict(self.fpn.strides), out_channels

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.fpn(self.backbone(x))


class TopDownParser(InstanceParsingModel):
    """Base class; see the module docstring. Subclasses implement ``network``, ``losses``, ``detect`` and
    ``roi_outputs``."""

    collate = "detection"       # hparse.data.detection.build_collate(collate, size_divisibility)
    size_divisibility = 32
    paste_pad = 1               # RoI cells of zero padding when pasting (Mask R-CNN)
    mask_threshold = 0.5        # pasted foreground probability of a person's mask
    test_chunk = 16             # RoIs per head run and per paste at inference

    def __init__(self, meta, loss: list[dict] | None, backbone: dict, fpn: dict):
        super().__init__(meta, loss)
        self.body = BackboneFPN(backbone, **fpn)

    def prepare(self, batch: dict) -> tuple[torch.Tensor, dict]:
        """The padding of each image zeroed after normalisation; ``image_sizes`` in the batch."""
        sizes = image_sizes(batch)
        return zero_padding(self.normalize(batch["image"]), sizes), {**batch, "image_sizes": sizes}

    # -- inference -----------------------------------------------------------------------------------------
    def detect(self, outputs: dict, image_sizes: Sequence[tuple[int, int]]) -> list[Detections]:
        """The people boxes of every image of the batch, in input pixels."""
        raise NotImplementedError

    def roi_outputs(self, outputs: dict, index: int, boxes: torch.Tensor) -> tuple:
        """``(probs (R, C, h, w) float, quality (R,) or None, foreground (R, 1, h', w') or None)`` of image
        ``index`` over ``boxes`` (R, 4)."""
        raise NotImplementedError

    def heads_on(self, outputs: dict, index: int, boxes: torch.Tensor) -> list[dict]:
        """The subclass's ``parse_rois`` on image ``index``'s boxes, ``test_chunk`` boxes at a time."""
        one = {k: v[index:index + 1] for k, v in outputs["features"].items()}
        return [self.parse_rois(one, [boxes[i:i + self.test_chunk]]) for i in range(0, len(boxes), self.test_chunk)]

    # Input pixels by which the RoI features sample right of / below a box, for instance TTA's box mapping. 0:
    # strided ResNet convs centre feature cell j on pixel j x stride, which is where legacy RoIAlign reads it.
    # (Half a cell, the naive reading of legacy RoIAlign, measured worse: flip TTA of aiparsing_cpu_ccpmulti on
    # 12 ccp-multi val images gave mIoU 39.6 with it, 45.1 with 0, 43.9 without flip.)
    roi_offset = 0.0

    @torch.no_grad()
    def inference(self, outputs: dict, batch: dict) -> list[PersonInstances]:
        sizes = batch["image_sizes"]
        return [self.people(size, det.boxes, det.scores,
                            lambda rois, i=i, boxes=det.boxes: self.roi_outputs(outputs, i, boxes[rois]))
                for i, (det, size) in enumerate(zip(self.detect(outputs, sizes), sizes))]

    def people(self, size: tuple[int, int], boxes: torch.Tensor, det_scores: torch.Tensor,
               roi_outputs) -> PersonInstances:
        """One image's people in input pixels: ``roi_outputs(rois)`` (a slice of the boxes -> their ``(probs,
        quality, foreground)``) is called ``test_chunk`` boxes at a time, each chunk scored (:meth:`score`) and
        pasted into ``size`` before the next, so only pasted labels (and masks) accumulate."""
        if not len(boxes):
            return PersonInstances(image_size=size, parsings=np.zeros((0, *size), np.uint8),
                                   quality=np.zeros(0, np.float32))
        scores, quality, parsings, masks = [], [], [], []
        for start in range(0, len(boxes), self.test_chunk):
            rois = slice(start, start + self.test_chunk)
            probs, q, foreground = roi_outputs(rois)
            s, q = self.score(det_scores[rois], q)
            scores.append(s)
            quality.append(q)
            parsings.append(paste_parsings(probs, boxes[rois], size, self.paste_pad))
            if foreground is not None:
                masks.append(paste_masks(foreground, boxes[rois], size, self.paste_pad, self.mask_threshold))
        return PersonInstances(image_size=size, boxes=boxes.float().cpu().numpy(),
                               scores=torch.cat(scores).double().cpu().numpy(),
                               parsings=torch.cat(parsings).cpu().numpy(),
                               quality=torch.cat(quality).float().cpu().numpy(),
                               masks=torch.cat(masks).cpu().numpy() if masks else None)

    # -- export --------------------------------------------------------------------------------------------
    def exported_outputs(self, outputs: dict) -> dict[str, torch.Tensor]:
        """The outputs of :meth:`network` as named tensors, in order: the FPN levels (``p3``, ...), then the
        detector head's raw outputs per level (``<output>_<level>``); nothing derived from the sizes alone."""
        raise NotImplementedError

    def detector_contract(self) -> str:
        """What the detector's tensors of :meth:`exported_outputs` hold (subclass; for the export's metadata)."""
        return ""

    def export_contract(self) -> str:
        """What an exported dense network's outputs hold, and what it leaves to hparse (the export's metadata)."""
        strides = self.body.strides
        return (f"dense network only (backbone, FPN, detection head). FPN levels {', '.join(strides)}: "
                f"(B, {self.body.out_channels}, h, w), strides {', '.join(str(s) for s in strides.values())}. "
                f"{self.detector_contract()} Not exported: the detections (decoding, NMS), the RoI heads and the "
                "paste; decoding these outputs into people is hparse's (PyTorch).")

    @staticmethod
    def score(det_scores: torch.Tensor, quality: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """``(score, quality)``: sqrt(det x clamp(predicted quality, 0, 1)) and the clamped quality (without a
        quality: the detection score, quality 1)."""
        if quality is None:
            return det_scores, torch.ones_like(det_scores)
        quality = quality.float().clamp(0, 1)
        return torch.sqrt(det_scores.float() * quality), quality


def zero_loss(module: nn.Module) -> torch.Tensor:
    """A zero that reaches every parameter of ``module`` (a loss with nothing to score keeps the graph whole,
    as DistributedDataParallel wants)."""
    return sum(p.sum() * 0 for p in module.parameters())
