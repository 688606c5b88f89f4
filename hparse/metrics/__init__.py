"""Evaluation metrics."""

from hparse.metrics.instance import (
    COCO_IOU_THRESHOLDS,
    PARSING_THRESHOLDS,
    MaskAPResult,
    PartAPResult,
    PersonAPResult,
    mask_ap,
    part_ap,
    person_ap,
    voc_ap,
)
from hparse.metrics.semantic import (
    CONVENTIONS,
    ConfusionMatrix,
    IPRMeter,
    SemanticScores,
    isolated_pixel_rate,
    low_resolution,
    semantic_scores,
)

__all__ = [
    "COCO_IOU_THRESHOLDS",
    "CONVENTIONS",
    "ConfusionMatrix",
    "IPRMeter",
    "MaskAPResult",
    "PARSING_THRESHOLDS",
    "PartAPResult",
    "PersonAPResult",
    "SemanticScores",
    "isolated_pixel_rate",
    "low_resolution",
    "mask_ap",
    "part_ap",
    "person_ap",
    "semantic_scores",
    "voc_ap",
]
