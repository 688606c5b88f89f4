"""Evaluation metrics."""

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
    "CONVENTIONS",
    "ConfusionMatrix",
    "IPRMeter",
    "SemanticScores",
    "isolated_pixel_rate",
    "low_resolution",
    "semantic_scores",
]
