"""The detection core of the top-down instance parsers (AIParsing, the unified framework): detection batches
(:mod:`.inputs`), backbone + FPN and the model frame (:mod:`.topdown`), FCOS (:mod:`.fcos`), the RPN
(:mod:`.rpn`) and Fast R-CNN box branch (:mod:`.fast_rcnn`), IoU matching and sampling (:mod:`.matcher`), RoI
targets and pasting (:mod:`.rois`)."""

from .fast_rcnn import FastRCNN, SampledRoIs
from .fcos import FCOS, Detections, FCOSHead, FCOSOutputs, assign_targets, centerness_targets, default_size_ranges
from .inputs import GroundTruth, ground_truth, image_sizes, zero_padding
from .matcher import Matcher, subsample_labels
from .rois import (
    edge_targets,
    expand_boxes,
    paste_masks,
    paste_parsings,
    person_mask_targets,
    person_part_targets,
    roi_miou,
    rois_of,
    sample_positive_rois,
)
from .rpn import RPN, level_anchors
from .topdown import BackboneFPN, TopDownParser, zero_loss

__all__ = [
    "FCOS", "RPN", "BackboneFPN", "Detections", "FCOSHead", "FCOSOutputs", "FastRCNN", "GroundTruth", "Matcher",
    "SampledRoIs", "TopDownParser", "assign_targets", "centerness_targets", "default_size_ranges", "edge_targets",
    "expand_boxes", "ground_truth", "image_sizes", "level_anchors", "paste_masks", "paste_parsings",
    "person_mask_targets", "person_part_targets", "roi_miou", "rois_of", "sample_positive_rois",
    "subsample_labels", "zero_loss", "zero_padding",
]
