"""The detection core of the top-down instance parsers (AIParsing, the unified framework): detection batches
(:mod:`.inputs`), backbone + FPN and the model frame (:mod:`.topdown`), FCOS (:mod:`.fcos`), IoU matching and
sampling (:mod:`.matcher`), RoI targets and pasting (:mod:`.rois`)."""

from .fcos import FCOS, Detections, FCOSHead, FCOSOutputs, assign_targets, centerness_targets, default_size_ranges
from .inputs import GroundTruth, ground_truth, image_sizes, zero_padding
from .matcher import Matcher, subsample_labels
from .rois import (
    edge_targets,
    expand_boxes,
    paste_parsings,
    person_part_targets,
    roi_miou,
    rois_of,
    sample_positive_rois,
)
from .topdown import BackboneFPN, TopDownParser, zero_loss

__all__ = [
    "FCOS", "BackboneFPN", "Detections", "FCOSHead", "FCOSOutputs", "GroundTruth", "Matcher", "TopDownParser",
    "assign_targets", "centerness_targets", "default_size_ranges", "edge_targets", "expand_boxes", "ground_truth",
    "image_sizes", "paste_parsings", "person_part_targets", "roi_miou", "rois_of", "sample_positive_rois",
    "subsample_labels", "zero_loss", "zero_padding",
]
