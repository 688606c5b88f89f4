"""Pluggable evaluators: each scores model outputs against reader samples (see :mod:`.base`).

Registered names: ``semantic``, ``low_res``, ``ipr``, ``levels`` (:mod:`.semantic`), ``instance``
(:mod:`.instance`), ``box`` (:mod:`.box`) and ``challenge_folders`` (:mod:`.folders`).
"""

from .base import (
    EVALUATORS,
    EvaluationResult,
    Evaluator,
    best_metric_value,
    build_evaluator,
    build_evaluators,
    check_best_metric,
)
from .box import BoxAPResult, BoxEvaluator, box_ap
from .folders import ChallengeFoldersEvaluator, FoldersWritten
from .ground_truth import (
    ground_truth_instances,
    ground_truth_parts,
    ground_truth_persons,
    human_masks,
    parts_of_people,
)
from .instance import InstanceEvaluator, InstanceScores, challenge_pieces, is_instance_folder
from .semantic import (
    IPREvaluator,
    IPRResult,
    LevelsEvaluator,
    LevelsResult,
    LowResEvaluator,
    SemanticEvaluator,
    SemanticReport,
)

__all__ = [
    "EVALUATORS",
    "BoxAPResult",
    "BoxEvaluator",
    "ChallengeFoldersEvaluator",
    "EvaluationResult",
    "Evaluator",
    "FoldersWritten",
    "IPREvaluator",
    "IPRResult",
    "InstanceEvaluator",
    "InstanceScores",
    "LevelsEvaluator",
    "LevelsResult",
    "LowResEvaluator",
    "SemanticEvaluator",
    "SemanticReport",
    "best_metric_value",
    "box_ap",
    "build_evaluator",
    "build_evaluators",
    "challenge_pieces",
    "check_best_metric",
    "ground_truth_instances",
    "ground_truth_parts",
    "ground_truth_persons",
    "human_masks",
    "is_instance_folder",
    "parts_of_people",
]
