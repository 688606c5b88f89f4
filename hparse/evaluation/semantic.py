"""Label-map evaluators: ``semantic`` (mIoU etc.), ``low_res`` (MMAN's 1/16 mIoU), ``ipr`` (isolated
pixel rate) and ``levels`` (a hierarchical model's upper levels against the mapped ground truth).

All read ``outputs["sem_seg"]`` (HxW at the original size) except ``levels`` (``outputs["extras"]``).
A ``sem_seg`` of None is a missing prediction: it counts as all background (0) and is reported, so a
missing image lowers the score instead of vanishing. ``label_map`` (a 256-entry LUT) first maps
predictions into the dataset's label set (cross-dataset evaluation).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import ConfigError
from ..metrics.semantic import CONVENTIONS, ConfusionMatrix, IPRMeter, SemanticScores, low_resolution, semantic_scores
from .base import EVALUATORS, Evaluator


def check_convention(convention: str) -> str:
    if convention not in CONVENTIONS:
        raise ConfigError(f"convention must be one of {', '.join(CONVENTIONS)}, got {convention!r}")
    return convention


@dataclass
class SemanticReport:
    """Scores of one confusion matrix, the matrix itself and the images missing a prediction."""

    scores: SemanticScores
    confusion: ConfusionMatrix
    num_images: int
    missing: list[str] = field(default_factory=list)
    title: str = ""

    def summary(self) -> dict[str, float]:
        """pixel_acc, mean_acc, miou, fg_acc, mean_precision, mean_recall, f1 (fractions)."""
        return self.scores.summary()

    def to_dict(self) -> dict:
        return {**self.scores.to_dict(), "num_images": self.num_images, "missing": self.missing,
                "confusion": self.confusion.matrix.tolist()}

    def format_table(self) -> str:
        table = self.scores.format_table()
        return f"{self.title}\n{table}" if self.title else table


class LabelMapEvaluator(Evaluator):
    """Shared: the (mapped) prediction of an image, all background when it is missing."""

    output_keys = ("sem_seg",)

    def __init__(self, meta, label_map=None):
        if label_map is not None:
            label_map = np.asarray(label_map)
            if label_map.shape != (256,) or label_map.dtype.kind not in "iu":
                raise ConfigError(f"{self.name}: label_map must be a 256-entry integer lookup table, got "
                                  f"{label_map.dtype} {label_map.shape}")
        self.label_map = label_map
        super().__init__(meta)

    def reset(self) -> None:
        super().reset()
        self.missing: list[str] = []

    def prediction(self, sample: dict, output: dict) -> np.ndarray:
        if "sem_seg" not in output:
            raise ConfigError(f"{self.name} evaluator needs outputs['sem_seg'] (image {sample.get('id')!r} has "
                              f"{', '.join(output) or 'nothing'})")
        pred = output["sem_seg"]
        if pred is None:
            self.missing.append(sample.get("id"))
            return np.zeros(sample["label"].shape, np.uint8)
        pred = np.asarray(pred)
        return self.label_map[pred] if self.label_map is not None else pred


class _ConfusionEvaluator(LabelMapEvaluator):
    summary_keys = SemanticScores.SUMMARY

    def __init__(self, meta, convention: str = "ce2p", label_map=None):
        self.convention = check_convention(convention)
        super().__init__(meta, label_map)

    def reset(self) -> None:
        super().reset()
        self.confusion = ConfusionMatrix(self.meta.num_classes, self.meta.ignore_index)

    def result(self) -> SemanticReport:
        scores = semantic_scores(self.confusion.matrix, self.convention, self.meta.classes)
        return SemanticReport(scores, self.confusion, self.num_images, self.missing, self.title())

    def title(self) -> str:
        return ""


@EVALUATORS.register("semantic")
class SemanticEvaluator(_ConfusionEvaluator):
    """Confusion matrix at the original resolution -> :func:`~hparse.metrics.semantic.semantic_scores`."""

    def process_image(self, sample: dict, output: dict) -> None:
        self.confusion.update(self.prediction(sample, output), sample["label"])


LOW_RES_MODES = ("nearest", "pooled", "generator")


@EVALUATORS.register("low_res")
class LowResEvaluator(_ConfusionEvaluator):
    """MMAN's low-resolution mIoU (Table 4): the ground truth nearest-downsampled by ``factor``
    (:func:`~hparse.metrics.semantic.low_resolution`, MMAN's 16x16 label thumbnails) against a prediction at
    the same resolution, read one of the ways the paper allows (``mode``):

    - ``nearest``: the full-resolution label map nearest-downsampled the same way (tracks the full-resolution
      mIoU closely);
    - ``pooled``: the class probabilities average-pooled over each ``factor`` x ``factor`` cell, then the argmax;
    - ``generator``: the generator's own low-resolution output (MMAN's ``parsing_low``, the map the macro
      discriminator judges; the model's ``low_res`` extra), read at the cells' centres. The likeliest reading of
      the paper, whose low-resolution gains are 3-6x its full-resolution ones.
    """

    def __init__(self, meta, convention: str = "ce2p", label_map=None, factor: int = 16, mode: str = "nearest"):
        if mode not in LOW_RES_MODES:
            raise ConfigError(f"low_res evaluator: mode must be one of {', '.join(LOW_RES_MODES)}, not {mode!r}")
        self.factor, self.mode = int(factor), mode
        self.output_keys = {"nearest": ("sem_seg",), "pooled": ("probs",), "generator": ("extras",)}[mode]
        super().__init__(meta, convention, label_map)

    def process_image(self, sample: dict, output: dict) -> None:
        self.confusion.update(self.low_res_prediction(sample, output), low_resolution(sample["label"], self.factor))

    def low_res_prediction(self, sample: dict, output: dict) -> np.ndarray:
        if self.mode == "nearest":
            return low_resolution(self.prediction(sample, output), self.factor)
        if self.mode == "pooled":
            if output.get("probs") is None:
                raise ConfigError("low_res evaluator (pooled): the outputs hold no class probabilities")
            probs = torch.from_numpy(np.asarray(output["probs"], np.float32))[None]
            pred = F.avg_pool2d(probs, self.factor).argmax(1)[0].numpy().astype(np.uint8)
        else:
            low = (output.get("extras") or {}).get("low_res")
            if low is None:
                raise ConfigError("low_res evaluator (generator): the model gives no low-resolution output (the "
                                  "'low_res' extra); use mode nearest or pooled")
            pred = low_resolution(np.asarray(low), self.factor)
        return self.label_map[pred] if self.label_map is not None else pred

    def title(self) -> str:
        return f"low-resolution (1/{self.factor}, {self.mode})"


@dataclass
class IPRResult:
    """Isolated pixel rate of the predictions and, as a floor, of the ground truth."""

    pred: IPRMeter
    gt: IPRMeter
    num_images: int

    def summary(self) -> dict[str, float]:
        """ipr (predictions), gt_ipr (ground truth), fractions."""
        return {"ipr": self.pred.value, "gt_ipr": self.gt.value}

    def to_dict(self) -> dict:
        return {"pred": self.pred.to_dict(), "gt": self.gt.to_dict(), "num_images": self.num_images}

    def format_table(self) -> str:
        def pct(v: float) -> str:
            return "nan" if math.isnan(v) else f"{100 * v:.3f} %"

        k = self.pred.kwargs["k"]
        return (f"isolated pixel rate (IPR, 8-neighbour, k={k}): {pct(self.pred.value)} "
                f"(ground truth: {pct(self.gt.value)})")


@EVALUATORS.register("ipr")
class IPREvaluator(LabelMapEvaluator):
    """Isolated pixel rate (MMAN Table 4) of the predictions, and of the ground truth (ignore excluded)."""

    summary_keys = ("ipr", "gt_ipr")

    def __init__(self, meta, label_map=None, k: int = 1):
        self.k = int(k)
        super().__init__(meta, label_map)

    def reset(self) -> None:
        super().reset()
        self.pred, self.gt = IPRMeter(k=self.k), IPRMeter(k=self.k, ignore=self.meta.ignore_index)

    def process_image(self, sample: dict, output: dict) -> None:
        self.pred.update(self.prediction(sample, output))
        self.gt.update(sample["label"])

    def result(self) -> IPRResult:
        return IPRResult(self.pred, self.gt, self.num_images)


LEVELS = (2, 3)


@dataclass
class LevelsResult:
    """Scores of each hierarchy level (2: background / upper / lower body, 3: background / person)."""

    levels: dict[int, SemanticScores]
    num_images: int

    def summary(self) -> dict[str, float]:
        """level2_miou, level3_miou, ... (every semantic summary key, prefixed by its level)."""
        return {f"level{lvl}_{k}": v for lvl, s in self.levels.items() for k, v in s.summary().items()}

    def to_dict(self) -> dict:
        return {f"level{lvl}": s.to_dict() for lvl, s in self.levels.items()} | {"num_images": self.num_images}

    def format_table(self) -> str:
        return "\n\n".join(f"level {lvl}\n{s.format_table()}" for lvl, s in self.levels.items())


@EVALUATORS.register("levels")
class LevelsEvaluator(Evaluator):
    """A hierarchical model's (CNIF) levels 2 and 3: ``outputs["extras"]["level2" / "level3"]`` label maps
    against the ground truth mapped through the label set's hierarchy (``meta.hierarchy_lut``)."""

    output_keys = ("extras",)
    summary_keys = tuple(f"level{lvl}_{k}" for lvl in LEVELS for k in SemanticScores.SUMMARY)

    def __init__(self, meta, convention: str = "ce2p"):
        self.convention = check_convention(convention)
        try:
            self.luts = {lvl: meta.hierarchy_lut(lvl) for lvl in LEVELS}
        except ValueError as e:
            raise ConfigError(f"levels evaluator: {e}") from None
        super().__init__(meta)

    def reset(self) -> None:
        super().reset()
        self.confusion = {lvl: ConfusionMatrix(len(self.meta.level_classes(lvl)), self.meta.ignore_index)
                          for lvl in LEVELS}

    def process_image(self, sample: dict, output: dict) -> None:
        extras = output.get("extras") or {}
        for lvl in LEVELS:
            if f"level{lvl}" not in extras:
                raise ConfigError(f"levels evaluator: the model has no hierarchy levels (no 'level{lvl}' in the "
                                  "outputs' extras); it needs a hierarchical model such as CNIF")
            self.confusion[lvl].update(np.asarray(extras[f"level{lvl}"]), self.luts[lvl][sample["label"]])

    def result(self) -> LevelsResult:
        return LevelsResult({lvl: semantic_scores(cm.matrix, self.convention, self.meta.level_classes(lvl))
                             for lvl, cm in self.confusion.items()}, self.num_images)
